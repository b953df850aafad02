/** One failed attempt against one control URL. */
export interface ControlAttempt {
  url: string;
  /** HTTP status, or 0 when no answer came back. */
  status: number;
  error: string;
}

/**
 * An error from the control plane. For an answer from the server, `status`
 * and `code` are the server's (`{"error":{"code"}}`); when no URL answered,
 * `status` is 0 or 503 and `code` is `UNAVAILABLE`, with every attempt listed.
 */
export class ControlError extends Error {
  readonly status: number;
  readonly code: string;
  readonly attempts: readonly ControlAttempt[];

  constructor(status: number, code: string, message: string, attempts: ControlAttempt[] = []) {
    super(message);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.attempts = attempts;
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
  | 'MALFORMED'
  | 'WRONG_SENDER'
  | 'BAD_SIGNATURE'
  | 'ROOM_FULL'
  | 'DUPLICATE'
  | 'TIMEOUT';

/** A publish that did not store the frame. */
export class PublishError extends Error {
  readonly code: PublishErrorCode;
  readonly room: string;

  constructor(
    code: PublishErrorCode,
    room: string,
    message: string,
    options?: { cause?: unknown }
  ) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.room = room;
  }
}
