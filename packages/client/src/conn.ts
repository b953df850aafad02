import { createHash } from 'node:crypto';
import type { Msg, MsgHdrs, NatsConnection, PublishOptions, Subscription } from 'nats';

/**
 * The SDK's NATS connection, renewed make-before-break.
 *
 * The auth callout decides a connection's permissions when it connects, so a
 * new membership needs a new connection. Reconnecting the one connection
 * drops whatever is in flight to its subscriptions; instead a second
 * connection is opened, every subscription is made on it too, and only then
 * are the old ones let go:
 *
 * 1. open the next connection (the same server first) and subscribe there,
 *    buffering; flush it, so the server has every new subscription;
 * 2. hold publishes, flush the old connection (the server has processed all
 *    it sent, and sent it all we were owed before step 1 ended), switch
 *    publishing to the next connection;
 * 3. let the old subscriptions go, flush the next connection (whatever the
 *    old subscriptions received that the new ones got too is in their
 *    buffers now), and hand each buffer over without what the old
 *    subscription already delivered.
 *
 * What the old subscriptions delivered is a prefix of what the server sent,
 * what the new ones buffered a suffix of it; the handover delivers the union,
 * in order, each message once. A sender's frames stay in order too: nothing
 * is published on the next connection before the old one's flush came back.
 */

/** How long a flush of a connection being replaced may take before it is given up on. */
const FLUSH_MS = 5_000;

/**
 * When the next connection lands on another server (the first one would not
 * take it), subscription interest still has to reach the rest of the
 * cluster: keep the old subscriptions this much longer.
 */
const OTHER_SERVER_SETTLE_MS = 500;

/** Publishes held while the connection is switched (bounded: one flush). */
const MAX_HELD = 10_000;

/** Publishes gathered into one socket write: at most this many bytes wait for the turn's end. */
const COALESCE_BYTES = 64 * 1024;

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]);
}

/** The same message seen on two subscriptions (empty ones, heartbeats, are not told apart). */
function keyOf(m: Msg): string | null {
  if (m.data.length === 0) return null;
  return createHash('sha256').update(m.subject).update('\0').update(m.data).digest('base64');
}

export interface LiveSubscription {
  unsubscribe(): void;
}

/** One subscription that survives the connection's renewal without a gap or a duplicate. */
class MovableSub implements LiveSubscription {
  readonly subject: string;
  readonly #onMsg: (m: Msg) => void;
  readonly #onError: (err: Error) => void;
  #live: Subscription;
  #next: Subscription | null = null;
  #buffer: Msg[] | null = null;
  /** What the old subscription delivered during the handover, counted (a copy each). */
  #seen: Map<string, number> | null = null;
  #closed = false;
  readonly #release: (s: MovableSub) => void;

  constructor(
    nc: NatsConnection,
    subject: string,
    onMsg: (m: Msg) => void,
    onError: (err: Error) => void,
    release: (s: MovableSub) => void
  ) {
    this.subject = subject;
    this.#onMsg = onMsg;
    this.#onError = onError;
    this.#release = release;
    this.#live = this.#attach(nc);
  }

