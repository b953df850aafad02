/**
 * Keeps a flood of refusals from becoming a flood of log lines. Per key (a
 * source address, a kind of refusal): the first event of an interval is
 * logged as it is, the rest are counted, and the count is logged once when
 * the interval is over ("N more like this"). Memory is bounded: past
 * `maxKeys` sources, new ones share one overflow key.
 */
export class LogThrottle {
  readonly #intervalMs: number;
  readonly #maxKeys: number;
  readonly #summary: (key: string, count: number, intervalMs: number) => void;
  readonly #entries = new Map<string, { since: number; suppressed: number }>();
  readonly #timer: NodeJS.Timeout;
  /** Events counted instead of logged, all keys (tests, metrics). */
  suppressedTotal = 0;

  constructor(o: {
    summary: (key: string, count: number, intervalMs: number) => void;
    intervalMs?: number;
    maxKeys?: number;
  }) {
    this.#summary = o.summary;
    this.#intervalMs = o.intervalMs ?? 10_000;
    this.#maxKeys = o.maxKeys ?? 1_000;
    this.#timer = setInterval(() => this.flush(), this.#intervalMs);
    this.#timer.unref();
  }

  /**
   * True when this is the first event of `key` in its interval (log it at
   * its level); false when it is counted (log it at debug at most).
   */
  hit(key: string, now = Date.now()): boolean {
    if (!this.#entries.has(key) && this.#entries.size >= this.#maxKeys) key = '*';
    const e = this.#entries.get(key);
    if (e && now - e.since < this.#intervalMs) {
      e.suppressed++;
      this.suppressedTotal++;
      return false;
    }
    if (e && e.suppressed > 0) this.#summary(key, e.suppressed, this.#intervalMs);
    this.#entries.set(key, { since: now, suppressed: 0 });
    return true;
  }

  /** Logs the counts of intervals that are over, and forgets quiet keys. */
  flush(now = Date.now()): void {
    for (const [key, e] of this.#entries) {
      if (now - e.since < this.#intervalMs) continue;
      if (e.suppressed > 0) this.#summary(key, e.suppressed, this.#intervalMs);
      this.#entries.delete(key);
    }
  }

  stop(): void {
    clearInterval(this.#timer);
    this.flush(Number.POSITIVE_INFINITY);
  }
}
