import type { UserRecord } from '@sealbus/protocol';
import type { Msg, NatsConnection, Subscription } from 'nats';
import type { AuthorizationRequest } from 'nats-jwt';
import { fromHex, publicFromUserNkey, toHex, verifyKeyBinding } from '@sealbus/crypto';
import type { MembershipStore } from '@sealbus/store';
import type { Logger } from '../log.js';
import { LogThrottle } from '../logthrottle.js';
import type { CalloutReason, Metrics } from '../metrics.js';
import type { CalloutKeys } from './keys.js';
import { GrantsMemo, decideIdentity } from './decision.js';
import { verifyNkey } from './fastkeys.js';
import { encodeAuthorizationResponseJwt, encodeUserJwt } from './jwt.js';

/** The account callout users are placed in (the user JWT's audience). */
export const APP_ACCOUNT = 'APP';
export const CALLOUT_SUBJECT = '$SYS.REQ.USER.AUTH';
/** All membershipd instances answer as one queue group: each request once. */
export const CALLOUT_QUEUE = 'sealbus.callout';

const enc = new TextEncoder();
const dec = new TextDecoder();

export interface CalloutStats {
  allowed: number;
  denied: number;
  /** Recent decision latencies in ms (bounded ring). */
  latencies: number[];
}

export interface CalloutOptions {
  nc: NatsConnection;
  store: MembershipStore;
  keys: CalloutKeys;
  logger: Logger;
  /** Lifetime of issued user JWTs: the server disconnects at expiry and the client re-authenticates here. */
  jwtTtlSec: number;
  /** How long one decision may wait for the store (keep it under nats-server's auth timeout). */
  storeBudgetMs?: number;
  /** Counts decisions by reason and their latency. */
  metrics?: Pick<Metrics, 'callout'>;
}

/**
 * Decodes the server's authorization request JWT and checks that the server
 * it names signed it. (nats-jwt's decode does the same check with its own
 * bundled pure-JS Ed25519, ~15 ms a call here; nkeys.js goes through the
 * node:crypto helper installed by @sealbus/crypto.)
 */
export function decodeRequest(jwt: string): AuthorizationRequest {
  const parts = jwt.split('.');
  if (parts.length !== 3) throw new Error('not a JWT');
  const header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8')) as {
    typ?: string;
    alg?: string;
  };
  if (header.alg !== 'ed25519-nkey') throw new Error(`unexpected JWT alg ${header.alg}`);
  const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as {
    iss?: string;
    nats?: AuthorizationRequest & { type?: string };
  };
  const req = claims.nats;
  if (
    req?.type !== 'authorization_request' ||
    typeof req.user_nkey !== 'string' ||
    !/^U[A-Z2-7]{55}$/.test(req.user_nkey) ||
    typeof req.server_id?.id !== 'string'
  ) {
    throw new Error('not an authorization request');
  }
  // The key the answer is addressed to: a user key, checksum included (what
  // nats-jwt's encoder would refuse, ours must not sign for; the pattern
  // above fixes its length, so a key that decodes is 32 bytes).
  try {
    publicFromUserNkey(req.user_nkey);
  } catch {
    throw new Error('user_nkey is not a user key');
  }
  if (claims.iss !== req.server_id.id) throw new Error('request not issued by the server it names');
  const signed = enc.encode(`${parts[0]}.${parts[1]}`);
  if (
    !verifyNkey('server', claims.iss, signed, new Uint8Array(Buffer.from(parts[2]!, 'base64url')))
  ) {
    throw new Error('request signature does not verify');
  }
  return req;
}

/** Bindings that verified, by their exact bytes (a bounded set; the oldest go first). */
const VERIFIED_BINDINGS = 16_384;
const verifiedBindings = new Set<string>();

/**
 * A record's binding holds: its sign key signed (kex_pub, nats_pub). The
 * answer depends on those four values only, so a binding that verified once
 * is remembered by them (a reconnect costs no Ed25519 verify); anything else
 * is verified again.
 */
