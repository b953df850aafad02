import type { JetStreamManager, KV, KvEntry, QueuedIterator } from 'nats';
import { memberRecordSchema, type MemberRecord } from '@sealbus/protocol';

/** How long a lookup waits for the watch to apply what the stream already holds. */
export const CACHE_CATCH_UP_MS = 250;
/** How long a lookup waits for the stream's last sequence before it scans. */
const INFO_TIMEOUT_MS = 1_000;

/** What one watch has built: the memberships, and what a scan would judge differently. */
interface CacheState {
  /** sign_pub → room → membership. */
  byUser: Map<string, Map<string, MemberRecord>>;
  /** sign_pub → rooms whose record a scan would refuse or read otherwise (corrupt, or naming another key). */
  suspect: Map<string, Set<string>>;
  /** Every key with a message in the stream (history 1: one each, delete markers included). */
  keys: Set<string>;
}

const emptyState = (): CacheState => ({ byUser: new Map(), suspect: new Map(), keys: new Set() });

/** What a lookup learns of the stream. */
interface StreamNow {
  last: number;
  messages: number;
  created: string;
}

interface Waiter {
  seq: number;
  done: (ok: boolean) => void;
}

export interface MemberCacheStats {
  /** Lookups answered from memory. */
  hits: number;
  /** Lookups that fell back to a scan (not loaded, behind, or the stream unreadable). */
  misses: number;
  /** Times the watch was (re)started from scratch. */
  loads: number;
}

/**
 * Every membership of every user, in memory, fed by a watch of the members
 * bucket: the auth callout's read of a user's memberships in constant time
 * instead of a scan of as many records as the user has rooms.
 *
 * Never stale: a lookup first asks the stream for its last sequence (one
 * request, sent after the lookup began; concurrent lookups share it) and
 * answers only once the watch has applied everything up to it, so a change
 * acknowledged before the lookup began is in the answer, as with a scan.
 * When the watch is not loaded, or has not caught up within
 * {@link CACHE_CATCH_UP_MS}, or the stream cannot be asked, the lookup says
 * so (`null`) and the caller scans.
 */
