import { ValidationError } from '@sealbus/protocol';
import { parseDuration } from './parse.js';

/**
 * `--expires`: a duration from now (`30d`, `12h`) or an RFC 3339 time with
 * an offset; either way it must lie in the future. Returns ISO 8601 (UTC).
 */
export function parseExpiry(text: string, now = Date.now()): string {
  const t = text.trim();
  let at: number;
  if (/^\d+(ms|s|m|h|d)$/.test(t)) {
    at = now + parseDuration(t);
  } else if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/i.test(t)) {
    at = Date.parse(t);
  } else {
    throw new ValidationError(
      'expires',
      `"${text}" is neither a duration (30d, 12h) nor an RFC 3339 time (2027-01-31T00:00:00Z)`
    );
  }
  if (!Number.isFinite(at)) throw new ValidationError('expires', `"${text}" is not a valid time`);
  if (at <= now) throw new ValidationError('expires', `"${text}" is not in the future`);
  return new Date(at).toISOString();
}
