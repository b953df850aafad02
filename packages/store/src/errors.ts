export type StoreErrorCode =
  /** A create-only write found the key taken, or a CAS loop gave up. */
  | 'CONFLICT'
  | 'NOT_FOUND'
  /** Input rejected before anything was written. */
  | 'INVALID'
  /** A stored value does not parse: never silently dropped. */
  | 'CORRUPT'
  /** No answer in time (no quorum, no meta leader, connection down). */
  | 'UNAVAILABLE'
  /** Bind-only open found the buckets missing. */
  | 'NOT_INITIALIZED'
  /**
   * The account's JetStream storage cannot hold it: every persisted room
   * reserves its `max_bytes` of account APP's cap (`--app-max-bytes`).
   */
  | 'FULL'
  /** A room statement that is not the owner's valid next statement for this change. */
  | 'BAD_STATEMENT'
  /** A room statement for a seq or epoch another change already took: fetch and retry. */
  | 'STALE_STATEMENT'
  /** Any other error from JetStream. */
  | 'BACKEND';

export class StoreError extends Error {
  readonly code: StoreErrorCode;

  constructor(code: StoreErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

interface NatsLikeError {
  code?: string;
  message?: string;
  api_error?: { code?: number; err_code?: number; description?: string };
}

/** JetStream's "wrong last sequence": the compare-and-set lost a race. */
export function isWrongLastSequence(err: unknown): boolean {
  const e = err as NatsLikeError | undefined;
  return e?.api_error?.err_code === 10071 || /wrong last sequence/i.test(e?.message ?? '');
}

/** JetStream's "stream not found". */
export function isStreamNotFound(err: unknown): boolean {
  const e = err as NatsLikeError | undefined;
  return e?.api_error?.err_code === 10059 || e?.message === 'stream not found';
}

const TRANSIENT_CODES = new Set([
  'TIMEOUT',
  '503',
  'CONNECTION_CLOSED',
  'DISCONNECT',
  'CONNECTION_DRAINING',
  'CONNECTION_REFUSED',
]);

/** True for errors that mean "the store did not answer", as opposed to "it said no". */
export function isUnavailable(err: unknown): boolean {
  const e = err as NatsLikeError | undefined;
  if (!e) return false;
  // A full disk answers 503 too, but waiting does not free space: refuse now.
  if (isStorageExhausted(err)) return false;
  if (e.code && TRANSIENT_CODES.has(e.code)) return true;
  if (e.api_error?.code === 503) return true;
  return /timeout|no responders|no suitable peers|insufficient resources|jetstream system temporarily unavailable|stream is offline/i.test(
    e.message ?? ''
  );
}

/**
 * JetStream's "insufficient storage resources" (an account or server storage
 * limit) or a write the disk refused ("no space left on device"): storage is
 * full, not an outage.
 */
export function isStorageExhausted(err: unknown): boolean {
  const e = err as NatsLikeError | undefined;
  return (
    e?.api_error?.err_code === 10047 ||
    /insufficient storage resources|no space left on device|resource limits exceeded/i.test(
      `${e?.api_error?.description ?? ''} ${e?.message ?? ''}`
    )
  );
}

/** Maps an error from nats.js to a StoreError, keeping StoreErrors as they are. */
export function toStoreError(err: unknown, what: string): StoreError {
  if (err instanceof StoreError) return err;
  const msg = (err as Error | undefined)?.message ?? String(err);
  if (isStorageExhausted(err))
    return new StoreError(
      'FULL',
      `${what}: storage is full (${(err as NatsLikeError).api_error?.description ?? msg})`,
      { cause: err }
    );
  if (isUnavailable(err))
    return new StoreError('UNAVAILABLE', `${what}: store unavailable (${msg})`, { cause: err });
  return new StoreError('BACKEND', `${what}: ${msg}`, { cause: err });
}
