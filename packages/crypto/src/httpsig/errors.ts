/**
 * Why a request signature was refused. Codes are stable API: the daemon
 * returns them in `{"error":{"code"}}` and counts them in metrics.
 */
export type SignatureErrorCode =
  | 'SIGNATURE_MISSING'
  | 'SIGNATURE_MALFORMED'
  | 'LABEL_MISMATCH'
  | 'BAD_LABEL'
  | 'WRONG_AUTHORITY'
  | 'COMPONENT_MISSING'
  | 'PARAMETER_MISSING'
  | 'BAD_ALG'
  | 'BAD_TAG'
  | 'CREATED_IN_FUTURE'
  | 'SIGNATURE_TOO_OLD'
  | 'EXPIRED'
  | 'EXPIRES_TOO_FAR'
  | 'NONCE_INVALID'
  | 'UNKNOWN_KEY'
  | 'REVOKED_KEY'
  | 'EXPIRED_KEY'
  | 'BAD_SIGNATURE'
  | 'DIGEST_MISSING'
  | 'DIGEST_MISMATCH'
  | 'REPLAYED'
  | 'SIGNED_BEFORE_START';

export class SignatureError extends Error {
  readonly code: SignatureErrorCode;

  constructor(code: SignatureErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}
