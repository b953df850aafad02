import type { JetStreamManager, KV, KvEntry, QueuedIterator } from 'nats';

/** How long a lookup waits for the watch to apply what the stream already holds. */
export const CACHE_CATCH_UP_MS = 250;
/** A replica silent this long (ns) does not count towards the leader's majority. */
const REPLICA_SILENCE_NS = 3e9;
/** How long a lookup waits for the stream's last sequence before it gives up. */
const INFO_TIMEOUT_MS = 1_000;

/** What a mirror's state must keep: every key with a message in the stream. */
export interface MirrorState {
  /** Every key with a message in the stream (history 1: one each, delete markers included). */
  keys: Set<string>;
}

/** What a lookup learns of the stream. */
interface StreamNow {
  last: number;
  messages: number;
  created: string;
  /**
   * The stream has a leader backed by a majority of its replicas (always, for
   * one replica): a leader cut off from the others cannot vouch for being
   * current, since a majority elsewhere may have moved on.
   */
  quorum: boolean;
}

interface Waiter {
  seq: number;
  done: (ok: boolean) => void;
}

export interface MirrorStats {
  /** Lookups answered from memory. */
  hits: number;
  /** Lookups that fell back to the store (not loaded, behind, or the stream unreadable). */
  misses: number;
  /** Times the watch was (re)started from scratch. */
  loads: number;
}

export interface MirrorOptions<S extends MirrorState> {
  /** A state with nothing applied. */
  empty: () => S;
  /** Applies one watched entry (a put, or a key deleted or purged). */
  apply: (into: S, e: KvEntry) => void;
  onError: (err: Error) => void;
  /** Names the mirror in errors ("member cache"). */
  name: string;
}

/**
 * A KV bucket mirrored in memory by a watch, and two ways to know that what
 * it holds is current:
 *
 * - {@link fresh}: as of a moment after the call began. The lookup asks the
 *   stream for its last sequence (one request, sent after the call began;
 *   concurrent lookups share it) and answers once the watch has applied
 *   everything up to it. A change acknowledged before the call is in it.
 * - {@link recent}: without a request, when a heartbeat
 *   ({@link startHeartbeat}) proved the mirror caught up with a stream state
 *   read at most `boundMs` ago. A change acknowledged more than `boundMs`
 *   before the call is in it.
 *
 * Either says `null` when it cannot vouch (not loaded, the stream
 * unreadable, the watch behind): the caller reads the store instead. A
 * stream holding fewer messages than the watch accounts for (a purge, a
 * message deleted by sequence, which no watch entry reports) or made again
 * makes the mirror start over.
 */
export class BucketMirror<S extends MirrorState> {
  readonly #kv: KV;
  readonly #jsm: JetStreamManager;
  readonly #stream: string;
  readonly #o: MirrorOptions<S>;
  #state: S;
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
  /**
   * When (`performance.now()`) the last stream state the mirror was proved
   * caught up with was asked for; -Infinity: never.
   */
  #provenAt = -Infinity;
  /** When (`performance.now()`) {@link invalidate} was last called. */
  #invalidatedAt = -Infinity;
  #heartbeat: NodeJS.Timeout | undefined;
  readonly stats: MirrorStats = { hits: 0, misses: 0, loads: 0 };

  constructor(kv: KV, jsm: JetStreamManager, bucket: string, o: MirrorOptions<S>) {
    this.#kv = kv;
    this.#jsm = jsm;
    this.#stream = `KV_${bucket}`;
    this.#o = o;
    this.#state = o.empty();
  }

