import { grantActive, userActive } from '@sealbus/protocol';
import type { MiddlewareHandler } from 'hono';
import {
  claimedKeyId,
  SignatureError,
  verifyRequestSignature,
  verifyRequestSignatureHead,
  type SignableRequest,
  type VerifiedSignature,
  type VerifyPolicy,
} from '@sealbus/crypto';
import type { MembershipStore } from '@sealbus/store';
import type { Logger } from '../log.js';
import { LogThrottle } from '../logthrottle.js';
import type { Metrics } from '../metrics.js';
import type { AppContext, AppEnv, AuthMode } from './context.js';
import type { AuthDamper } from './damping.js';
import { HttpError } from './errors.js';
import type { LocalNonces } from './localnonces.js';

/** A request signed before this node (or its first start after a restore) began. */
const signedBeforeStart = () =>
  new SignatureError(
    'SIGNED_BEFORE_START',
    'this request was signed before the node started (sign it again)'
  );

/** The request as it arrived on the wire (raw target, Host header). */
export function signableRequest(c: AppContext): SignableRequest {
  let target = c.env?.incoming?.url;
  if (!target || !target.startsWith('/')) {
    const u = new URL(c.req.url);
    target = u.pathname + u.search;
  }
  const q = target.indexOf('?');
  return {
    method: c.req.method.toUpperCase(),
    authority: (c.req.header('host') ?? new URL(c.req.url).host).toLowerCase(),
    path: q < 0 ? target : target.slice(0, q),
    query: q < 0 ? '' : target.slice(q),
    header: (name) => c.req.header(name),
  };
}

export interface SignatureAuthOptions {
  store: MembershipStore;
  mode: AuthMode;
  logger: Logger;
  policy?: Omit<VerifyPolicy, 'now'>;
  /** Auth-failure damping by source address (enforce mode only). */
  damper?: AuthDamper;
  /** Counts each refusal by code (soft mode too) and replays. */
  metrics?: Pick<Metrics, 'signatureFailure' | 'replay' | 'nonce'>;
  /**
   * The route reads its body itself, as a stream (blob uploads): only the
   * headers are verified here, with `content-type` and `content-digest`
   * required and covered, and the digest's sha-256 bytes are left in
   * `bodyDigest` for the handler to check as it reads. The body is not read.
   */
  streamBody?: boolean;
  /**
   * Nonces of requests signed for these names are remembered by this node
   * alone (no quorum write); every other request's nonce goes to the
   * replicated bucket. Only for names no other node accepts.
   */
  localNonces?: { store: LocalNonces; covers: (authority: string) => boolean };
  /** Requests signed (`created`) before this second are SIGNED_BEFORE_START (after a restore). */
  notBeforeSec?: number;
  /**
   * False while this node's authority claims are not current (not yet
   * written, or not renewed in time): signed requests are 503, since
   * another node may keep a name's nonces in memory that this one would
   * then accept unknowingly.
   */
  claimsCurrent?: () => boolean;
}

/**
 * Authenticates a request by its RFC 9421 signature (Sealbus profile), in
 * this order, so that nothing is written for garbage: parse and policy
 * checks (label `sig1`, `@authority` one of this node's names), digest and
 * Ed25519 verification (stateless), then the signer's user record (must be
 * active; from the user cache when it is proved current within its bound),
 * then the nonce, created once in the replicated nonces bucket (a
 * second use anywhere is REPLAYED), or, for a name only this node answers
 * to, in the node's own memory (`localNonces`: a request signed before the
 * node started is SIGNED_BEFORE_START there). A store that cannot answer
 * fails the request with 503, never lets it through.
 *
 * Damping gates failures only: a request from a damped address is still
 * verified, and served when it verifies; only a failed one gets 429 (and
 * is not counted again). A stranger sharing an address (a NAT, a proxy)
 * cannot lock out the keys behind it.
 *
 * `soft` mode verifies and logs but lets requests through as the identity
 * they claim; `off` skips verification entirely. Both are for development
 * and migrations only.
 */
