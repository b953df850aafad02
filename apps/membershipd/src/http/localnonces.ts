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
 * request is ever let through unrecorded. From then until no signature of
 * that time can be accepted, every first use is checked in the bucket too
 * (a nonce recorded only there must not pass later, once memory has room).
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
  /** Most nonces held at once (default 1,000,000: at most about 250 MB, measured 195-231 B each). */
  maxEntries?: number;
  /** When this store began, ms since the epoch (default: now). */
  startedAtMs?: number;
}

interface Generation {
  keys: Set<string>;
  /** The latest monotonic second (`performance.now()`) any of its nonces must be kept to. */
  monoUntil: number;
}

/** Monotonic seconds: a wall-clock step changes nothing here. */
const monoNow = () => performance.now() / 1000;

export class LocalNonces {
  readonly #maxAge: number;
  readonly #skew: number;
  readonly #max: number;
  /** Requests created before this second may predate the store. */
  readonly startSec: number;
  /** Generation (forget-after wall second / GENERATION_S) → its nonces. */
  readonly #gens = new Map<number, Generation>();
  #size = 0;
  /**
   * Until both (wall and monotonic seconds) have passed, a nonce not held
   * here may be in the bucket only (recorded there while memory was full,
   * or left out of a capped load): every first use is checked there too.
   */
  #bucketUntil = { wall: -Infinity, mono: -Infinity };

  constructor(o: LocalNoncesOptions) {
    this.#maxAge = o.maxAgeSec;
    this.#skew = o.skewSec;
    this.#max = o.maxEntries ?? 1_000_000;
    this.startSec = Math.ceil((o.startedAtMs ?? Date.now()) / 1000);
  }

  get size(): number {
    return this.#size;
  }

  /**
   * Records the first use of `(keyid, nonce)` of a verified signature with
   * these `created`/`expires` (seconds); `now` in wall seconds, `mono` in
   * monotonic seconds (a wall-clock step neither forgets a nonce early nor
   * keeps it for ever).
   */
  consume(
    keyid: string,
    nonce: string,
    created: number,
    expires: number,
    now = Date.now() / 1000,
    mono = monoNow()
  ): LocalNonceVerdict {
    if (created < this.startSec) return 'before-start';
    this.#prune(now, mono);
    const key = `${keyid}.${nonce}`;
    for (const g of this.#gens.values()) if (g.keys.has(key)) return 'replayed';
    if (this.#size >= this.#max) {
      this.#bucketWindow(now, mono);
      return 'full';
    }
    // Accepted at t only while t <= created + maxAge (+ skew on either
    // clock) and t < expires: forget after the later bound has passed, on
    // the wall clock and on the monotonic one.
    const forgetAt = Math.min(created + this.#maxAge, expires) + this.#skew + 1;
    this.#add(key, forgetAt, mono + Math.max(0, forgetAt - now));
    // Ahead of this clock: the next process must find it (in the bucket);
    // in a bucket window: it may be there already.
    return created > now || this.#inBucketWindow(now, mono) ? 'also-bucket' : 'first';
  }

  /**
   * Nonces found in the replicated bucket at start (`<keyid>.<nonce>` keys:
   * what the process before recorded there), kept as long as any signature
   * could still be accepted. At most the cap is held; past it, every first
   * use is checked in the bucket as well for as long. Returns how many were
   * loaded.
   */
  preload(keys: Iterable<string>, now = Date.now() / 1000, mono = monoNow()): number {
    const span = this.#maxAge + this.#skew + 1;
    let n = 0;
    for (const k of keys) {
      if (this.#size >= this.#max) {
        this.#bucketWindow(now, mono);
        break;
      }
      if (this.#add(k, now + span, mono + span)) n++;
    }
    return n;
  }

  #add(key: string, forgetAt: number, monoUntil: number): boolean {
    const gen = Math.ceil(forgetAt / GENERATION_S);
    let g = this.#gens.get(gen);
    if (!g) this.#gens.set(gen, (g = { keys: new Set(), monoUntil }));
    if (g.keys.has(key)) return false;
    g.keys.add(key);
    g.monoUntil = Math.max(g.monoUntil, monoUntil);
    this.#size++;
    return true;
  }

  /**
   * What the bucket holds is not in memory (the load at start failed):
   * every first use is checked there too, for as long as a signature made
   * before now can be accepted.
   */
  assumeBucketHolds(now = Date.now() / 1000, mono = monoNow()): void {
    this.#bucketWindow(now, mono);
  }

  #bucketWindow(now: number, mono: number): void {
    const span = this.#maxAge + 2 * this.#skew + 1;
    this.#bucketUntil = {
      wall: Math.max(this.#bucketUntil.wall, now + span),
      mono: Math.max(this.#bucketUntil.mono, mono + span),
    };
  }

  #inBucketWindow(now: number, mono: number): boolean {
    return now <= this.#bucketUntil.wall || mono <= this.#bucketUntil.mono;
  }

  /** Drops every generation whose nonces can no longer be accepted, by both clocks. */
  #prune(now: number, mono: number): void {
    for (const [gen, g] of this.#gens) {
      if (gen * GENERATION_S < now && g.monoUntil < mono) {
        this.#size -= g.keys.size;
        this.#gens.delete(gen);
      }
    }
  }
}
