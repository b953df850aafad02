import { randomBytes } from 'node:crypto';
import { headers as natsHeaders, type Msg } from 'nats';
import {
  APPEND_ID_HEADER,
  appendResultSubject,
  appendSubject,
  memberDeliverSubject,
} from '@sealbus/protocol';
import type { LiveConnection, LiveSubscription } from './conn.js';
import { PublishError, type PublishErrorCode } from './errors.js';

type AppendAnswer =
  { ok: true; seq: number; duplicate: boolean } | { ok: false; code: string; message: string };

const REFUSALS: ReadonlySet<string> = new Set<PublishErrorCode>([
  'NOT_WRITER',
  'MALFORMED',
  'WRONG_SENDER',
  'BAD_SIGNATURE',
  'ROOM_FULL',
]);

/**
 * Persisted publishes: the frame goes to the daemon's append service, which
 * stores it and answers on this identity's own inbox (never on a reply
 * subject: see the data-plane permissions). One id per frame, kept across
 * its retries; the daemon scopes it to the sender, so a retry whose first
 * attempt was stored is recognised and no other writer can take the id.
 */
export class Appender {
  readonly #conn: LiveConnection;
  readonly #signPub: string;
  readonly #waiters = new Map<string, (a: AppendAnswer) => void>();
  #sub: LiveSubscription | undefined;

  constructor(conn: LiveConnection, signPub: string) {
    this.#conn = conn;
    this.#signPub = signPub;
  }

  async #listen(): Promise<void> {
    if (this.#sub) return;
    this.#sub = this.#conn.subscribe(appendResultSubject(this.#signPub, '*'), (msg) => {
      const id = msg.subject.slice(msg.subject.lastIndexOf('.') + 1);
      const waiter = this.#waiters.get(id);
      if (!waiter) return;
      try {
        const a = JSON.parse(new TextDecoder().decode(msg.data)) as AppendAnswer;
        if (typeof a !== 'object' || a === null || typeof a.ok !== 'boolean') return;
        if (a.ok && (!Number.isSafeInteger(a.seq) || a.seq < 1)) return;
        waiter(a);
      } catch {
        /* not an answer */
      }
    });
    await this.#conn.flush();
  }

  /**
   * Stores one frame; resolves with its stream sequence. Retries (same id)
   * while the daemon does not answer or answers UNAVAILABLE, until `timeoutMs`.
   */
  async append(
    roomId: string,
    frame: Uint8Array,
    o: { attemptMs: number; timeoutMs: number }
  ): Promise<number> {
    await this.#listen();
    const id = randomBytes(16).toString('hex');
    const h = natsHeaders();
    h.set(APPEND_ID_HEADER, id);
    const deadline = Date.now() + o.timeoutMs;
    let lastError = 'no answer from the append service';
    for (let attempt = 1, backoff = 100; ; attempt++, backoff = Math.min(1_000, backoff * 2)) {
      let timer: NodeJS.Timeout | undefined;
      const answer = await new Promise<AppendAnswer | null>((resolve) => {
        this.#waiters.set(id, resolve);
        timer = setTimeout(() => resolve(null), Math.min(o.attemptMs, deadline - Date.now()));
        // No reply subject: the answer comes on our inbox, by id.
        this.#conn.publish(appendSubject(roomId), frame, { headers: h });
      });
      clearTimeout(timer);
      this.#waiters.delete(id);
      if (answer?.ok) {
        // Our ids are fresh random: a first attempt can only be a duplicate if
        // something else stored under it.
        if (answer.duplicate && attempt === 1)
          throw new PublishError('DUPLICATE', roomId, 'the frame id was already used');
        return answer.seq;
      }
      if (answer && REFUSALS.has(answer.code))
        throw new PublishError(answer.code as PublishErrorCode, roomId, answer.message);
      if (answer) lastError = `${answer.code}: ${answer.message}`;
      if (this.#conn.nc.isClosed() || Date.now() + backoff >= deadline)
        throw new PublishError('TIMEOUT', roomId, `frame not stored (${lastError})`);
      await new Promise((r) => setTimeout(r, backoff));
    }
  }

  close(): void {
    this.#sub?.unsubscribe();
    this.#sub = undefined;
  }
}

