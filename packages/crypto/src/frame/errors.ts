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
  | 'TOO_OLD'
  /** A live frame of an epoch the owner has rotated away from (beyond the grace). */
  | 'STALE_EPOCH'
  /** A live frame from a sender the latest owner statement no longer lists as writer. */
  | 'FORMER_MEMBER';

export class FrameError extends Error {
  readonly code: FrameErrorCode;

  constructor(code: FrameErrorCode, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}