  #attach(nc: NatsConnection): Subscription {
    const sub: Subscription = nc.subscribe(this.subject, {
      callback: (err, m) => {
        if (this.#closed) return;
        if (err) {
          if (sub === this.#live) this.#onError(err);
          return;
        }
        if (sub === this.#next) {
          if (this.#buffer) this.#buffer.push(m);
          return;
        }
        if (sub !== this.#live) return; // let go of: what it still gets, the next one has
        if (this.#seen) {
          const k = keyOf(m);
          if (k) this.#seen.set(k, (this.#seen.get(k) ?? 0) + 1);
        }
        this.#onMsg(m);
      },
    });
    return sub;
  }

  /** Step 1: subscribe on the next connection, buffering. */
  prepare(nc: NatsConnection): void {
    if (this.#closed || this.#next) return;
    this.#seen = new Map();
    this.#buffer = [];
    this.#next = this.#attach(nc);
  }

  /** Step 3a: let the old subscription go. */
  retire(): void {
    if (!this.#next) return;
    const old = this.#live;
    this.#live = this.#next;
    // Still buffering: `#next` stays set until the handover.
    old.unsubscribe();
  }

  /** Step 3b: deliver the buffer without what the old subscription delivered; live from now on. */
  commit(): void {
    if (!this.#next) return;
    const buffer = this.#buffer ?? [];
    const seen = this.#seen ?? new Map<string, number>();
    this.#next = null;
    this.#buffer = null;
    this.#seen = null;
    if (this.#closed) return;
    for (const m of buffer) {
      const k = keyOf(m);
      const n = k ? (seen.get(k) ?? 0) : 0;
      if (k && n > 0) {
        seen.set(k, n - 1);
        continue;
      }
      this.#onMsg(m);
    }
  }

  /** The renewal failed before the switch: forget the next connection's subscription. */
  abort(): void {
    if (!this.#next) return;
    if (this.#next !== this.#live) this.#next.unsubscribe();
    this.#next = null;
    this.#buffer = null;
    this.#seen = null;
  }

  unsubscribe(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#live.unsubscribe();
    if (this.#next && this.#next !== this.#live) this.#next.unsubscribe();
    this.#next = null;
    this.#buffer = null;
    this.#seen = null;
    this.#release(this);
  }
}

export interface LiveConnectionOptions {
  /** Opens a connection, trying `preferred` (host:port) first when given. */
  open: (preferred?: string) => Promise<NatsConnection>;
  /** Called with each connection a renewal puts in use (not the first). */
  adopted?: (nc: NatsConnection) => void;
}

export class LiveConnection {
  #nc: NatsConnection;
  readonly #o: LiveConnectionOptions;
  readonly #subs = new Set<MovableSub>();
  /** Set while a renewal prepares: subscriptions made meanwhile are prepared on it too. */
  #next: NatsConnection | null = null;
  /** Publishes held while the connection is switched. */
  #held: Array<[string, Uint8Array, PublishOptions]> | null = null;
  /** Publishes waiting for the end of this turn (see publish). */
  #out: Array<[string, Uint8Array, PublishOptions]> = [];
  #outBytes = 0;
  #renewing: Promise<void> | undefined;
  #closed = false;
  /** Renewals done (tests, diagnostics). */
  renewals = 0;

  private constructor(nc: NatsConnection, o: LiveConnectionOptions) {
    this.#nc = nc;
    this.#o = o;
  }

  static async open(o: LiveConnectionOptions): Promise<LiveConnection> {
    return new LiveConnection(await o.open(), o);
  }

  /** The connection in use now. */
  get nc(): NatsConnection {
    return this.#nc;
  }

  subscribe(
    subject: string,
    onMsg: (m: Msg) => void,
    onError: (err: Error) => void = () => {}
  ): LiveSubscription {
    const s = new MovableSub(this.#nc, subject, onMsg, onError, (x) => this.#subs.delete(x));
    this.#subs.add(s);
    if (this.#next) s.prepare(this.#next);
    return s;
  }

  /**
   * Publishes, in call order. A publish without headers waits for the end
   * of this turn of the event loop (or until COALESCE_BYTES wait), and all
   * that waited go to nats.js at once: a burst of publishes is one socket
   * write, not one each (nats.js writes at the first microtask after a
   * publish). What nats.js would
   * refuse (closed or draining connection, a payload over the server's
   * limit) is handed to it at once, so it throws here, as it did.
   * `data` must not change afterwards. What waits is sent by `flush()` and
   * `close()`: a process that exits right after a publish without either
   * may lose it (as it could lose what nats.js had buffered).
   */
  publish(subject: string, data: Uint8Array, o: { headers?: MsgHdrs; reply?: string } = {}): void {
    const opts: PublishOptions = {
      ...(o.headers ? { headers: o.headers } : {}),
      ...(o.reply ? { reply: o.reply } : {}),
    };
    if (this.#held) {
      if (this.#held.length >= MAX_HELD)
        throw new Error('publishes held during a connection switch: too many');
      this.#held.push([subject, data, opts]);
      return;
    }
    const nc = this.#nc;
    const max = nc.info?.max_payload;
    if (o.headers || max === undefined || data.length > max || nc.isClosed() || nc.isDraining()) {
      this.#sendOut();
      nc.publish(subject, data, opts);
      return;
    }
    this.#out.push([subject, data, opts]);
    this.#outBytes += data.length;
    if (this.#out.length === 1) setImmediate(this.#sendOut);
    else if (this.#outBytes >= COALESCE_BYTES) this.#sendOut();
  }

  /** Hands what waits to nats.js, in order (one outbound buffer: one write). */
  readonly #sendOut = (): void => {
    const out = this.#out;
    if (out.length === 0) return;
    this.#out = [];
    this.#outBytes = 0;
    const nc = this.#nc;
    for (const [subject, data, opts] of out) {
      try {
        nc.publish(subject, data, opts);
      } catch {
        // Closed since (what waited is lost, as nats.js loses what it
        // buffered), or this one refused: the rest still go.
      }
    }
  };

  /** Resolves once everything published so far reached the server. */
  async flush(): Promise<void> {
    while (this.#renewing) await this.#renewing.catch(() => {});
    this.#sendOut();
    await this.#nc.flush();
  }

  /** Opens a new connection (new permissions) and moves every subscription to it, losing nothing. */
  renew(): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('the connection is closed'));
    this.#renewing ??= this.#renew().finally(() => (this.#renewing = undefined));
    return this.#renewing;
  }

  async #renew(): Promise<void> {
    const old = this.#nc;
    const next = await this.#o.open(old.getServer());
    this.#next = next;
    try {
      if (this.#closed) throw new Error('the connection closed while it was renewed');
      for (const s of this.#subs) s.prepare(next);
      await withTimeout(next.flush(), FLUSH_MS);
      if (next.info?.server_id !== old.info?.server_id)
        await new Promise((r) => setTimeout(r, OTHER_SERVER_SETTLE_MS));
    } catch (err) {
      this.#next = null;
      for (const s of this.#subs) s.abort();
      await next.close().catch(() => {});
      throw err;
    }
    // What waits goes out on the old connection, before its flush.
    this.#sendOut();
    this.#held = [];
    // An old connection that does not answer is past saving: switch anyway.
    await withTimeout(old.flush(), FLUSH_MS).catch(() => {});
    this.#nc = next;
    this.#next = null;
    const held = this.#held;
    this.#held = null;
    for (const [subject, data, opts] of held) next.publish(subject, data, opts);
    this.#o.adopted?.(next);
    for (const s of this.#subs) s.retire();
    await withTimeout(next.flush(), FLUSH_MS).catch(() => {});
    for (const s of this.#subs) s.commit();
    this.renewals++;
    // What the old connection still owes the server goes out; then it closes.
    await withTimeout(old.drain(), FLUSH_MS).catch(() => {});
    await old.close().catch(() => {});
  }

  async close(): Promise<void> {
    this.#closed = true;
    while (this.#renewing) await this.#renewing.catch(() => {});
    this.#sendOut();
    for (const s of [...this.#subs]) s.unsubscribe();
    const nc = this.#nc;
    if (nc.isClosed()) return;
    // Drain delivers what is in flight; bounded, since a connection that is
    // reconnecting may never get to drain.
    await withTimeout(nc.drain(), FLUSH_MS).catch(() => {});
    await nc.close().catch(() => {});
  }
}