/** The stream sequence of a message a member's consumer delivered (from its ack subject). */
export function deliveredStreamSeq(reply: string | undefined): number | null {
  if (!reply?.startsWith('$JS.ACK.')) return null;
  const t = reply.split('.');
  // v1: $JS.ACK.<stream>.<consumer>.<dc>.<sseq>.<dseq>.<ts>.<pending>
  // v2: $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<dc>.<sseq>.<dseq>.<ts>.<pending>[.<token>]
  const raw = t.length === 9 ? t[5] : t.length >= 11 ? t[7] : undefined;
  const n = raw === undefined ? NaN : Number(raw);
  return Number.isSafeInteger(n) && n > 0 ? n : null;
}

export interface PersistedReaderOptions {
  conn: LiveConnection;
  signPub: string;
  roomId: string;
  /** Processes one frame in order; its stream sequence comes along. */
  deliver: (data: Uint8Array, streamSeq: number) => Promise<void>;
  /** Asks the daemon to restart this member's consumer right after `after`. */
  resume: (after: number) => Promise<void>;
  onError: (err: Error) => void;
  /** Minimum time between two resumes (a failover's in-flight tail settles meanwhile). */
  resumeIntervalMs?: number;
}

/**
 * Reads a persisted room from the consumer the daemon made for this member,
 * which delivers under the member's own inbox. Its deliveries are not
 * acknowledged (a member has no JetStream grant), so what a failover loses
 * in flight is found here: a delivered sequence that skips, or a heartbeat
 * naming a later sequence than the last one processed, makes the reader ask
 * the daemon to resume right after the last frame it processed. Older
 * sequences (the replay of a resume) are dropped. Frames reach `deliver`
 * strictly in stream order, each once.
 */
export class PersistedReader {
  readonly #o: PersistedReaderOptions;
  readonly #sub: LiveSubscription;
  /** Frames are processed one after another, in the order they came. */
  #loop: Promise<void> = Promise.resolve();
  /** Last stream sequence processed by this reader (null until the first). */
  #last: number | null = null;
  #resuming: Promise<void> | undefined;
  #lastResumeAt = 0;
  #stopped = false;

  constructor(o: PersistedReaderOptions) {
    this.#o = o;
    this.#sub = o.conn.subscribe(memberDeliverSubject(o.signPub, o.roomId), (m) => {
      this.#loop = this.#loop.then(async () => {
        if (this.#stopped) return;
        try {
          await this.#on(m);
        } catch (err) {
          this.#o.onError(err as Error);
        }
      });
    });
  }

  get lastProcessed(): number | null {
    return this.#last;
  }

  async #on(m: Msg): Promise<void> {
    const code = m.headers?.code ?? 0;
    if (code === 100 && m.data.length === 0) {
      // Idle heartbeat: the consumer's last delivered stream sequence.
      const lastSent = Number(m.headers?.get('Nats-Last-Stream') ?? NaN);
      if (this.#last !== null && Number.isSafeInteger(lastSent) && lastSent > this.#last)
        this.#resume();
      return;
    }
    if (code !== 0) return;
    const seq = deliveredStreamSeq(m.reply);
    if (seq === null) return;
    if (this.#last !== null && seq <= this.#last) return; // replayed by a resume
    if (this.#last !== null && seq > this.#last + 1) {
      this.#resume(); // a gap: what is missing comes again, in order
      return;
    }
    await this.#o.deliver(m.data, seq);
    this.#last = seq;
  }

  #resume(): void {
    const last = this.#last;
    if (last === null || this.#resuming || this.#stopped) return;
    if (Date.now() - this.#lastResumeAt < (this.#o.resumeIntervalMs ?? 3_000)) return;
    this.#lastResumeAt = Date.now();
    this.#resuming = this.#o
      .resume(last)
      .catch((err: unknown) => {
        // Allow the next heartbeat to try again at once.
        this.#lastResumeAt = 0;
        this.#o.onError(err as Error);
      })
      .finally(() => (this.#resuming = undefined));
  }

  /**
   * Stops reading. The consumer is moved to right after the last frame
   * processed, so the next subscription resumes exactly there (what was in
   * flight to this one is not lost).
   */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#sub.unsubscribe();
    await this.#loop.catch(() => {});
    await this.#resuming;
    if (this.#last !== null) await this.#o.resume(this.#last).catch(() => {});
  }
}