function bindingHolds(u: UserRecord): boolean {
  if (!u.bound || u.kex_pub === null || u.nats_pub === null || u.binding === null) return false;
  const id = `${u.sign_pub}.${u.kex_pub}.${u.nats_pub}.${u.binding}`;
  if (verifiedBindings.has(id)) return true;
  const holds = verifyKeyBinding(
    {
      signPub: fromHex(u.sign_pub, 'sign_pub', 32),
      kexPub: fromHex(u.kex_pub, 'kex_pub', 32),
      natsPub: fromHex(u.nats_pub, 'nats_pub', 32),
    },
    fromHex(u.binding, 'binding', 64)
  );
  if (holds) {
    if (verifiedBindings.size >= VERIFIED_BINDINGS)
      verifiedBindings.delete(verifiedBindings.values().next().value!);
    verifiedBindings.add(id);
  }
  return holds;
}

/**
 * The registered, bound user a connection's NATS key belongs to, or null:
 * the one lookup of "who is this connection" for the services the daemon
 * answers for users (the append service). A sign key, an unknown key or a
 * binding that does not verify is nobody.
 */
export async function userOfNatsKey(
  store: MembershipStore,
  nkey: string,
  o: { deadline?: number } = {}
): Promise<UserRecord | null> {
  const found = await store.userByNatsKey(toHex(publicFromUserNkey(nkey)), o);
  return found.kind === 'user' && bindingHolds(found.user) ? found.user : null;
}

type Decision =
  | { allow: true; jwt: string; nkey: string; rooms: number }
  | { allow: false; reason: string; code: CalloutReason; nkey: string | null };

/**
 * Answers nats-server's auth callout for every connection that is not one of
 * the daemon's own users. A connection is allowed only if it proved
 * possession of the nkey it presents (Ed25519 signature over the server's
 * nonce) and that key is the bound, derived NATS key (`nats_pub`) of an
 * active user; the JWT it gets allows exactly the subjects of its rooms.
 * Any doubt — a store that does not answer included — is a denial with a
 * reason the server logs.
 */
export class CalloutService {
  readonly stats: CalloutStats = { allowed: 0, denied: 0, latencies: [] };
  readonly #o: CalloutOptions;
  readonly #grants = new GrantsMemo();
  #sub: Subscription | undefined;

  constructor(o: CalloutOptions) {
    this.#o = o;
  }