export class MemberCache {
  readonly #kv: KV;
  readonly #jsm: JetStreamManager;
  readonly #stream: string;
  readonly #onError: (err: Error) => void;
  #state: CacheState = emptyState();
  /** When the stream the watch reads was created (a bucket made again is another stream). */
  #created: string | undefined;
  #lastStall = 0;
  /** The highest stream sequence applied (0: none). */
  #applied = 0;
  #loaded = false;
  #stopped = false;
  #watch: QueuedIterator<KvEntry> | undefined;
  #waiters: Waiter[] = [];
  #inflight: Promise<StreamNow> | null = null;
  #next: {
    p: Promise<StreamNow>;
    resolve: (n: StreamNow) => void;
    reject: (e: unknown) => void;
  } | null = null;
  readonly stats: MemberCacheStats = { hits: 0, misses: 0, loads: 0 };

  constructor(kv: KV, jsm: JetStreamManager, bucket: string, onError: (err: Error) => void) {
    this.#kv = kv;
    this.#jsm = jsm;
    this.#stream = `KV_${bucket}`;
    this.#onError = onError;
  }

  /** Starts the watch (in the background; lookups miss until it has loaded). */
  start(): void {
    void this.#run();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#watch?.stop();
    for (const w of this.#waiters.splice(0)) w.done(false);
  }

  get loaded(): boolean {
    return this.#loaded;
  }

  /** Keeps a watch running: a watch that ends (an error, a reset) is started again, from scratch. */
  async #run(): Promise<void> {
    for (let backoff = 100; !this.#stopped; backoff = Math.min(5_000, backoff * 2)) {
      const fresh = emptyState();
      let applied = 0;
      let initial = true;
      try {
        this.stats.loads++;
        // The stream this watch will read (before it starts: a stream made
        // again after this is noticed by the next lookup).
        const start = await this.#info();
        this.#created = start.created;
        const w = await this.#kv.watch({
          key: '>',
          initializedFn: () => {
            // The first full picture: swap it in.
            initial = false;
            this.#state = fresh;
            // Every message up to the stream's last at the start was either
            // delivered now or is gone (deleted: the last may be one of them).
            this.#applied = Math.max(this.#applied, applied, start.last);
            this.#loaded = true;
            backoff = 100;
            this.#wake();
          },
        });
        this.#watch = w;
        for await (const e of w) {
          applied = Math.max(applied, e.revision);
          apply(fresh, e);
          if (!initial) {
            this.#applied = Math.max(this.#applied, e.revision);
            this.#wake();
          }
        }
      } catch (err) {
        if (!this.#stopped) this.#onError(err as Error);
      }
      // Ended: until a new watch has loaded, lookups scan.
      this.#loaded = false;
      this.#applied = 0;
      for (const w of this.#waiters.splice(0)) w.done(false);
      if (this.#stopped) return;
      await new Promise((r) => setTimeout(r, backoff).unref());
    }
  }

  #wake(): void {
    if (this.#waiters.length === 0) return;
    const still: Waiter[] = [];
    for (const w of this.#waiters) {
      if (w.seq <= this.#applied) w.done(true);
      else still.push(w);
    }
    this.#waiters = still;
  }

  /** Drops what the watch built and starts it again (lookups scan until it has loaded). */
  #reload(why: string): void {
    this.#loaded = false;
    this.#onError(new Error(`member cache reloads: ${why}`));
    this.#watch?.stop();
  }

  /** The stream's state, from a request sent after this call (shared by concurrent callers). */
  #lastSeq(): Promise<StreamNow> {
    if (!this.#inflight) {
      const p = this.#info().finally(() => this.#advance());
      this.#inflight = p;
      return p;
    }
    // One is in flight, sent before this call: join the next.
    if (!this.#next) {
      let resolve!: (n: StreamNow) => void;
      let reject!: (e: unknown) => void;
      const p = new Promise<StreamNow>((a, b) => ((resolve = a), (reject = b)));
      p.catch(() => {});
      this.#next = { p, resolve, reject };
    }
    return this.#next.p;
  }

  /**
   * The stream's last sequence, or a rejection within INFO_TIMEOUT_MS (a
   * leader election: the lookup scans instead, inside the callout's budget).
   */
  #info(): Promise<StreamNow> {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      this.#jsm.streams.info(this.#stream).then((i) => ({
        last: i.state.last_seq,
        messages: i.state.messages,
        created: i.created,
      })),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('stream info timed out')), INFO_TIMEOUT_MS);
      }),
    ]).finally(() => clearTimeout(timer));
  }

  #advance(): void {
    this.#inflight = null;
    const next = this.#next;
    if (!next) return;
    this.#next = null;
    const p = this.#info().finally(() => this.#advance());
    this.#inflight = p;
    p.then(next.resolve, next.reject);
  }

  /**
   * The user's memberships as of a moment after this call began, or null
   * when the cache cannot say (the caller scans instead).
   */
  async membershipsOf(signPub: string): Promise<MemberRecord[] | null> {
    if (!this.#loaded) {
      this.stats.misses++;
      return null;
    }
    let now: StreamNow;
    try {
      now = await this.#lastSeq();
    } catch {
      this.stats.misses++;
      return null;
    }
    if (now.created !== this.#created) {
      // The bucket was deleted and made again: the watch reads a stream gone.
      this.#reload('the members stream was made again');
      this.stats.misses++;
      return null;
    }
    const last = now.last;
    if (this.#applied < last) {
      const ok = await new Promise<boolean>((done) => {
        const t = setTimeout(() => {
          this.#waiters = this.#waiters.filter((w) => w.done !== finish);
          done(false);
        }, CACHE_CATCH_UP_MS);
        const finish = (v: boolean) => {
          clearTimeout(t);
          done(v);
        };
        this.#waiters.push({ seq: last, done: finish });
      });
      if (!ok || !this.#loaded) {
        // Still behind and not moving: the stream's last message may be one
        // no watch will deliver (deleted by sequence). Start over (at most
        // every 10 s): a new watch counts the stream's last as seen.
        if (!ok && this.#loaded && this.#applied < last && Date.now() - this.#lastStall > 10_000) {
          this.#lastStall = Date.now();
          this.#reload(`the watch stays behind the stream (${this.#applied} < ${last})`);
        }
        this.stats.misses++;
        return null;
      }
    }
    const state = this.#state;
    // Caught up exactly: every message the stream holds must be one the watch
    // saw. Fewer means messages were removed under it (a stream purge, a
    // message deleted by sequence), which no watch entry reports.
    if (this.#applied === last && now.messages !== state.keys.size) {
      this.#reload(
        `the stream holds ${now.messages} messages, the watch accounts for ${state.keys.size}`
      );
      this.stats.misses++;
      return null;
    }
    // A record a scan would refuse (CORRUPT: the callout denies) or read as
    // another room: the scan decides, as it would without the cache.
    if (state.suspect.has(signPub)) {
      this.stats.misses++;
      return null;
    }
    this.stats.hits++;
    return [...(state.byUser.get(signPub)?.values() ?? [])].sort((a, b) =>
      a.room < b.room ? -1 : a.room > b.room ? 1 : 0
    );
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
