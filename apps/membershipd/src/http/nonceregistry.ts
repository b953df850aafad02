import type { KV } from 'nats';
import type { Logger } from '../log.js';
import type { Authorities } from './authority.js';

/** How often a node renews its claims (the nonces bucket keeps them 10 minutes). */
export const CLAIM_RENEW_MS = 60_000;

/** How long a renewal keeps its decisions good (the bucket keeps a claim twice as long). */
const CLAIM_VALID_MS = 5 * 60_000;

export type ClaimKind = 'own' | 'shared' | 'refused';

export type ClaimPolicy = 'address' | 'all' | 'none';

interface Claim {
  kind: ClaimKind;
  server: string;
  name: string;
  at: string;
}

const enc = (s: string) => Buffer.from(s, 'utf8').toString('base64url');
const keyOf = (name: string, server: string) => `authority.${enc(name)}.${enc(server)}`;

/**
 * Which `@authority` names of a cluster node may keep their request nonces
 * in the node's memory: a name only this node answers to. Every node
 * writes, for each name it accepts, a claim into the replicated nonces
 * bucket (`authority.<name>.<server>`: `own` for its listener's address,
 * `shared` for loopback aliases and `--authority` names), then reads every
 * claim on each of its names:
 *
 * - another node claims the name `own`: this node stops accepting it at
 *   all (401 WRONG_AUTHORITY) and marks its claim `refused`, since that
 *   node may remember the name's nonces only in memory;
 * - another node accepts a name this node claims `own`: its nonces go to
 *   the replicated bucket here (a request could be presented to both);
 * - nobody else: the name's nonces stay in this node's memory.
 *
 * Writes then reads, each linearised by the stream: of two nodes claiming
 * one name, the later reader sees the earlier writer, so at most one of
 * them keeps the name's nonces in memory, and then no other accepts it.
 * Claims are renewed every {@link CLAIM_RENEW_MS} (the bucket forgets them
 * after 10 minutes) and checked again each time.
 */
export class NonceRegistry {
  readonly #kv: KV;
  readonly #server: string;
  readonly #authorities: Authorities;
  readonly #log: Logger;
  readonly #local = new Set<string>();
  readonly #refused = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #renewedAt = -Infinity;

  readonly #validMs: number;
  readonly #claims: ClaimPolicy;

  /**
   * `claims`: which names this node claims as its own: `address` (a
   * cluster node: its listener's address), `all` (a node that is the whole
   * deployment: every name it answers to), `none` (its nonces all go to the
   * bucket; it still refuses names another node claims as its own).
   */
  constructor(
    kv: KV,
    server: string,
    authorities: Authorities,
    logger: Logger,
    o: { claims?: ClaimPolicy; validMs?: number } = {}
  ) {
    this.#validMs = o.validMs ?? CLAIM_VALID_MS;
    this.#claims = o.claims ?? 'address';
    this.#kv = kv;
    this.#server = server;
    this.#authorities = authorities;
    this.#log = logger;
  }

  /** Names whose nonces this node keeps in memory. */
  local(): string[] {
    return [...this.#local].sort();
  }

  /**
   * Whether a request signed for this name keeps its nonce in memory: only
   * while the claims were renewed recently enough that the bucket still
   * holds them (half its 10-minute age); after that, the bucket.
   */
  covers(authority: string): boolean {
    return this.current() && this.#local.has(authority.toLowerCase());
  }

  /** The claims were written and checked recently enough to act on. */
  current(): boolean {
    return Date.now() - this.#renewedAt < this.#validMs;
  }

  /** Writes this node's claims, then decides from everyone's (throws when the store cannot). */
  async claim(): Promise<void> {
    const started = Date.now();
    const own = new Set(
      this.#claims === 'all'
        ? this.#authorities.list()
        : this.#claims === 'address'
          ? this.#authorities.own()
          : []
    );
    const names = [...new Set([...this.#authorities.list(), ...this.#refused])];
    const kindOf = (n: string): ClaimKind =>
      this.#refused.has(n) ? 'refused' : own.has(n) ? 'own' : 'shared';
    const write = (n: string, kind: ClaimKind) =>
      this.#kv.put(
        keyOf(n, this.#server),
        JSON.stringify({
          kind,
          server: this.#server,
          name: n,
          at: new Date().toISOString(),
        } satisfies Claim)
      );
    for (const n of names) await write(n, kindOf(n));
    for (const n of names) {
      if (this.#refused.has(n)) continue;
      const others = await this.#claimsOf(n);
      if (others.some((c) => c.kind === 'own')) {
        this.#local.delete(n);
        this.#refused.add(n);
        this.#authorities.refuse(n);
        await write(n, 'refused');
        this.#log.error(
          { authority: n, claimed_by: others.filter((c) => c.kind === 'own').map((c) => c.server) },
          'another node claims this address as its own: requests signed for it are refused here (give each node its own --http address; do not list a peer with --authority)'
        );
      } else if (own.has(n) && others.length > 0) {
        if (this.#local.delete(n) || !this.#warned.has(n))
          this.#log.warn(
            { authority: n, also_accepted_by: others.map((c) => c.server) },
            'other nodes accept this node address too: its request nonces go to the replicated bucket'
          );
        this.#warned.add(n);
      } else if (own.has(n)) this.#local.add(n);
    }
    this.#renewedAt = started;
  }

  readonly #warned = new Set<string>();

  /** Live claims on a name by other servers (refused ones do not count). */
  async #claimsOf(name: string): Promise<Claim[]> {
    const out: Claim[] = [];
    const prefix = `authority.${enc(name)}.`;
    const keys: string[] = [];
    for await (const k of await this.#kv.keys(`${prefix}*`)) keys.push(k);
    for (const k of keys) {
      if (k === keyOf(name, this.#server)) continue;
      const e = await this.#kv.get(k);
      if (!e || e.operation !== 'PUT') continue;
      let raw: unknown;
      try {
        raw = JSON.parse(new TextDecoder().decode(e.value));
      } catch {
        raw = null;
      }
      // Anything but exactly `shared` or `refused` (unreadable, another
      // shape, a kind this version does not know) reads as `own`: the safe
      // reading.
      const r = (typeof raw === 'object' && raw !== null ? raw : {}) as Partial<Claim>;
      const kind: ClaimKind = r.kind === 'shared' || r.kind === 'refused' ? r.kind : 'own';
      const c: Claim = {
        kind,
        server: typeof r.server === 'string' ? r.server : '?',
        name,
        at: typeof r.at === 'string' ? r.at : '',
      };
      if (c.kind !== 'refused') out.push(c);
    }
    return out;
  }

  /**
   * Renews and re-checks the claims every {@link CLAIM_RENEW_MS}; a failed
   * (or hung: 20 s) round is tried again in 2 s, and its last decision
   * stops counting once it is older than the validity.
   */
  start(everyMs = CLAIM_RENEW_MS, retryMs = 2_000): void {
    const tick = (ms: number) => {
      this.#timer = setTimeout(() => {
        let timer: NodeJS.Timeout | undefined;
        Promise.race([
          this.claim(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error('claim round timed out')), 20_000);
          }),
        ])
          .then(
            () => everyMs,
            (err: Error) => {
              this.#log.warn({ err: err.message }, 'renewing the authority claims failed');
              return retryMs;
            }
          )
          .then((next) => {
            clearTimeout(timer);
            if (this.#timer) tick(next);
          });
      }, ms);
      this.#timer.unref();
    };
    tick(this.current() ? everyMs : retryMs);
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
