import { ValidationError } from '@sealbus/protocol';
import { parseDuration } from './parse.js';

const DURATION_RE = /^\d+(ms|s|m|h|d)$/;
const RFC3339_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/i;

/**
 * An RFC 3339 time with an offset, or a duration (`30d`, `12h`) counted from
 * `now` in `direction` (+1 ahead, -1 ago). Epoch ms.
 */
function parseTimeOrDuration(text: string, field: string, direction: 1 | -1, now: number): number {
  const t = text.trim();
  let at: number;
  if (DURATION_RE.test(t)) {
    at = now + direction * parseDuration(t);
  } else if (RFC3339_RE.test(t)) {
    at = Date.parse(t);
  } else {
    throw new ValidationError(
      field,
      `"${text}" is neither a duration (30d, 12h) nor an RFC 3339 time (2027-01-31T00:00:00Z)`
    );
  }
  if (!Number.isFinite(at)) throw new ValidationError(field, `"${text}" is not a valid time`);
  return at;
}

/**
 * `--expires`: a duration from now (`30d`, `12h`) or an RFC 3339 time with
 * an offset; either way it must lie in the future. Returns ISO 8601 (UTC).
 */
export function parseExpiry(text: string, now = Date.now()): string {
  const at = parseTimeOrDuration(text, 'expires', 1, now);
  if (at <= now) throw new ValidationError('expires', `"${text}" is not in the future`);
  return new Date(at).toISOString();
}

/**
 * `--since`/`--until` of queries: an RFC 3339 time with an offset, or a
 * duration meaning that long ago (`1h`, `7d`). Epoch ms.
 */
export function parsePastTime(text: string, field: string, now = Date.now()): number {
  return parseTimeOrDuration(text, field, -1, now);
}
