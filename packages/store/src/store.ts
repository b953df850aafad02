import { randomBytes } from 'node:crypto';
import type { JetStreamClient, JetStreamManager, KV, NatsConnection } from 'nats';
import {
  userIsActiveAdmin,
  type NewUser,
  type SetMyKeys,
  type UserRecord,
} from '@sealbus/protocol';
import { bucketSpecs, type BucketId, type BucketSpec } from './buckets.js';
import { AUDIT_STREAM, AuditLog, auditStreamConfig } from './audit.js';
import { StoreError, isStreamNotFound, toStoreError } from './errors.js';
import { createOnly, decodeJson, encodeJson, getLive, observeKv } from './kv.js';
import { Rooms, readMembership, readRoom, scanMemberships } from './rooms.js';
import { RoomBlobs } from './blobs.js';
import { MemberCache } from './membercache.js';
import { UserCache } from './usercache.js';
import type { MemberRecord, RoomRecord } from '@sealbus/protocol';
import type { BucketReplication, OpenStoreOptions, StoreLogger } from './types.js';
import * as users from './users.js';
import type { NatsKeyLookup } from './users.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits `ms`, or less when `signal` aborts (then throws its reason). */
async function abortableSleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (!signal) {
    await sleep(ms);
    return;
  }
  signal.throwIfAborted();
  await new Promise<void>((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal!.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
  signal.throwIfAborted();
}

function retryable(err: unknown): boolean {
  if (err instanceof StoreError) return err.code === 'UNAVAILABLE';
  return !/permission/i.test((err as Error)?.message ?? '');
}

/**
 * Runs `attempt` until it succeeds or the budget is spent (exported for
 * start-up steps that follow opening, such as bootstrapping admin #0). Backoff starts at
 * 100 ms and caps at 1 s, so a cluster that elects its leader after 3 s is
 * used within ~1 s of being ready.
 */
export async function withBootstrapRetry<T>(
  what: string,
  deadline: number,
  logger: StoreLogger | undefined,
  attempt: () => Promise<T>,
  signal?: AbortSignal
): Promise<T> {
  for (let n = 1; ; n++) {
    signal?.throwIfAborted();
    try {
      return await attempt();
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      if (!retryable(err)) throw toStoreError(err, what);
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new StoreError(
          'UNAVAILABLE',
          `${what}: JetStream did not answer within the bootstrap budget (${(err as Error).message}); ` +
            'a cluster needs a quorum of its nodes up',
          { cause: err }
        );
      }
      logger?.info(
        { what, attempt: n, error: (err as Error).message },
        'store not ready yet, retrying'
      );
      await abortableSleep(Math.min(left, 100 * 2 ** Math.min(n - 1, 3)), signal);
    }
  }
}

async function openBucket(
  boot: JetStreamClient,
  js: JetStreamClient,
  spec: BucketSpec,
  options: OpenStoreOptions,
  deadline: number
): Promise<KV> {
  const replicas = options.replicas ?? 1;
  return withBootstrapRetry(
    `open bucket ${spec.name}`,
    deadline,
    options.logger,
    async () => {
      const jsm = await boot.jetstreamManager(false);
      let streamReplicas = replicas;
      try {
        const info = await jsm.streams.info(`KV_${spec.name}`);
        streamReplicas = info.config.num_replicas;
        if (info.config.num_replicas !== replicas) {
          options.logger?.warn(
            { bucket: spec.name, have: info.config.num_replicas, want: replicas },
            'bucket exists with a different replica count; keeping it as it is'
          );
        }
      } catch (err) {
        if (!isStreamNotFound(err)) throw err;
        if (options.bindOnly) {
          throw new StoreError(
            'NOT_INITIALIZED',
            `bucket ${spec.name} does not exist: is this a node whose membershipd has started at least once?`
          );
        }
        await boot.views.kv(spec.name, {
          history: spec.history,
          replicas,
          description: spec.description,
          ...(spec.ttlMs ? { ttl: spec.ttlMs } : {}),
        });
        options.logger?.info({ bucket: spec.name, replicas }, 'created bucket');
      }
      // With replicas, reads go to the stream leader (no direct get: a follower
      // may lag), so a read after a write on any node sees that write. With a
      // single replica the one copy is the leader, and a direct get (cheaper:
      // no JS API envelope) is just as consistent.
      return js.views.kv(spec.name, { bindOnly: true, allow_direct: streamReplicas === 1 });
    },
    options.signal
  );
}

