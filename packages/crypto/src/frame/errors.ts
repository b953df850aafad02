/** Why a received frame was rejected. Codes are stable API (SDK events). */
export type FrameErrorCode =
  | 'MALFORMED'
  | 'WRONG_ROOM'
  | 'POLICY_MISMATCH'
  | 'BAD_SIGNATURE'
  | 'NOT_A_MEMBER'
  | 'UNKNOWN_EPOCH'
  | 'DECRYPT_FAILED'
  | 'REPLAYED'
  | 'TOO_OLD';

export class FrameError extends Error {
  readonly code: FrameErrorCode;

  constructor(code: FrameErrorCode, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}
