import type { MiddlewareHandler } from 'hono';
import type { Metrics } from '../metrics.js';
import type { AppEnv } from './context.js';
import { HttpError } from './errors.js';

/** RFC 3986 unreserved characters: percent-encoding one is never normal form. */
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;

/**
 * Why a request target is not in normal form, or null when it is. The
 * signature covers the raw path; routing sees it after URL parsing, which
 * resolves `.` and `..` segments (also when written `%2e`), turns `\` into
 * `/` and reads `//x` as a host. A path is accepted only when both see the
 * same thing:
 * - origin form (starts with `/`), no fragment, no backslash;
 * - no empty segment (`//`, trailing `/`) except the root `/` itself;
 * - no `.` or `..` segment, plain or percent-encoded;
 * - every `%` starts a valid escape, and no escape encodes `/`, `\` or an
 *   unreserved character (those have exactly one normal spelling).
 */
export function targetProblem(target: string): string | null {
  const q = target.indexOf('?');
  const path = q < 0 ? target : target.slice(0, q);
  if (!path.startsWith('/')) return 'the request target must be a path (origin form)';
  if (target.includes('#')) return 'a fragment is not part of a request target';
  if (path.includes('\\')) return 'a backslash in the path';
  if (path === '/') return null;
  for (const raw of path.slice(1).split('/')) {
    if (raw === '') return 'an empty path segment (// or a trailing /)';
    const escapes = raw.match(/%[\s\S]{0,2}/g) ?? [];
    for (const e of escapes) {
      if (!/^%[0-9A-Fa-f]{2}$/.test(e)) return 'an invalid percent-escape';
      const ch = String.fromCharCode(parseInt(e.slice(1), 16));
      if (ch === '/' || ch === '\\') return 'a percent-encoded / or \\ in a segment';
      if (UNRESERVED.test(ch)) return `a percent-encoded unreserved character (${e})`;
    }
    if (raw === '.' || raw === '..') return 'a . or .. segment';
  }
  return null;
}

/**
 * Refuses (400 BAD_TARGET) every request whose raw target is not in normal
 * form, before routing and before any signature is looked at: what is
 * signed must be what is routed. Counted with the signature failures
 * (`BAD_TARGET`), not with damping: nothing was verified.
 */
export function normalTarget(
  metrics?: Pick<Metrics, 'signatureFailure'>
): MiddlewareHandler<AppEnv> {
  return async function normalTargetMiddleware(c, next) {
    const raw = c.env?.incoming?.url;
    // Without the raw target (an in-process request) the parsed URL is all there is.
    const target = raw ?? new URL(c.req.url).pathname + new URL(c.req.url).search;
    const problem = targetProblem(target);
    if (problem) {
      metrics?.signatureFailure('BAD_TARGET');
      throw new HttpError(400, 'BAD_TARGET', `request target refused: ${problem}`);
    }
    return next();
  };
}