async function openAuditStream(
  boot: JetStreamClient,
  options: OpenStoreOptions,
  deadline: number
): Promise<void> {
  const replicas = options.replicas ?? 1;
  await withBootstrapRetry(
    `open stream ${AUDIT_STREAM}`,
    deadline,
    options.logger,
    async () => {
      const jsm = await boot.jetstreamManager(false);
      try {
        await jsm.streams.info(AUDIT_STREAM);
      } catch (err) {
        if (!isStreamNotFound(err)) throw err;
        if (options.bindOnly) {
          throw new StoreError(
            'NOT_INITIALIZED',
            `stream ${AUDIT_STREAM} does not exist: has membershipd started here?`
          );
        }
        await jsm.streams.add(auditStreamConfig(replicas));
        options.logger?.info({ stream: AUDIT_STREAM, replicas }, 'created stream');
      }
    },
    options.signal
  );
}

/**
 * Membership state in JetStream KV. One instance per NATS connection; the
 * connection stays the caller's to close.
 */
/** Hot-path reads: give up at `deadline` (epoch ms) instead of the default budget. */
export interface HotPathOptions {
  deadline?: number;
}

interface FastViews {
  users: KV;
  rooms: KV;
  natsKeys: KV;
  members: KV;
  nonces: KV;
  budgetMs: number;
  scanTimeoutMs: number;
}

export class MembershipStore {
  readonly replicas: number;
  /** Rooms, memberships and sealed room keys. */
  readonly rooms: Rooms;
  /** The append-only audit log. */
  readonly audit: AuditLog;
  /** Rooms' blobs (opaque bytes, one object store per room in account APP, under its storage cap). */
  readonly blobs: RoomBlobs;
  readonly #nc: NatsConnection;
  readonly #buckets: Readonly<Record<BucketId, KV>>;
  readonly #specs: Readonly<Record<BucketId, BucketSpec>>;
  readonly #attemptTimeoutMs: number;
  /** The request hot path (user lookup, nonce): short attempts, retried promptly. */
  readonly #fast: FastViews;
  readonly #jsm: JetStreamManager;

  private constructor(
    nc: NatsConnection,
    buckets: Record<BucketId, KV>,
    specs: Record<BucketId, BucketSpec>,
    replicas: number,
    attemptTimeoutMs: number,
    js: JetStreamClient,
    jsm: JetStreamManager,
    appJsm: JetStreamManager,
    appJs: JetStreamClient,
    fast: FastViews,
    roomMaxBytes: number | undefined
  ) {
    this.#nc = nc;
    this.#jsm = jsm;
    this.#fast = fast;
    this.rooms = new Rooms(buckets, appJsm, replicas, roomMaxBytes);
    this.audit = new AuditLog(js, jsm);
    // Blobs live beside the room streams in the users' account, under its
    // storage cap (--app-max-bytes): no amount of uploads can fill the space
    // the control state needs. Users have no JetStream rights there.
    this.blobs = new RoomBlobs(appJs, appJsm, replicas);
    this.#buckets = Object.freeze(buckets);
    this.#specs = specs;
    this.replicas = replicas;
    this.#attemptTimeoutMs = attemptTimeoutMs;
  }

