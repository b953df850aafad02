export type NatsdErrorCode =
  | 'BINARY_NOT_FOUND'
  | 'BINARY_TOO_OLD'
  | 'BAD_CONFIG'
  | 'START_FAILED'
  | 'READY_TIMEOUT'
  | 'RELOAD_FAILED'
  | 'RELOAD_TIMEOUT';

/** Failures finding, configuring, starting, reloading or stopping a nats-server process. */
export class NatsdError extends Error {
  readonly code: NatsdErrorCode;

  constructor(code: NatsdErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}
