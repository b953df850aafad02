/** The subset of a structured logger (pino fits) the store reports through. */
export interface StoreLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface OpenStoreOptions {
  /** JetStream replicas for new buckets: 1 on a single node, 3 in a cluster. */
  replicas?: number;
  /**
   * Total time to keep retrying while opening. A cold cluster answers
   * JetStream only after electing a meta leader, so early calls time out or
   * fail with 503 / "no suitable peers"; that is waited out, not fatal.
   */
  bootstrapBudgetMs?: number;
  /** Timeout of each JetStream call while opening (short, so retries are prompt). */
  attemptTimeoutMs?: number;
  /** Timeout of each JetStream call once open. */
  opTimeoutMs?: number;
  /**
   * Never create buckets; a missing one is NOT_INITIALIZED. For tools that
   * work on a node's existing store (`membershipd user ...`).
   */
  bindOnly?: boolean;
  /** Per-attempt timeout on the request hot path (user lookup, nonce create; default 1 s). */
  fastAttemptTimeoutMs?: number;
  /** How long the hot path retries while the store is unavailable (default 8 s). */
  fastBudgetMs?: number;
  /** Max age of request nonces (bucket TTL) when creating the nonces bucket. */
  nonceTtlMs?: number;
  logger?: StoreLogger;
}

/** Replication state of a bucket, as JetStream reports it. */
export interface BucketReplication {
  readonly bucket: string;
  readonly replicas: number;
  readonly leader: string | null;
  /** Replicas (leader included) that are current. */
  readonly current: number;
  readonly values: number;
}
