/**
 * Request nonces remembered by this node alone, in memory: a signed request
 * whose `(keyid, nonce)` was seen here before is a replay, without a quorum
 * write to the replicated nonces bucket.
 *
 * Sound only where no other node accepts the same request: the daemon uses
 * it for a node that is the whole deployment (its own nats-server, no
 * cluster), so a request can be presented nowhere else. Nothing survives a
 * restart, so a request signed before this store was made (`created` earlier
 * than its start, to the second rounded up) is refused: it may have been
 * used by the process before this one.
 *
 * A nonce is kept for as long as its signature could still be accepted
 * (`min(created + maxAge, expires)`, plus the allowed clock skew), in
 * generations of {@link GENERATION_S} seconds that are dropped whole. Past
 * `maxEntries` the store declines (`'full'`) and the caller records the
 * nonce in the replicated bucket instead: memory stays bounded under a
 * flood, and no request is ever let through unrecorded.
 */
export const GENERATION_S = 30;

export type LocalNonceVerdict = 'first' | 'replayed' | 'before-start' | 'full';

export interface LocalNoncesOptions {
  /** Longest a signature is accepted after its `created`, seconds (the verify policy's maxAge). */
  maxAgeSec: number;
  /** Clock skew allowed, seconds (the verify policy's skew). */
  skewSec: number;
  /** Most nonces held at once (default 2,000,000: about 300 MB at worst). */
  maxEntries?: number;
  /** When this store began, ms since the epoch (default: now). */
  startedAtMs?: number;
}

export class LocalNonces {
  readonly #maxAge: number;
  readonly #skew: number;
  readonly #max: number;
  /** Requests created before this second may predate the store. */
  readonly startSec: number;
  /** Generation (forget-after second / GENERATION_S) → nonce keys. */
  readonly #gens = new Map<number, Set<string>>();
  #size = 0;

  constructor(o: LocalNoncesOptions) {
    this.#maxAge = o.maxAgeSec;
    this.#skew = o.skewSec;
    this.#max = o.maxEntries ?? 2_000_000;
    this.startSec = Math.ceil((o.startedAtMs ?? Date.now()) / 1000);
  }

  get size(): number {
    return this.#size;
  }

  /**
   * Records the first use of `(keyid, nonce)` of a verified signature with
   * these `created`/`expires` (seconds); `now` in seconds.
   */
  consume(
    keyid: string,
    nonce: string,
    created: number,
    expires: number,
    now = Date.now() / 1000
  ): LocalNonceVerdict {
    if (created < this.startSec) return 'before-start';
    this.#prune(now);
    const key = `${keyid}.${nonce}`;
    for (const g of this.#gens.values()) if (g.has(key)) return 'replayed';
    if (this.#size >= this.#max) return 'full';
    // Accepted at t only while t <= created + maxAge (+ skew on either
    // clock) and t < expires: forget after the later bound has passed.
    const forgetAt = Math.min(created + this.#maxAge, expires) + this.#skew + 1;
    const gen = Math.ceil(forgetAt / GENERATION_S);
    let set = this.#gens.get(gen);
    if (!set) this.#gens.set(gen, (set = new Set()));
    set.add(key);
    this.#size++;
    return 'first';
  }

  /** Drops every generation whose nonces can no longer be accepted. */
  #prune(now: number): void {
    for (const [gen, set] of this.#gens) {
      if (gen * GENERATION_S < now) {
        this.#size -= set.size;
        this.#gens.delete(gen);
      }
    }
  }
}
