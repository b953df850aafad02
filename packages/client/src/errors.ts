/**
 * Every error the SDK throws for a reason it knows is a `SealbusError` with
 * a stable `code` (below); subclasses carry what is particular to them:
 * `ControlError` (a control-plane answer: `status`, the server's `code`),
 * `PublishError` (a frame not stored), `TrustError` (the control plane
 * served something that does not hold up), `InsecureTransportError`.
 * Catch `SealbusError` and switch on `code`.
 */
export class SealbusError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/**
 * Codes the SDK itself raises (besides those of the subclasses):
 * `BAD_INPUT` a call given what it cannot take (a payload that is neither
 * bytes nor a string, a missing policy, a non-identity); `PAYLOAD_TOO_LARGE`
 * a payload over what one frame carries; `NOT_A_WRITER` a reader's publish,
 * refused before anything is sent; `UNSUPPORTED` a request in a persisted
 * room; `TIMEOUT` a request nobody answered in time; `NO_RESPONDERS` a
 * request nobody was listening for; `CLOSED` a request cut short by
 * `close()`.
 */
export type SealbusErrorCode =
  | 'BAD_INPUT'
  | 'PAYLOAD_TOO_LARGE'
  | 'NOT_A_WRITER'
  | 'UNSUPPORTED'
  | 'TIMEOUT'
  | 'NO_RESPONDERS'
  | 'CLOSED'
  /** A blob's ciphertext did not verify (tampered, truncated, reordered, wrong ref); no plaintext of it was returned. */
  | 'BLOB_CORRUPT'
  /** A blob ref out of bounds (`parseBlobRef`). */
  | 'BAD_BLOB_REF';

/** One failed attempt against one control URL. */
export interface ControlAttempt {
  url: string;
  /** HTTP status, or 0 when no answer came back. */
  status: number;
  /** The server's error code when it answered (`STORE_UNAVAILABLE`, `AUDIT_UNAVAILABLE`, ...). */
  code?: string;
  error: string;
}

/**
 * An error from the control plane. For an answer from the server, `status`
 * and `code` are the server's (`{"error":{"code"}}`); when no URL answered,
 * `status` is 0 or 503 and `code` is `UNAVAILABLE`, with every attempt listed.
 */
export class ControlError extends SealbusError {
  readonly status: number;
  readonly attempts: readonly ControlAttempt[];
  /**
   * `UNAVAILABLE` because every URL answered 503 with one code: that code
   * (`STORE_UNAVAILABLE`: no store quorum; `AUDIT_UNAVAILABLE`: the audit
   * log cannot be written, nothing was changed). Otherwise undefined.
   */
  readonly serverCode: string | undefined;

  constructor(status: number, code: string, message: string, attempts: ControlAttempt[] = []) {
    super(code, message);
    this.status = status;
    this.attempts = attempts;
    const codes = new Set(attempts.map((a) => (a.status === 503 ? a.code : undefined)));
    const [only] = codes;
    this.serverCode = attempts.length > 0 && codes.size === 1 ? only : undefined;
  }
}

/**
 * Why a persisted publish did not store the frame: codes from the daemon's
 * append service, or found locally. `DUPLICATE`: the first attempt was
 * reported as a duplicate (its id was taken), so the frame was not stored.
 * `ROOM_FULL`: the room reached `--room-max-bytes`; history is immutable,
 * so nothing new is accepted. `TIMEOUT`: no answer within `publishTimeoutMs`.
 */
export type PublishErrorCode =
  | 'NOT_WRITER'
  /** A reader's publish, refused by the SDK before anything is sent. */
  | 'NOT_A_WRITER'
  | 'MALFORMED'
  | 'WRONG_SENDER'
  | 'BAD_SIGNATURE'
  | 'ROOM_FULL'
  | 'DUPLICATE'
  | 'TIMEOUT';

/** A publish that did not store the frame. */
export class PublishError extends SealbusError {
  declare readonly code: PublishErrorCode;
  readonly room: string;

  constructor(
    code: PublishErrorCode,
    room: string,
    message: string,
    options?: { cause?: unknown }
  ) {
    super(code, message, options);
    this.room = room;
  }
}
