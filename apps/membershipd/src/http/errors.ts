import type { ContentfulStatusCode } from 'hono/utils/http-status';

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
