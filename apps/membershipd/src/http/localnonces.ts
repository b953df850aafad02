/**
 * Request nonces remembered by this node alone, in memory: a signed request
 * whose `(keyid, nonce)` was seen here before is a replay, without a quorum
 * write to the replicated nonces bucket.
 *
 * Sound only where no other node accepts the same request: the daemon uses
 * it for a node that is the whole deployment (its own nats-server, no
 * cluster), so a request can be presented nowhere else. Nothing here
 * survives a restart, so what the process before this one accepted must be
 * told apart:
 *
 * - a request signed (`created`) before this store's start, to the second
 *   rounded up, is refused (`'before-start'`): the process before may have
 *   used it;
 * - a request whose `created` is ahead of this node's clock (a client clock
 *   running fast, within the verifier's skew) could be used again after a
 *   restart without being refused by the rule above: it is recorded here
 *   AND in the replicated bucket (`'also-bucket'`), and the next process
 *   loads the bucket's nonces before it serves ({@link preload}).
 *
 * A nonce is kept for as long as its signature could still be accepted
 * (`min(created + maxAge, expires)`, plus the skew), in generations of
 * {@link GENERATION_S} seconds that are dropped whole. Past `maxEntries`
 * the store declines (`'full'`) and the caller records the nonce in the
 * replicated bucket instead: memory stays bounded under a flood, and no
 * request is ever let through unrecorded.
 */
export const GENERATION_S = 30;

/**
 * `first`: recorded here, serve it. `also-bucket`: recorded here; serve it
 * only if the replicated bucket also takes it as a first use. `full`: not
 * recorded here; the bucket decides. `replayed`, `before-start`: refuse.
 */
export type LocalNonceVerdict = 'first' | 'also-bucket' | 'replayed' | 'before-start' | 'full';

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
    // Ahead of this clock: the next process must find it (in the bucket).
    return created > now ? 'also-bucket' : 'first';
  }

  /**
   * Nonces found in the replicated bucket at start (`<keyid>.<nonce>` keys:
   * what the process before recorded there), kept as long as any signature
   * could still be accepted. Returns how many were loaded.
   */
  preload(keys: Iterable<string>, now = Date.now() / 1000): number {
    const gen = Math.ceil((now + this.#maxAge + this.#skew + 1) / GENERATION_S);
    let set = this.#gens.get(gen);
    if (!set) this.#gens.set(gen, (set = new Set()));
    let n = 0;
    for (const k of keys) {
      if (set.has(k)) continue;
      set.add(k);
      n++;
    }
    this.#size += n;
    return n;
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
