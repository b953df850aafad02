import type { JetStreamManager, KV, KvEntry } from 'nats';
import { memberRecordSchema, type MemberRecord } from '@sealbus/protocol';
import { BucketMirror, type MirrorStats } from './mirror.js';

export { CACHE_CATCH_UP_MS } from './mirror.js';

/** What one watch has built: the memberships, and what a scan would judge differently. */
interface CacheState {
  /** sign_pub → room → membership. */
  byUser: Map<string, Map<string, MemberRecord>>;
  /** sign_pub → rooms whose record a scan would refuse or read otherwise (corrupt, or naming another key). */
  suspect: Map<string, Set<string>>;
  /** Every key with a message in the stream (history 1: one each, delete markers included). */
  keys: Set<string>;
  /** sign_pub → its memberships sorted by room, as last answered (dropped by any change of that user's). */
  sorted: Map<string, readonly MemberRecord[]>;
}

const emptyState = (): CacheState => ({
  byUser: new Map(),
  suspect: new Map(),
  keys: new Set(),
  sorted: new Map(),
});

export type MemberCacheStats = MirrorStats;

/**
 * Every membership of every user, in memory, fed by a watch of the members
 * bucket: the auth callout's read of a user's memberships in constant time
 * instead of a scan of as many records as the user has rooms.
 *
 * Never stale: a lookup answers as of a moment after it began
 * ({@link BucketMirror.fresh}: one stream info request, shared by
 * concurrent lookups, and the watch caught up with it). When the watch is
 * not loaded, or has not caught up within `CACHE_CATCH_UP_MS`, or the stream
 * cannot be asked, the lookup says so (`null`) and the caller scans.
 */
export class MemberCache {
  readonly #mirror: BucketMirror<CacheState>;

  constructor(kv: KV, jsm: JetStreamManager, bucket: string, onError: (err: Error) => void) {
    this.#mirror = new BucketMirror(kv, jsm, bucket, {
      empty: emptyState,
      apply,
      onError,
      name: 'member cache',
    });
  }

  get stats(): MemberCacheStats {
    return this.#mirror.stats;
  }

  /** Starts the watch (in the background; lookups miss until it has loaded). */
  start(): void {
    this.#mirror.start();
  }

  stop(): Promise<void> {
    return this.#mirror.stop();
  }

  get loaded(): boolean {
    return this.#mirror.loaded;
  }

  /**
   * The user's memberships as of a moment after this call began, or null
   * when the cache cannot say (the caller scans instead). While the user's
   * memberships do not change, every answer is the same (frozen) array: a
   * caller may remember what it derived from it by its identity.
   */
  async membershipsOf(signPub: string): Promise<readonly MemberRecord[] | null> {
    const state = await this.#mirror.fresh();
    if (!state) return null;
    // A record a scan would refuse (CORRUPT: the callout denies) or read as
    // another room: the scan decides, as it would without the cache.
    if (state.suspect.has(signPub)) {
      this.#mirror.stats.misses++;
      return null;
    }
    this.#mirror.stats.hits++;
    let sorted = state.sorted.get(signPub);
    if (!sorted) {
      sorted = Object.freeze(
        [...(state.byUser.get(signPub)?.values() ?? [])].sort((a, b) =>
          a.room < b.room ? -1 : a.room > b.room ? 1 : 0
        )
      );
      state.sorted.set(signPub, sorted);
    }
    return sorted;
  }
}

/** Applies one watched entry: a membership put, or a key deleted or purged. */
function apply(into: CacheState, e: KvEntry): void {
  // Every entry is the one message its key has now (history 1).
  into.keys.add(e.key);
  // Keys are `<room>.<sign_pub>`; anything else in the bucket is not a membership.
  const dot = e.key.indexOf('.');
  if (dot <= 0) return;
  const room = e.key.slice(0, dot);
  const signPub = e.key.slice(dot + 1);
  into.sorted.delete(signPub);
  const drop = () => {
    const m = into.byUser.get(signPub);
    m?.delete(room);
    if (m?.size === 0) into.byUser.delete(signPub);
  };
  const trusted = (yes: boolean) => {
    let s = into.suspect.get(signPub);
    if (yes) {
      s?.delete(room);
      if (s?.size === 0) into.suspect.delete(signPub);
    } else {
      if (!s) into.suspect.set(signPub, (s = new Set()));
      s.add(room);
    }
  };
  if (e.operation !== 'PUT') {
    drop();
    trusted(true);
    return;
  }
  let rec: MemberRecord;
  try {
    rec = memberRecordSchema.parse(JSON.parse(new TextDecoder().decode(e.value)));
  } catch {
    drop();
    trusted(false);
    return;
  }
  if (rec.room !== room || rec.sign_pub !== signPub) {
    drop();
    trusted(false);
    return;
  }
  trusted(true);
  let m = into.byUser.get(signPub);
  if (!m) into.byUser.set(signPub, (m = new Map()));
  m.set(room, rec);
}