  /**
   * Opens (creating unless `bindOnly`) every bucket, retrying inside the
   * bootstrap budget.
   *
   * @example
   * const store = await MembershipStore.open(nc, { replicas: 3 });
   */
  static async open(nc: NatsConnection, options: OpenStoreOptions = {}): Promise<MembershipStore> {
    const attemptTimeoutMs = options.attemptTimeoutMs ?? 2_000;
    const deadline = Date.now() + (options.bootstrapBudgetMs ?? 30_000);
    const boot = nc.jetstream({ timeout: attemptTimeoutMs, checkAPI: false });
    const js = nc.jetstream({ timeout: options.opTimeoutMs ?? 5_000, checkAPI: false });
    const specs = bucketSpecs(options.nonceTtlMs);
    const buckets = {} as Record<BucketId, KV>;
    for (const id of Object.keys(specs) as BucketId[]) {
      buckets[id] = observeKv(
        await openBucket(boot, js, specs[id], options, deadline),
        specs[id].name,
        options.observe
      );
    }
    await openAuditStream(boot, options, deadline);
    // Existing streams answer INFO before their own leaders are elected (a
    // node rejoining a cluster): wait until reads and create-only writes
    // work, so the first real request does not meet a 503.
    await withBootstrapRetry(
      'wait for the buckets to serve',
      deadline,
      options.logger,
      async () => {
        const probeJs = nc.jetstream({ timeout: attemptTimeoutMs, checkAPI: false });
        for (const id of ['users', 'nonces'] as const) {
          const kv = await probeJs.views.kv(specs[id].name, {
            bindOnly: true,
            allow_direct: false,
          });
          await kv.get('__sealbus_probe').catch((err: unknown) => {
            throw toStoreError(err, `read ${specs[id].name}`);
          });
        }
      },
      options.signal
    );
    const jsm = await js.jetstreamManager(false);
    // Room streams live in the users' account, the rest in the control account.
    const appJsm = options.app
      ? await options.app.jetstreamManager({
          timeout: options.opTimeoutMs ?? 5_000,
          checkAPI: false,
        })
      : jsm;
    // When a stream leader dies, a request caught on it would wait the whole
    // op timeout; short attempts retried until a budget move on to the new
    // leader as soon as it is elected.
    const fastJs = nc.jetstream({
      timeout: options.fastAttemptTimeoutMs ?? 1_000,
      checkAPI: false,
    });
    const direct = (options.replicas ?? 1) === 1;
    const fastView = async (id: 'users' | 'rooms' | 'natsKeys' | 'members' | 'nonces') =>
      observeKv(
        await fastJs.views.kv(specs[id].name, { bindOnly: true, allow_direct: direct }),
        specs[id].name,
        options.observe
      );
    const fast = {
      users: await fastView('users'),
      rooms: await fastView('rooms'),
      natsKeys: await fastView('natsKeys'),
      members: await fastView('members'),
      nonces: await fastView('nonces'),
      budgetMs: options.fastBudgetMs ?? 8_000,
      scanTimeoutMs: Math.max(3_000, 2 * (options.fastAttemptTimeoutMs ?? 1_000)),
    };
    return new MembershipStore(
      nc,
      buckets,
      specs,
      options.replicas ?? 1,
      attemptTimeoutMs,
      js,
      jsm,
      appJsm,
      options.app
        ? options.app.jetstream({ timeout: options.opTimeoutMs ?? 5_000, checkAPI: false })
        : js,
      fast,
      options.roomMaxBytes
    );
  }

  /** The raw bucket, for the packages that build on the store (rooms, nonces). */
  bucket(id: BucketId): KV {
    return this.#buckets[id];
  }

  /**
   * Registers a user (create-only). A token (`public`) or a `binding` is
   * verified first (`CryptoError` BAD_TOKEN / BAD_BINDING) and its NATS key
   * indexed in `sealbus_nats_keys` before the row is written.
   */
  addUser(input: NewUser, now?: Date): Promise<UserRecord> {
    return this.#userWrite(users.addUser(this.#buckets.users, this.#buckets.natsKeys, input, now));
  }

  /**
   * A user's own keys and binding (`PUT /me/keys`): verified against the
   * record's sign_pub, indexed, idempotent; a different kex_pub or nats_pub
   * than one already registered is a CONFLICT.
   */
  setUserKeys(signPub: string, keys: SetMyKeys): Promise<{ user: UserRecord; changed: boolean }> {
    return this.#userWrite(
      users.setUserKeys(this.#buckets.users, this.#buckets.natsKeys, signPub, keys)
    );
  }

  /**
   * The auth callout's read: who presents this NATS key (hex of the raw
   * Ed25519 key), in O(1) reads; rides out a leader election like getUser.
   * From the user cache when one runs and was proved current within its
   * bound (as {@link userForRequest}), else from the store.
   */
  userByNatsKey(natsPub: string, o: HotPathOptions = {}): Promise<NatsKeyLookup> {
    const cached = this.#userCache?.lookupNatsKey(natsPub);
    if (cached !== undefined) return Promise.resolve(cached);
    return this.#retryUnavailable(
      () => users.userByNatsKey(this.#fast.users, this.#fast.natsKeys, natsPub),
      o.deadline
    );
  }

  /** Re-indexes every bound user's NATS key (restore of an archive made before the index). */
  rebuildNatsKeyIndex(): Promise<number> {
    return this.#userWrite(users.rebuildNatsKeyIndex(this.#buckets.users, this.#buckets.natsKeys));
  }

