import type { NatsConnection } from 'nats';
import type { AuditRecord } from '@sealbus/protocol';
/** The subset of a structured logger (pino fits) the store reports through. */
export interface StoreLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface OpenStoreOptions {
  /** Gives up waiting for the store (a signal to stop during start-up): the open throws its reason. */
  signal?: AbortSignal;
  /**
   * The connection in the users' account (APP), where room streams and
   * members' consumers live; the store's own connection holds the control
   * state. Omitted, both are the same connection (tests, single-account tools).
   */
  app?: NatsConnection;
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
  /**
   * Size cap (`max_bytes`, discard-new) of every room stream created through
   * this store; default `DEFAULT_ROOM_MAX_BYTES` (256 MiB).
   */
  roomMaxBytes?: number;
  logger?: StoreLogger;
  /**
   * Told about every KV get/put/create/update/delete/purge the store makes
   * once open (latency metrics). Called synchronously after the operation
   * settles; it must be cheap, and whatever it throws is swallowed.
   */
  observe?: KvObserver;
}

/**
 * Which KV operations `OpenStoreOptions.observe` is told about: the single
 * key calls, plus `keys` (a key listing from the subject index) and `scan`
 * (every value under a filter, e.g. the auth callout's membership read).
 */
export type KvOperation =
  'get' | 'put' | 'create' | 'update' | 'delete' | 'purge' | 'keys' | 'scan';

/** One KV operation as the store made it. */
export interface KvObservation {
  /** The bucket's name, e.g. `sealbus_users`. */
  readonly bucket: string;
  readonly op: KvOperation;
  /** Wall time from the call to its settling. */
  readonly seconds: number;
  /**
   * False when the operation threw, which includes a create-only write that
   * found the key taken and a compare-and-set that lost its race.
   */
  readonly ok: boolean;
}

export type KvObserver = (e: KvObservation) => void;

/** Replication state of a bucket, as JetStream reports it. */
export interface BucketReplication {
  readonly bucket: string;
  readonly replicas: number;
  readonly leader: string | null;
  /** Replicas (leader included) that are current. */
  readonly current: number;
  readonly values: number;
  /** Replicas that are not current: name, entries behind, last heard from (ms ago), offline. */
  readonly behind?: ReadonlyArray<{
    name: string;
    lag: number;
    active_ms: number;
    offline: boolean;
  }>;
}

/** How `AuditLog.append` tries. */
export interface AuditAppendOptions {
  /**
   * Keep retrying an append the store did not answer (a leader election)
   * this long, under the same message id so it lands once; default 0: one
   * attempt.
   */
  retryForMs?: number;
}

/**
 * Filters of `AuditLog.query`; all optional, combined with AND. Times are
 * compared with each record's own `time`.
 */
export interface AuditQuery {
  /** The record's actor, a sign_pub (64 hex). */
  actor?: string;
  /**
   * An action (`user.add`), or every action under a prefix (`room.*`
   * matches `room.create` and `room.member.add`). Filtered server-side by
   * subject, so records of other actions are never transferred.
   */
  action?: string;
  /** Records at or after this time (epoch ms). */
  since?: number;
  /** Records at or before this time (epoch ms). */
  until?: number;
  outcome?: AuditRecord['outcome'];
  /** How the change came in: a signed request (`http`) or the node's CLI (`cli`). */
  via?: 'http' | 'cli';
  /** At most this many records, the oldest matching ones (default 100). */
  limit?: number;
  /** Keep the newest `limit` matches instead of the oldest (the whole range is scanned). */
  newest?: boolean;
  /** Give up (UNAVAILABLE) when the scan is not done by then (epoch ms). */
  deadline?: number;
}

export interface AuditQueryResult<R> {
  /** The matching records, oldest first. */
  records: R[];
  /** True when more records match than `limit` let through. */
  truncated: boolean;
}
