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
  readonly #rate: ChangeBudget;
  readonly #maxSigners: number;
  readonly #suppressed = new Map<string, number>();
  /** Refusals left out of the log so far (all signers). */
  suppressedTotal = 0;

  constructor(o: { burst?: number; perMinute?: number; maxSigners?: number } = {}) {
    this.#maxSigners = o.maxSigners ?? 10_000;
    this.#rate = new ChangeBudget({
      burst: o.burst ?? 20,
      perMinute: o.perMinute ?? 20,
      maxKeys: this.#maxSigners,
    });
  }

  /**
   * Whether this signer's refusal goes on the record now. When it does,
   * `suppressed` is how many of its refusals were left out since its last
   * record; when it does not, null.
   */
  take(signer: string, now = Date.now()): { suppressed: number } | null {
    if (this.#rate.take(signer, now) > 0) {
      // Bounded memory: forgetting counts only loses them from one record.
      if (!this.#suppressed.has(signer) && this.#suppressed.size >= this.#maxSigners)
        this.#suppressed.clear();
      this.#suppressed.set(signer, (this.#suppressed.get(signer) ?? 0) + 1);
      this.suppressedTotal++;
      return null;
    }
    const suppressed = this.#suppressed.get(signer) ?? 0;
    this.#suppressed.delete(signer);
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
  readonly #maxKeys: number;
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(o: { burst?: number; perMinute: number; maxKeys?: number }) {
    this.#perMs = o.perMinute / 60_000;
    this.#burst = o.burst ?? o.perMinute;
    this.#maxKeys = o.maxKeys ?? 10_000;
  }

  /** 0 when the change may go ahead now; else how long (ms) until it may. */
  take(signer: string, now = Date.now()): number {
    let b = this.#buckets.get(signer);
    if (!b) {
      // Bounded memory: forgetting every signer only hands out fresh bursts.
      if (this.#buckets.size >= this.#maxKeys) this.#buckets.clear();
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
