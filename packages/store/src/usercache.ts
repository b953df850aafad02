import type { JetStreamManager, KV, KvEntry } from 'nats';
import { parseOrThrow, userRecordSchema, type UserRecord } from '@sealbus/protocol';
import { BucketMirror, type MirrorState, type MirrorStats } from './mirror.js';

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
  readonly #boundMs: number;

  constructor(
    kv: KV,
    jsm: JetStreamManager,
    bucket: string,
    onError: (err: Error) => void,
    boundMs = USER_CACHE_BOUND_MS
  ) {
    this.#boundMs = boundMs;
    this.#mirror = new BucketMirror(kv, jsm, bucket, {
      empty: emptyState,
      apply,
      onError,
      name: 'user cache',
    });
  }

  get stats(): MirrorStats {
    return this.#mirror.stats;
  }

  get loaded(): boolean {
    return this.#mirror.loaded;
  }

  start(heartbeatMs = USER_CACHE_HEARTBEAT_MS): void {
    this.#mirror.start();
    this.#mirror.startHeartbeat(heartbeatMs);
  }

  /** A user write by this node was acknowledged: read the store until the cache has it. */
  invalidate(): void {
    this.#mirror.invalidate();
  }

  stop(): Promise<void> {
    return this.#mirror.stop();
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
}