export function signatureAuth(options: SignatureAuthOptions): MiddlewareHandler<AppEnv> {
  const { store, mode, logger, metrics } = options;
  const claimed = async (c: AppContext) => {
    const keyid = claimedKeyId(c.req.header('signature-input'));
    const user = keyid ? await store.getUser(keyid) : null;
    return user && userActive(user) ? user : null;
  };
  const damper = mode === 'enforce' && options.damper?.enabled ? options.damper : undefined;

  // Refusals from one address: one line per interval and a count.
  const refusals = new LogThrottle({
    summary: (remote, more, intervalMs) =>
      logger.warn(
        { remote, more, interval_s: intervalMs / 1000 },
        'request signatures refused (more from this address)'
      ),
  });

  return async function signatureAuthMiddleware(c, next) {
    const remote = c.env?.incoming?.socket?.remoteAddress ?? 'unknown';
    let body: Uint8Array | null = null;
    if (options.streamBody) {
      c.set('rawBody', new Uint8Array());
      c.set('bodyDigest', undefined);
    } else {
      body = new Uint8Array(await c.req.arrayBuffer());
      c.set('rawBody', body);
    }
    if (mode === 'off') {
      c.set('actor', await claimed(c));
      return next();
    }
    try {
      let sig: VerifiedSignature;
      if (body) sig = verifyRequestSignature(signableRequest(c), body, options.policy);
      else {
        const head = verifyRequestSignatureHead(signableRequest(c), options.policy);
        c.set('bodyDigest', head.digest);
        sig = head;
      }
      const user = await store.userForRequest(sig.keyid);
      if (!user) throw new SignatureError('UNKNOWN_KEY', 'the signing key is not registered');
      if (user.status !== 'active')
        throw new SignatureError('REVOKED_KEY', 'the signing key has been revoked');
      if (!grantActive(user.expires_at))
        throw new SignatureError(
          'EXPIRED_KEY',
          `the signing key's grant expired at ${user.expires_at}`
        );
      if (options.claimsCurrent && !options.claimsCurrent())
        throw new HttpError(
          503,
          'STORE_UNAVAILABLE',
          'this node cannot confirm which names it may answer to (its claims in the store are not current); retry'
        );
      if (options.notBeforeSec !== undefined && sig.created < options.notBeforeSec)
        throw signedBeforeStart();
      // Whatever the name, a node that keeps nonces in memory checks every
      // request there (a name that stopped being its own may have nonces
      // held nowhere else); a name not (or no longer) its own alone is
      // recorded in the bucket as well.
      const local = options.localNonces;
      let verdict = local
        ? local.store.consume(sig.keyid, sig.nonce, sig.created, sig.expires)
        : ('full' as const);
      if (verdict === 'first' && !local!.covers(signableRequest(c).authority))
        verdict = 'also-bucket';
      if (verdict === 'before-start') throw signedBeforeStart();
      if (
        verdict === 'replayed' ||
        (verdict !== 'first' && !(await store.consumeNonce(sig.keyid, sig.nonce)))
      ) {
        throw new SignatureError('REPLAYED', 'this request (nonce) was already used');
      }
      metrics?.nonce(verdict === 'first' ? 'node' : 'replicated');
      c.set('actor', user);
    } catch (err) {
      if (!(err instanceof SignatureError)) throw err;
      metrics?.signatureFailure(err.code);
      if (err.code === 'REPLAYED') metrics?.replay();
      // A damped address's failures get 429 and one log line, and do not
      // extend the damping (they are not counted again).
      const waitMs = damper?.retryAfterMs(remote) ?? 0;
      if (waitMs > 0) {
        const retryAfter = Math.ceil(waitMs / 1000);
        logger[refusals.hit(remote) ? 'warn' : 'debug'](
          { request_id: c.get('requestId'), code: err.code, remote, retry_after_s: retryAfter },
          'auth damping: request refused'
        );
        c.header('Retry-After', String(retryAfter));
        throw new HttpError(
          429,
          'TOO_MANY_AUTH_FAILURES',
          `too many failed authentications from this address; retry in ${retryAfter} s`
        );
      }
      logger[refusals.hit(remote) ? 'warn' : 'debug'](
        {
          request_id: c.get('requestId'),
          code: err.code,
          claimed_keyid: claimedKeyId(c.req.header('signature-input')),
          method: c.req.method,
          path: c.req.path,
          remote,
          enforced: mode === 'enforce',
        },
        'request signature refused'
      );
      if (damper?.fail(remote)) {
        logger.warn(
          { remote, limit: damper.limit, window_ms: damper.windowMs },
          'auth damping: address damped after repeated failures'
        );
      }
      if (mode === 'enforce') throw new HttpError(401, err.code, err.message);
      c.set('actor', await claimed(c));
    }
    return next();
  };
}
