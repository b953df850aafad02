import type { Metrics } from '../metrics.js';

/**
 * Auth-failure damping by source address: after `limit` failed
 * authentications from one address within `windowMs`, that address's
 * failures get 429 until its oldest failure in the window ages out. Only
 * failures are gated (the caller verifies first): a correctly signed
 * request is served from a damped address. Only the address is counted,
 * never the key id a request names: anyone can name any key, and counting
 * those would let a stranger lock an admin out.
 */
export interface DampingOptions {
  /** Failures per window that trip damping; 0 disables it. */
  limit: number;
  windowMs: number;
  /** Addresses tracked at most (the oldest are forgotten first). */
  maxTracked?: number;
}

export interface DampingStats {
  /** Authentication failures counted. */
  failures: number;
  /** Times an address crossed the limit. */
  tripped: number;
  /** Failed requests answered 429 instead of 401. */
  refused: number;
  /** Addresses currently tracked. */
  tracked: number;
}

export class AuthDamper {
  readonly limit: number;
  readonly windowMs: number;
  readonly #maxTracked: number;
  readonly #fails = new Map<string, number[]>();
  #stats = { failures: 0, tripped: 0, refused: 0 };
  readonly #metrics: Pick<Metrics, 'damping'> | undefined;

  /**
   * Every decision (a refusal, an address tripping) is counted here, in
   * `stats()` and in `metrics`; the caller logs each one.
   */
  constructor(o: DampingOptions, metrics?: Pick<Metrics, 'damping'>) {
    this.#metrics = metrics;
    this.limit = o.limit;
    this.windowMs = o.windowMs;
    this.#maxTracked = o.maxTracked ?? 10_000;
  }

  get enabled(): boolean {
    return this.limit > 0 && this.windowMs > 0;
  }

  #recent(addr: string, now: number): number[] {
    const ts = this.#fails.get(addr);
    if (!ts) return [];
    while (ts.length && ts[0]! <= now - this.windowMs) ts.shift();
    if (!ts.length) this.#fails.delete(addr);
    return ts;
  }

  /** Milliseconds until `addr` may try again; 0 when it is not damped. Counts a refusal. */
  retryAfterMs(addr: string, now = Date.now()): number {
    if (!this.enabled) return 0;
    const ts = this.#recent(addr, now);
    if (ts.length < this.limit) return 0;
    this.#stats.refused++;
    this.#metrics?.damping('blocked');
    return Math.max(1, ts[ts.length - this.limit]! + this.windowMs - now);
  }

  /** Records one failure from `addr`; true when this one crossed the limit. */
  fail(addr: string, now = Date.now()): boolean {
    if (!this.enabled) return false;
    this.#stats.failures++;
    const ts = this.#recent(addr, now);
    if (!ts.length) {
      if (this.#fails.size >= this.#maxTracked) {
        const oldest = this.#fails.keys().next().value;
        if (oldest !== undefined) this.#fails.delete(oldest);
      }
      this.#fails.set(addr, ts);
    }
    ts.push(now);
    // Keep only what can matter for the decision.
    if (ts.length > this.limit) ts.splice(0, ts.length - this.limit);
    const tripped = ts.length === this.limit;
    if (tripped) {
      this.#stats.tripped++;
      this.#metrics?.damping('tripped');
    }
    return tripped;
  }

  stats(): DampingStats {
    return { ...this.#stats, tracked: this.#fails.size };
  }
}