  /** Retries an operation while the store is unavailable, until the hot-path budget is spent. */
  async #retryUnavailable<T>(fn: () => Promise<T>, until?: number): Promise<T> {
    const deadline = until ?? Date.now() + this.#fast.budgetMs;
    for (let backoff = 50; ; backoff = Math.min(500, backoff * 2)) {
      try {
        return await fn();
      } catch (err) {
        if (
          !(err instanceof StoreError) ||
          err.code !== 'UNAVAILABLE' ||
          Date.now() + backoff > deadline
        )
          throw err;
        await sleep(backoff);
      }
    }
  }

  /**
   * The append service's read of a writer's grant: the room and the
   * writer's membership, in short attempts retried until the deadline, so
   * an append rides out a leader election of the rooms or members stream
   * as the callout's reads do (a whole op timeout caught on the dead
   * leader added seconds to a failover).
   */
  appendGrantReads(
    roomId: string,
    signPub: string,
    o: HotPathOptions = {}
  ): Promise<{ room: RoomRecord | null; member: MemberRecord | null }> {
    return this.#retryUnavailable(async () => {
      const room = await readRoom(this.#fast.rooms, roomId);
      const member = room ? await readMembership(this.#fast.members, roomId, signPub) : null;
      return { room, member };
    }, o.deadline);
  }

  /** A user by sign_pub; rides out a stream leader election (see `fastBudgetMs`). */
  getUser(signPub: string, o: HotPathOptions = {}): Promise<UserRecord | null> {
    return this.#retryUnavailable(() => users.getUser(this.#fast.users, signPub), o.deadline);
  }

  #memberCache: MemberCache | undefined;
  #userCache: UserCache | undefined;

  /**
   * A write to the users bucket: once it settles (acknowledged, or failed
   * and perhaps applied), this node's user cache reads the store until it
   * has caught up, so a revocation through this node is refused by it at once.
   */
  #userWrite<T>(p: Promise<T>): Promise<T> {
    return p.finally(() => this.#userCache?.invalidate());
  }

  /**
   * Keeps every user record in memory from now on (a watch of the users
   * bucket proved current by a heartbeat), for {@link userForRequest}. Stop
   * it with the returned cache's `stop()`.
   */
  startUserCache(onError: (err: Error) => void): UserCache {
    if (this.#userCache) return this.#userCache;
    const cache = new UserCache(
      this.#buckets.users,
      this.#jsm,
      this.#specs.users.name,
      onError,
      undefined,
      { kv: this.#buckets.natsKeys, bucket: this.#specs.natsKeys.name }
    );
    this.#userCache = cache;
    cache.start();
    return cache;
  }

  /**
   * The signer of a request: from the user cache when one runs and was
   * proved current within its bound (`USER_CACHE_BOUND_MS`), else as
   * {@link getUser}.
   */
  userForRequest(signPub: string, o: HotPathOptions = {}): Promise<UserRecord | null> {
    const cached = this.#userCache?.lookup(signPub);
    return cached !== undefined ? Promise.resolve(cached) : this.getUser(signPub, o);
  }

  /**
   * Keeps every membership in memory from now on (a watch of the members
   * bucket), so that `membershipsOf` costs the same whatever the user's room
   * count; it still answers as of a moment after it was called (see
   * {@link MemberCache}), and scans whenever the cache cannot. Stop it with
   * the returned cache's `stop()`.
   */
  startMemberCache(onError: (err: Error) => void): MemberCache {
    if (this.#memberCache) return this.#memberCache;
    const cache = new MemberCache(
      this.#buckets.members,
      this.#jsm,
      this.#specs.members.name,
      onError
    );
    this.#memberCache = cache;
    cache.start();
    return cache;
  }

  /**
   * Every membership of a user (the auth callout's read): from the member
   * cache when one runs and is current, else short scans,
   * retried while a stream leader is being elected, until the deadline.
   */
  async membershipsOf(signPub: string, o: HotPathOptions = {}): Promise<readonly MemberRecord[]> {
    const cached = await this.#memberCache?.membershipsOf(signPub);
    if (cached) return cached;
    return this.#retryUnavailable(
      () => scanMemberships(this.#fast.members, signPub, this.#fast.scanTimeoutMs),
      o.deadline
    );
  }

  listUsers(): Promise<UserRecord[]> {
    return users.listUsers(this.#buckets.users);
  }

  revokeUser(signPub: string, now?: Date): Promise<{ user: UserRecord; changed: boolean }> {
    return this.#userWrite(users.revokeUser(this.#buckets.users, signPub, now));
  }

  /** True only for a registered, active key. */
  async isAuthorized(signPub: string): Promise<boolean> {
    return users.userIsActive(await this.getUser(signPub));
  }

  /**
   * Records the first use of a request nonce (create-only; the bucket's max
   * age bounds it). False means the nonce was used before: a replay. A store
   * that cannot answer throws UNAVAILABLE, so callers fail closed.
   */
  async consumeNonce(keyid: string, nonce: string, now = new Date()): Promise<boolean> {
    if (!/^[0-9a-f]{64}$/.test(keyid) || !/^[A-Za-z0-9_-]{1,128}$/.test(nonce)) {
      throw new StoreError('INVALID', 'nonce key must be <64 hex>.<base64url>');
    }
    const key = `${keyid}.${nonce}`;
    // A retry after an attempt whose answer was lost may find its own write:
    // the token tells our earlier attempt apart from a replay.
    const token = randomBytes(12).toString('base64url');
    let attempts = 0;
    return this.#retryUnavailable(async () => {
      attempts++;
      const rev = await createOnly(
        this.#fast.nonces,
        key,
        encodeJson({ at: now.toISOString(), token }),
        'record nonce'
      );
      if (rev !== null) return true;
      if (attempts === 1) return false;
      const e = await getLive(this.#fast.nonces, key, 'record nonce');
      return e !== null && decodeJson(e, (r) => r as { token?: string }).token === token;
    });
  }

  /** Every `<keyid>.<nonce>` recorded in the nonces bucket now (a single node's start). */
  async nonceKeys(): Promise<string[]> {
    const out: string[] = [];
    try {
      for await (const k of await this.#buckets.nonces.keys())
        if (/^[0-9a-f]{64}\./.test(k)) out.push(k);
    } catch (err) {
      throw toStoreError(err, 'list nonces');
    }
    return out;
  }

  /** Some admin can act now (active and unexpired): admin #0 is bootstrapped only when none can. */
  async hasActiveAdmin(now = Date.now()): Promise<boolean> {
    return (await this.listUsers()).some((u) => userIsActiveAdmin(u, now));
  }

  /**
   * Writes one small record (`probe.<name>` in the nonces bucket, expiring
   * with it), once: whether the store can take a write right now. Health
   * uses it to tell a full disk from a working node. Throws a StoreError.
   */
  async probeWrite(name: string): Promise<void> {
    const key = `probe.${name.replace(/[^A-Za-z0-9_-]/g, '_')}`;
    try {
      await this.#fast.nonces.put(key, encodeJson({ at: new Date().toISOString() }));
    } catch (err) {
      throw toStoreError(err, 'probe write');
    }
  }

  /**
   * Replication state of a bucket (leader, replicas current/total), with a
   * short timeout: used by health checks and printed after CLI writes.
   */
  async replication(id: BucketId = 'users'): Promise<BucketReplication> {
    const name = this.#specs[id].name;
    try {
      const jsm = await this.#nc.jetstreamManager({
        timeout: this.#attemptTimeoutMs,
        checkAPI: false,
      });
      const info = await jsm.streams.info(`KV_${name}`);
      const replicas = info.cluster?.replicas ?? [];
      return {
        bucket: name,
        replicas: info.config.num_replicas,
        leader: info.cluster?.leader ?? null,
        current:
          (info.cluster?.leader ? 1 : 0) + replicas.filter((r) => r.current && !r.offline).length,
        values: info.state.messages,
        behind: replicas
          .filter((r) => !r.current || r.offline)
          .map((r) => ({
            name: r.name,
            lag: r.lag ?? 0,
            active_ms: Math.round(nanosToMs(r.active)),
            offline: r.offline === true,
          })),
      };
    } catch (err) {
      throw toStoreError(err, `status of ${name}`);
    }
  }
}

/** A JetStream duration (nanoseconds) in milliseconds. */
function nanosToMs(n: number | undefined): number {
  return typeof n === 'number' && Number.isFinite(n) ? n / 1e6 : 0;
}
