import type { JetStreamManager, KV, KvEntry } from 'nats';
import { parseOrThrow, userRecordSchema, type UserRecord } from '@sealbus/protocol';
import { BucketMirror, type MirrorState, type MirrorStats } from './mirror.js';
import { parseNatsKeyRow, type NatsKeyLookup } from './users.js';

/**
 * How stale a user record served from the cache may be: a change (a
 * revocation) acknowledged this long before a lookup is in its answer, at
 * every node.
 */
export const USER_CACHE_BOUND_MS = 250;
/** How often the cache proves itself current (one stream info request each). */
export const USER_CACHE_HEARTBEAT_MS = 100;

interface UserState extends MirrorState {
  /** sign_pub → the record, as `getUser` would read it. */
  users: Map<string, UserRecord>;
  /** Keys whose record `getUser` would refuse (not JSON, not a user record): the store decides. */
  suspect: Set<string>;
}

const emptyState = (): UserState => ({ users: new Map(), suspect: new Set(), keys: new Set() });

function apply(into: UserState, e: KvEntry): void {
  into.keys.add(e.key);
  into.users.delete(e.key);
  into.suspect.delete(e.key);
  if (e.operation !== 'PUT') return;
  try {
    into.users.set(
      e.key,
      parseOrThrow(userRecordSchema, JSON.parse(new TextDecoder().decode(e.value)))
    );
  } catch {
    into.suspect.add(e.key);
  }
}

/** The NATS key index (`sealbus_nats_keys`): nats_pub → the sign_pub its row names. */
interface IndexState extends MirrorState {
  owners: Map<string, string>;
  /** Rows the store would refuse to read: the store decides. */
  suspect: Set<string>;
}

function applyIndex(into: IndexState, e: KvEntry): void {
  into.keys.add(e.key);
  into.owners.delete(e.key);
  into.suspect.delete(e.key);
  if (e.operation !== 'PUT') return;
  try {
    into.owners.set(e.key, parseNatsKeyRow(JSON.parse(new TextDecoder().decode(e.value))).sign_pub);
  } catch {
    into.suspect.add(e.key);
  }
}

/**
 * Every user record in memory, fed by a watch of the users bucket, for the
 * signed-request path: a request's signer is looked up without a round trip
 * to the stream's leader.
 *
 * Bounded staleness: the cache answers only while a heartbeat (every
 * {@link USER_CACHE_HEARTBEAT_MS}) proved it caught up with the stream as
 * of at most {@link USER_CACHE_BOUND_MS} ago; otherwise (a leader election,
 * a slow watch, a reload) it says `undefined` and the caller reads the
 * store. A revocation acknowledged more than the bound before a request is
 * therefore refused by every node that serves the request.
 */
export class UserCache {
  readonly #mirror: BucketMirror<UserState>;
  readonly #index: BucketMirror<IndexState> | undefined;
  readonly #boundMs: number;

  /**
   * `index`: the NATS key index bucket, mirrored beside the users (with its
   * own heartbeat) so that {@link lookupNatsKey} answers too.
   */
  constructor(
    kv: KV,
    jsm: JetStreamManager,
    bucket: string,
    onError: (err: Error) => void,
    boundMs = USER_CACHE_BOUND_MS,
    index?: { kv: KV; bucket: string }
  ) {
    this.#boundMs = boundMs;
    this.#mirror = new BucketMirror(kv, jsm, bucket, {
      empty: emptyState,
      apply,
      onError,
      name: 'user cache',
    });
    this.#index =
      index &&
      new BucketMirror(index.kv, jsm, index.bucket, {
        empty: (): IndexState => ({ owners: new Map(), suspect: new Set(), keys: new Set() }),
        apply: applyIndex,
        onError,
        name: 'NATS key index cache',
      });
  }

  get stats(): MirrorStats {
    return this.#mirror.stats;
  }

  get loaded(): boolean {
    return this.#mirror.loaded;
  }

  start(heartbeatMs = USER_CACHE_HEARTBEAT_MS): void {
    for (const m of [this.#mirror, this.#index]) {
      m?.start();
      m?.startHeartbeat(heartbeatMs);
    }
  }

  /** A user write by this node was acknowledged: read the store until the cache has it. */
  invalidate(): void {
    this.#mirror.invalidate();
    this.#index?.invalidate();
  }

  async stop(): Promise<void> {
    await Promise.all([this.#mirror.stop(), this.#index?.stop()]);
  }

  /**
   * The user as `getUser` would read it now (null: no such user), or
   * `undefined` when the cache cannot vouch for it: read the store.
   */
  lookup(signPub: string): UserRecord | null | undefined {
    if (!/^[0-9a-f]{64}$/.test(signPub)) return undefined;
    const state = this.#mirror.recent(this.#boundMs);
    if (!state) return undefined;
    if (state.suspect.has(signPub)) {
      this.#mirror.stats.misses++;
      return undefined;
    }
    this.#mirror.stats.hits++;
    return state.users.get(signPub) ?? null;
  }

  /**
   * Who presents this NATS key, as the store's `userByNatsKey` answers (the
   * same rule over the mirrored users and NATS key index), or `undefined`
   * when the cache cannot vouch for it: either mirror not proved current
   * within the bound, or a record or row involved that the store would
   * refuse to read (the store decides, and throws as it would).
   */
  lookupNatsKey(natsPub: string): NatsKeyLookup | undefined {
    if (!this.#index || !/^[0-9a-f]{64}$/.test(natsPub)) return undefined;
    const users = this.#mirror.recent(this.#boundMs);
    const index = users && this.#index.recent(this.#boundMs);
    if (!users || !index) return undefined;
    const owner = index.owners.get(natsPub);
    if (
      users.suspect.has(natsPub) ||
      index.suspect.has(natsPub) ||
      (owner !== undefined && users.suspect.has(owner))
    ) {
      this.#mirror.stats.misses++;
      return undefined;
    }
    this.#mirror.stats.hits++;
    // The store's order: a registered sign key first, whatever the index says.
    const asSignKey = users.users.get(natsPub);
    if (asSignKey) return { kind: 'sign_key', user: asSignKey };
    const u = owner === undefined ? undefined : users.users.get(owner);
    return u && u.nats_pub === natsPub ? { kind: 'user', user: u } : { kind: 'unknown' };
  }
}
