/**
 * How many refusals of one signer the audit log takes. A refused request
 * costs its sender one signature and nothing else, while its audit record
 * is a write into the control account that no one may delete: without a
 * budget, any member could grow the audit log without bound. Each signer
 * gets `burst` records at once and `perMinute` more a minute; beyond that
 * refusals are counted, and the next record of that signer carries the
 * count (`suppressed`), so the log still says how many were left out.
 * State changes (`ok`) are never budgeted: they are always on the record.
 */
export class DenialBudget {
  readonly #burst: number;
  readonly #perMs: number;
  readonly #maxSigners: number;
  readonly #buckets = new Map<string, { tokens: number; at: number; suppressed: number }>();
  /** Refusals left out of the log so far (all signers). */
  suppressedTotal = 0;

  constructor(o: { burst?: number; perMinute?: number; maxSigners?: number } = {}) {
    this.#burst = o.burst ?? 20;
    this.#perMs = (o.perMinute ?? 20) / 60_000;
    this.#maxSigners = o.maxSigners ?? 10_000;
  }

  /**
   * Whether this signer's refusal goes on the record now. When it does,
   * `suppressed` is how many of its refusals were left out since its last
   * record; when it does not, null.
   */
  take(signer: string, now = Date.now()): { suppressed: number } | null {
    let b = this.#buckets.get(signer);
    if (!b) {
      // Bounded memory: forgetting every signer only hands out fresh bursts.
      if (this.#buckets.size >= this.#maxSigners) this.#buckets.clear();
      b = { tokens: this.#burst, at: now, suppressed: 0 };
      this.#buckets.set(signer, b);
    }
    b.tokens = Math.min(this.#burst, b.tokens + (now - b.at) * this.#perMs);
    b.at = now;
    if (b.tokens < 1) {
      b.suppressed++;
      this.suppressedTotal++;
      return null;
    }
    b.tokens--;
    const suppressed = b.suppressed;
    b.suppressed = 0;
    return { suppressed };
  }
}

/**
 * How many changes (signed POST, PUT, DELETE) one signer that is not an
 * admin may make: `burst` at once and `perMinute` more a minute. Every change
 * is an audit record no one may delete; without this, a member creating and
 * deleting a room in a loop grew the audit log by ~2.6 GB a day. Beyond it
 * the request is 429 `RATE_LIMITED` with Retry-After (and, as a refusal,
 * within the signer's DenialBudget). Admins are not limited.
 */
export class ChangeBudget {
  readonly #burst: number;
  readonly #perMs: number;
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(o: { burst?: number; perMinute: number }) {
    this.#perMs = o.perMinute / 60_000;
    this.#burst = o.burst ?? o.perMinute;
  }

  /** 0 when the change may go ahead now; else how long (ms) until it may. */
  take(signer: string, now = Date.now()): number {
    let b = this.#buckets.get(signer);
    if (!b) {
      if (this.#buckets.size >= 10_000) this.#buckets.clear();
      b = { tokens: this.#burst, at: now };
      this.#buckets.set(signer, b);
    }
    b.tokens = Math.min(this.#burst, b.tokens + (now - b.at) * this.#perMs);
    b.at = now;
    if (b.tokens < 1) return Math.ceil((1 - b.tokens) / this.#perMs);
    b.tokens--;
    return 0;
  }
}