  /** Starts the watch (in the background; lookups miss until it has loaded). */
  start(): void {
    void this.#run();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#heartbeat);
    this.#watch?.stop();
    for (const w of this.#waiters.splice(0)) w.done(false);
  }

  get loaded(): boolean {
    return this.#loaded;
  }

  /**
   * Proves the mirror current every `intervalMs` (one stream info request
   * each), for {@link recent}. A heartbeat that fails or finds the watch
   * behind proves nothing, so `recent` stops vouching once its bound passes.
   */
  startHeartbeat(intervalMs: number): void {
    const beat = async () => {
      if (this.#stopped) return;
      const askedAt = performance.now();
      // A heartbeat asked before an invalidation proves nothing about the
      // write that caused it.
      if ((await this.#caughtUp()) && askedAt > this.#invalidatedAt)
        this.#provenAt = Math.max(this.#provenAt, askedAt);
      if (!this.#stopped) {
        this.#heartbeat = setTimeout(() => void beat(), intervalMs);
        this.#heartbeat.unref();
      }
    };
    void beat();
  }

  /**
   * A write through this process was just acknowledged: {@link recent} stops
   * vouching until a heartbeat asked after now has proved the mirror caught
   * up (read-your-writes on this node, instead of the bound).
   */
  invalidate(): void {
    this.#invalidatedAt = performance.now();
    this.#provenAt = -Infinity;
  }

  /** Keeps a watch running: a watch that ends (an error, a reset) is started again, from scratch. */
  async #run(): Promise<void> {
    for (let backoff = 100; !this.#stopped; backoff = Math.min(5_000, backoff * 2)) {
      const fresh = this.#o.empty();
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
          this.#o.apply(fresh, e);
          if (!initial) {
            this.#applied = Math.max(this.#applied, e.revision);
            this.#wake();
          }
        }
      } catch (err) {
        if (!this.#stopped) this.#o.onError(err as Error);
      }
      // Ended: until a new watch has loaded, lookups read the store.
      this.#unload();
      if (this.#stopped) return;
      await new Promise((r) => setTimeout(r, backoff).unref());
    }
  }

  #unload(): void {
    this.#loaded = false;
    this.#applied = 0;
    this.#provenAt = -Infinity;
    for (const w of this.#waiters.splice(0)) w.done(false);
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

  /** Drops what the watch built and starts it again (lookups read the store until it has loaded). */
  #reload(why: string): void {
    this.#loaded = false;
    this.#provenAt = -Infinity;
    this.#o.onError(new Error(`${this.#o.name} reloads: ${why}`));
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
   * leader election: the caller reads the store instead, inside its budget).
   */
  #info(): Promise<StreamNow> {
    let timer: NodeJS.Timeout | undefined;
    return Promise.race([
      this.#jsm.streams.info(this.#stream).then((i) => ({
        last: i.state.last_seq,
        messages: i.state.messages,
        created: i.created,
        // The leader and the replicas it sees current and heard from in the
        // last few seconds (raft heartbeats every second): a leader whose
        // peers died still calls them current for a while.
        quorum:
          i.config.num_replicas <= 1 ||
          (!!i.cluster?.leader &&
            1 +
              (i.cluster.replicas ?? []).filter(
                (r) => r.current && !r.offline && (r.active ?? 0) < REPLICA_SILENCE_NS
              ).length >
              i.config.num_replicas / 2),
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

  /** Whether the watch has applied the stream as of a moment after this call began. */
  async #caughtUp(): Promise<boolean> {
    if (!this.#loaded) return false;
    let now: StreamNow;
    try {
      now = await this.#lastSeq();
    } catch {
      return false;
    }
    if (!now.quorum) return false;
    if (now.created !== this.#created) {
      // The bucket was deleted and made again: the watch reads a stream gone.
      this.#reload(`the ${this.#stream} stream was made again`);
      return false;
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
        return false;
      }
    }
    // Caught up exactly: every message the stream holds must be one the watch
    // saw. Fewer means messages were removed under it (a stream purge, a
    // message deleted by sequence), which no watch entry reports.
    if (this.#applied === last && now.messages !== this.#state.keys.size) {
      this.#reload(
        `the stream holds ${now.messages} messages, the watch accounts for ${this.#state.keys.size}`
      );
      return false;
    }
    return true;
  }

  /** The state as of a moment after this call began, or null when the mirror cannot say. */
  async fresh(): Promise<S | null> {
    if (await this.#caughtUp()) return this.#state;
    this.stats.misses++;
    return null;
  }

  /** The state if a heartbeat proved it current at most `boundMs` ago, else null. */
  recent(boundMs: number): S | null {
    if (this.#loaded && performance.now() - this.#provenAt <= boundMs) return this.#state;
    this.stats.misses++;
    return null;
  }
}