  start(): void {
    this.#sub = this.#o.nc.subscribe(CALLOUT_SUBJECT, {
      queue: CALLOUT_QUEUE,
      callback: (err, msg) => {
        if (err) {
          this.#o.logger.error({ err: err.message }, 'auth callout subscription failed');
          return;
        }
        void this.#handle(msg);
      },
    });
  }

  async stop(): Promise<void> {
    await this.#sub?.drain().catch(() => {});
    this.#denials.stop();
    this.#unreadable.stop();
  }

  readonly #unreadable = new LogThrottle({
    summary: (server_xkey, more, intervalMs) =>
      this.#o.logger.error(
        { server_xkey, more, interval_s: intervalMs / 1000 },
        'unreadable auth callout requests (more from this server key): callout.key differs between nodes?'
      ),
  });

  readonly #denials = new LogThrottle({
    summary: (client, more, intervalMs) =>
      this.#o.logger.info(
        { client, more, interval_s: intervalMs / 1000 },
        'callout: denied (more from this client)'
      ),
  });

  async #handle(msg: Msg): Promise<void> {
    const t0 = performance.now();
    const serverXkey = msg.headers?.get('Nats-Server-Xkey') || undefined;
    let req: AuthorizationRequest;
    try {
      const raw = serverXkey ? this.#o.keys.xkey.open(msg.data, serverXkey) : msg.data;
      if (!raw) throw new Error('cannot open (wrong xkey?)');
      req = decodeRequest(dec.decode(raw));
    } catch (err) {
      // Without user_nkey and server id no answer can even be addressed.
      // The usual cause in a cluster: a nats-server whose config names
      // another callout key than this node's (callout.key differs between
      // nodes), so its requests, sealed to that key, reach this daemon
      // through the queue group and are unreadable here.
      const mismatch = serverXkey !== undefined;
      const fields = {
        err: (err as Error).message,
        ...(mismatch
          ? { server_xkey: serverXkey, this_node_xkey: this.#o.keys.xkey.getPublicKey() }
          : {}),
      };
      const msg = mismatch
        ? 'unreadable auth callout request: callout.key differs between nodes (a nats-server seals requests to another key than this node holds; every node must share one callout.key)'
        : 'unreadable auth callout request';
      if (this.#unreadable.hit(serverXkey ?? 'plain')) this.#o.logger.error(fields, msg);
      else this.#o.logger.debug(fields, msg);
      this.#o.metrics?.callout('deny', 'unreadable', (performance.now() - t0) / 1000);
      return;
    }
    let d: Decision;
    try {
      d = await this.#decide(req);
    } catch (err) {
      d = {
        allow: false,
        reason: 'authorization service unavailable',
        code: 'unavailable',
        nkey: req.connect_opts?.nkey ?? null,
      };
      this.#o.logger.error({ err: (err as Error).message }, 'auth callout failed; denying');
    }
    try {
      const token = encodeAuthorizationResponseJwt(
        req.user_nkey,
        req.server_id.id,
        d.allow ? { jwt: d.jwt } : { error: d.reason },
        this.#o.keys.issuer
      );
      const data = serverXkey
        ? this.#o.keys.xkey.seal(enc.encode(token), serverXkey)
        : enc.encode(token);
      msg.respond(data);
    } catch (err) {
      this.#o.logger.error({ err: (err as Error).message }, 'cannot answer auth callout');
      return;
    }
    const ms = performance.now() - t0;
    this.#o.metrics?.callout(d.allow ? 'allow' : 'deny', d.allow ? 'active' : d.code, ms / 1000);
    this.stats.latencies.push(ms);
    if (this.stats.latencies.length > 10_000) this.stats.latencies.splice(0, 5_000);
    if (d.allow) {
      this.stats.allowed++;
      this.#o.logger.debug(
        { nkey: d.nkey, rooms: d.rooms, ms: Math.round(ms * 10) / 10 },
        'callout: allowed'
      );
    } else {
      this.stats.denied++;
      // A connect flood from one address logs one line per interval and a count.
      const client = req.client_info?.host ?? null;
      this.#o.logger[this.#denials.hit(String(client)) ? 'info' : 'debug'](
        { nkey: d.nkey, reason: d.reason, client, ms: Math.round(ms * 10) / 10 },
        'callout: denied'
      );
    }
  }

  async #decide(req: AuthorizationRequest): Promise<Decision> {
    const nkey = req.connect_opts?.nkey;
    const sig = req.connect_opts?.sig;
    const nonce = req.client_info?.nonce;
    if (!nkey || !sig || !nonce || !/^U[A-Z2-7]{55}$/.test(nkey)) {
      return {
        allow: false,
        reason: 'an nkey and its signature over the server nonce are required',
        code: 'no_proof',
        nkey: nkey ?? null,
      };
    }
    // node:crypto's Ed25519 (nkeys.js answers the same, in pure JS).
    const proven = verifyNkey(
      'user',
      nkey,
      enc.encode(nonce),
      new Uint8Array(Buffer.from(sig, 'base64'))
    );
    if (!proven)
      return {
        allow: false,
        reason: 'nkey signature over the server nonce does not verify',
        code: 'bad_proof',
        nkey,
      };
    // nats-server waits AUTH_TIMEOUT for our answer; reads that ride out a
    // stream leader election must still answer (allow or deny) before it.
    const deadline = Date.now() + (this.#o.storeBudgetMs ?? 8_000);
    // The nkey is a user's derived NATS key, found through the index; a
    // registered sign key is refused by name (it must never answer a
    // server's nonce: that signature could be replayed as an HTTP one).
    const found = await this.#o.store.userByNatsKey(toHex(publicFromUserNkey(nkey)), {
      deadline,
    });
    const who = decideIdentity(found, bindingHolds, Date.now());
    if (!who.allow) return { ...who, nkey };
    const memberships = await this.#o.store.membershipsOf(who.user.sign_pub, { deadline });
    // Decided at the time the memberships were read: the JWT never outlives
    // a grant (NATS disconnects at `exp`, and the reconnect comes back here).
    const now = Date.now();
    const { permissionsJson, exp, rooms } = this.#grants.decide(
      who.user,
      memberships,
      now,
      this.#o.jwtTtlSec
    );
    const jwt = encodeUserJwt(
      { name: nkey, subject: req.user_nkey, audience: APP_ACCOUNT, exp, permissionsJson },
      this.#o.keys.issuer,
      now
    );
    return { allow: true, jwt, nkey, rooms };
  }
}
