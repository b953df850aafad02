import type { JetStreamManager, KV, KvEntry, QueuedIterator } from 'nats';
import { memberRecordSchema, type MemberRecord } from '@sealbus/protocol';

/** How long a lookup waits for the watch to apply what the stream already holds. */
export const CACHE_CATCH_UP_MS = 250;
/** How long a lookup waits for the stream's last sequence before it scans. */
const INFO_TIMEOUT_MS = 1_000;

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
  /** sign_pub → room → membership. */
  #byUser = new Map<string, Map<string, MemberRecord>>();
  /** The highest stream sequence applied (0: none). */
  #applied = 0;
  #loaded = false;
  #stopped = false;
  #watch: QueuedIterator<KvEntry> | undefined;
  #waiters: Waiter[] = [];
  #inflight: Promise<number> | null = null;
  #next: { p: Promise<number>; resolve: (n: number) => void; reject: (e: unknown) => void } | null =
    null;
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
      const fresh = new Map<string, Map<string, MemberRecord>>();
      let applied = 0;
      let initial = true;
      try {
        this.stats.loads++;
        const w = await this.#kv.watch({
          key: '>',
          initializedFn: () => {
            // The first full picture: swap it in.
            initial = false;
            this.#byUser = fresh;
            this.#applied = Math.max(this.#applied, applied);
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

  /** The stream's last sequence, from a request sent after this call (shared by concurrent callers). */
  #lastSeq(): Promise<number> {
    if (!this.#inflight) {
      const p = this.#info().finally(() => this.#advance());
      this.#inflight = p;
      return p;
    }
    // One is in flight, sent before this call: join the next.
    if (!this.#next) {
      let resolve!: (n: number) => void;
      let reject!: (e: unknown) => void;
      const p = new Promise<number>((a, b) => ((resolve = a), (reject = b)));
      p.catch(() => {});
      this.#next = { p, resolve, reject };
    }
    return this.#next.p;
  }

  /**
   * The stream's last sequence, or a rejection within INFO_TIMEOUT_MS (a
   * leader election: the lookup scans instead, inside the callout's budget).
   */
  #info(): Promise<number> {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      this.#jsm.streams.info(this.#stream).then((i) => i.state.last_seq),
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
    let last: number;
    try {
      last = await this.#lastSeq();
    } catch {
      this.stats.misses++;
      return null;
    }
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
        this.stats.misses++;
        return null;
      }
    }
    this.stats.hits++;
    return [...(this.#byUser.get(signPub)?.values() ?? [])].sort((a, b) =>
      a.room < b.room ? -1 : a.room > b.room ? 1 : 0
    );
  }
}

/** Applies one watched entry: a membership put, or a key deleted or purged. */
function apply(into: Map<string, Map<string, MemberRecord>>, e: KvEntry): void {
  // Keys are `<room>.<sign_pub>`; anything else in the bucket is not a membership.
  const dot = e.key.indexOf('.');
  if (dot <= 0) return;
  const room = e.key.slice(0, dot);
  const signPub = e.key.slice(dot + 1);
  if (e.operation !== 'PUT') {
    const m = into.get(signPub);
    m?.delete(room);
    if (m?.size === 0) into.delete(signPub);
    return;
  }
  let rec: MemberRecord;
  try {
    rec = memberRecordSchema.parse(JSON.parse(new TextDecoder().decode(e.value)));
  } catch {
    // A record a scan would refuse (CORRUPT): drop what was there, so the
    // cache never grants more than the bucket holds.
    const m = into.get(signPub);
    m?.delete(room);
    return;
  }
  if (rec.room !== room || rec.sign_pub !== signPub) return;
  let m = into.get(signPub);
  if (!m) into.set(signPub, (m = new Map()));
  m.set(room, rec);
}
