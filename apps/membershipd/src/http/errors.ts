import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { CryptoError, SignatureError } from '@sealbus/crypto';
import { ValidationError } from '@sealbus/protocol';
import { StoreError } from '@sealbus/store';

/**
 * An error with an HTTP status and a stable machine-readable code. Handlers
 * throw these; the app's one error handler turns them into
 * `{"error":{"code","message"}}`.
 */
export class HttpError extends Error {
  readonly status: ContentfulStatusCode;
  readonly code: string;

  constructor(
    status: ContentfulStatusCode,
    code: string,
    message: string,
    options?: { cause?: unknown }
  ) {
    super(message, options);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
  }
}

export function errorBody(code: string, message: string) {
  return { error: { code, message } };
}

const STORE_STATUS: Record<StoreError['code'], [ContentfulStatusCode, string]> = {
  INVALID: [400, 'INVALID'],
  NOT_FOUND: [404, 'NOT_FOUND'],
  CONFLICT: [409, 'CONFLICT'],
  UNAVAILABLE: [503, 'STORE_UNAVAILABLE'],
  NOT_INITIALIZED: [503, 'STORE_UNAVAILABLE'],
  FULL: [507, 'STORAGE_FULL'],
  CORRUPT: [500, 'STORE_CORRUPT'],
  BACKEND: [500, 'STORE_ERROR'],
  BAD_STATEMENT: [400, 'BAD_STATEMENT'],
  STALE_STATEMENT: [409, 'STALE_STATEMENT'],
};

/** Maps any error a handler can throw to its HTTP form; null for unexpected ones (500). */
export function toHttpError(err: unknown): HttpError | null {
  if (err instanceof HttpError) return err;
  if (err instanceof ValidationError) return new HttpError(400, 'INVALID', err.message);
  if (err instanceof SignatureError) return new HttpError(401, err.code, err.message);
  // A token or key binding in a request body that does not hold up.
  if (err instanceof CryptoError && (err.code === 'BAD_TOKEN' || err.code === 'BAD_BINDING'))
    return new HttpError(400, err.code, err.message);
  if (err instanceof StoreError) {
    const [status, code] = STORE_STATUS[err.code];
    return new HttpError(status, code, err.message);
  }
  return null;
}
