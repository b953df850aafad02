import { randomBytes } from 'node:crypto';
import {
  headers as natsHeaders,
  type JetStreamClient,
  type Msg,
  type NatsConnection,
  type Subscription,
} from 'nats';
import { FrameError, frameSignatureValid, parseFrame } from '@sealbus/crypto';
import {
  APPEND_ID_HEADER,
  appendResultSubject,
  memberCanWrite,
  type MemberRecord,
  type RoomRecord,
  type UserRecord,
} from '@sealbus/protocol';
import type { MembershipStore } from '@sealbus/store';
import type { Logger } from '../log.js';
import { ACCOUNTS } from '../daemon/natsconfig.js';

/** What the daemon answers on the writer's inbox for one append. */
export type AppendResult =
  | { ok: true; seq: number; duplicate: boolean }
  | { ok: false; code: AppendErrorCode; message: string };

export type AppendErrorCode =
  'NOT_WRITER' | 'MALFORMED' | 'WRONG_SENDER' | 'BAD_SIGNATURE' | 'ROOM_FULL' | 'UNAVAILABLE';

const APPEND_QUEUE = 'sealbus.append';
const APPEND_ID_RE = /^[0-9a-f]{32}$/;
const ROOM_ID_RE = /^[0-9a-f]{24}$/;
/** A writer's grant is re-read at most this long after it was read (removals take effect within it). */
const GRANT_CACHE_MS = 1_000;
/**
 * What one sender, and all senders together, may have waiting in this
 * service (frames until their store ack is in); more are dropped unanswered
 * and the writers' SDKs retry them. Bounds the daemon's memory whatever the
 * writers send.
 */
export const MAX_QUEUED_PER_SENDER = 256;
export const MAX_QUEUED_BYTES_PER_SENDER = 8 * 1024 * 1024;
export const MAX_QUEUED_BYTES = 64 * 1024 * 1024;
/** Room for the headers the service adds to a frame it stores (message id, expected stream). */
const STORE_HEADER_ALLOWANCE = 512;
const enc = new TextEncoder();

export interface AppendServiceOptions {
  /** Account SEALBUS: the service subscription. */
  control: NatsConnection;
  /** Account APP: the room streams, and the answers to writers. */
  app: NatsConnection;
  store: MembershipStore;
  /** The user behind a connection's NATS key, or null when none is registered for it. */
  resolveUser: (nkey: string) => Promise<UserRecord | null>;
  logger: Logger;
  /** Per-attempt timeout of the stream publish. */
  publishTimeoutMs?: number;
}

interface Grant {
  user: UserRecord;
  room: RoomRecord;
  member: MemberRecord;
  at: number;
}

/**
 * The publisher of a service request, as the server set it: the
 * `Nats-Request-Info` header of a request that crossed from APP into
 * SEALBUS. The server replaces any header of that name a client sent, so
 * this is the connection's authenticated NATS key, never a claim.
 */
export function requesterNkey(msg: Msg): string | null {
  const values = msg.headers?.values('Nats-Request-Info') ?? [];
  if (values.length !== 1) return null;
  try {
    const info = JSON.parse(values[0]!) as { acc?: unknown; user?: unknown; kind?: unknown };
    if (info.acc !== ACCOUNTS.app) return null;
    if (typeof info.user !== 'string' || !/^U[A-Z2-7]{55}$/.test(info.user)) return null;
    return info.user;
  } catch {
    return null;
  }
}

/**
 * Appends writers' sealed frames to persisted rooms. A writer never
 * publishes onto a stream's subject itself (JetStream would answer onto any
 * reply subject it chose); it sends the frame here, and the daemon checks
 * who sent it (server-set identity), that it may write the room now, that
 * the frame names that room and that sender (and, when signed, verifies),
 * then stores it under a message id scoped to the sender and answers on the
 * sender's own inbox. The request's reply subject is never used.
 */
export class AppendService {
  readonly #o: AppendServiceOptions;
  readonly #grants = new Map<string, Grant>();
  readonly #queues = new Map<string, { tail: Promise<void>; waiting: number; bytes: number }>();
  /** Bytes of frames waiting in this service, all senders together. */
  #queuedBytes = 0;
  /** Bumped by every forget(): a grant read while one ran is not cached. */
  #generation = 0;
  #sub: Subscription | undefined;
  appended = 0;
  refused = 0;
  /** Appends dropped because their sender had too many waiting. */
  dropped = 0;

  constructor(o: AppendServiceOptions) {
    this.#o = o;
  }

  start(): void {
    this.#sub = this.#o.control.subscribe('sealbus.append.*', {
      queue: APPEND_QUEUE,
      callback: (err, msg) => {
        if (err) {
          this.#o.logger.error({ err: err.message }, 'append service subscription failed');
          return;
        }
        // One sender's frames are stored in the order they arrived (a cache
        // miss must not let a later frame overtake); senders run side by side.
        // Bounded: a sender with MAX_QUEUED frames waiting loses the next
        // ones unanswered (its SDK retries them), so no writer can make the
        // daemon hold an unbounded backlog.
        const key = requesterNkey(msg) ?? '';
        const q = this.#queues.get(key) ?? { tail: Promise.resolve(), waiting: 0, bytes: 0 };
        const size = msg.data.length;
        if (
          q.waiting >= MAX_QUEUED_PER_SENDER ||
          q.bytes + size > MAX_QUEUED_BYTES_PER_SENDER ||
          this.#queuedBytes + size > MAX_QUEUED_BYTES
        ) {
          this.refused++;
          this.dropped++;
          return;
        }
        q.waiting++;
        q.bytes += size;
        this.#queuedBytes += size;
        const settled = () => {
          q.waiting--;
          q.bytes -= size;
          this.#queuedBytes -= size;
          if (q.waiting === 0 && this.#queues.get(key) === q) this.#queues.delete(key);
        };
        const failed = (e: unknown) =>
          this.#o.logger.warn({ err: (e as Error).message }, 'append failed');
        // The queue holds a frame until its stream publish is on the wire
        // (publishes from one connection are stored in the order sent);
        // its ack is awaited outside the queue, so one sender's frames are
        // pipelined, not stored one round trip at a time. `waiting` counts
        // a frame until its ack is in.
        q.tail = q.tail
          .then(() => this.#handle(msg))
          .then(
            (r) => void (r ? r.stored.catch(failed).finally(settled) : settled()),
            (e: unknown) => {
              failed(e);
              settled();
            }
          );
        this.#queues.set(key, q);
      },
    });
  }

  async stop(): Promise<void> {
    await this.#sub?.drain().catch(() => {});
  }

  /** Forget cached grants of a user (revoked) or a membership (removed). */
  forget(signPub: string, roomId?: string): void {
    this.#generation++;
    for (const [k, g] of this.#grants)
      if (g.user.sign_pub === signPub && (!roomId || g.room.id === roomId)) this.#grants.delete(k);
  }

  /** How many grants are cached (tests). */
  get cachedGrants(): number {
    return this.#grants.size;
  }

  async #grant(nkey: string, roomId: string): Promise<Grant | null> {
    const now = Date.now();
    const cacheKey = `${nkey}.${roomId}`;
    const cached = this.#grants.get(cacheKey);
    if (cached && now - cached.at < GRANT_CACHE_MS) return cached;
    this.#grants.delete(cacheKey);
    const generation = this.#generation;
    const user = await this.#o.resolveUser(nkey);
    if (!user) return null;
    const { room, member } = await this.#o.store.appendGrantReads(roomId, user.sign_pub);
    if (!room || !room.policy.persist || !member) return null;
    const g = { user, room, member, at: now };
    // A removal that landed while these reads ran may predate them or not:
    // use what was read once, but never keep it.
    if (generation !== this.#generation) return g;
    if (this.#grants.size > 10_000) this.#grants.clear();
    this.#grants.set(cacheKey, g);
    return g;
  }

  /**
   * Checks one append request and answers it, or starts its stream publish
   * (already on the wire when this resolves) and hands back its outcome.
   */
  async #handle(msg: Msg): Promise<{ stored: Promise<void> } | undefined> {
    const roomId = msg.subject.slice('sealbus.append.'.length);
    const id = msg.headers?.get(APPEND_ID_HEADER) ?? '';
    const nkey = requesterNkey(msg);
    // Without an authenticated sender and a well-formed id there is no one to
    // answer (and nothing is answered on the request's own reply subject).
    if (!nkey || !APPEND_ID_RE.test(id) || !ROOM_ID_RE.test(roomId)) {
      this.refused++;
      return;
    }
    let grant: Grant | null;
    try {
      grant = await this.#grant(nkey, roomId);
    } catch (err) {
      this.#o.logger.warn(
        { err: (err as Error).message, room: roomId },
        'append: store unavailable'
      );
      return; // the writer retries
    }
    if (!grant) {
      this.refused++;
      return; // not a registered writer of this room: no answer at all
    }
    const signPub = grant.user.sign_pub;
    const answer = (r: AppendResult): undefined => {
      this.#o.app.publish(appendResultSubject(signPub, id), enc.encode(JSON.stringify(r)));
      return undefined;
    };
    if (!memberCanWrite(grant.user, grant.member, Date.now())) {
      this.refused++;
      return answer({ ok: false, code: 'NOT_WRITER', message: 'not a writer of this room now' });
    }
    let sender: string;
    try {
      const f = parseFrame(msg.data);
      if (f.header.room !== roomId)
        return answer({ ok: false, code: 'MALFORMED', message: 'frame names another room' });
      if (f.header.signed && !frameSignatureValid(f))
        return answer({ ok: false, code: 'BAD_SIGNATURE', message: 'frame signature invalid' });
      if (grant.room.policy.sign && !f.header.signed)
        return answer({
          ok: false,
          code: 'MALFORMED',
          message: 'this room requires signed frames',
        });
      sender = f.header.sender;
    } catch (err) {
      const why = err instanceof FrameError ? err.message : 'not a frame';
      return answer({ ok: false, code: 'MALFORMED', message: why });
    }
    if (sender !== signPub) {
      this.refused++;
      return answer({
        ok: false,
        code: 'WRONG_SENDER',
        message: 'a frame is appended only by the sender it names',
      });
    }
    // A frame the writer could send but the stream could not take with the
    // service's headers (max_payload) is refused now, never retried forever.
    const maxPayload = this.#o.app.info?.max_payload ?? Infinity;
    if (msg.data.length + STORE_HEADER_ALLOWANCE > maxPayload)
      return answer({
        ok: false,
        code: 'MALFORMED',
        message: `frame too large: at most ${maxPayload - STORE_HEADER_ALLOWANCE} bytes are stored`,
      });
    const h = natsHeaders();
    // Scoped to the sender: no other writer can take (or pre-empt) this id.
    h.set('Nats-Msg-Id', `${signPub}.${id}`);
    h.set('Nats-Expected-Stream', `ROOM_${roomId}`);
    // Called without awaiting: the publish is written to the connection now.
    const stored = this.#js()
      .publish(grant.room.subject, msg.data, { headers: h })
      .then(
        (ack) => {
          this.appended++;
          answer({ ok: true, seq: ack.seq, duplicate: ack.duplicate });
        },
        (err: unknown) => {
          // JetStream answers a full stream with a 503, like a lost leader:
          // only its description tells them apart.
          const e = err as { message?: string; api_error?: { description?: string } };
          const text = `${e.api_error?.description ?? ''} ${e.message ?? ''}`;
          if (/maximum (bytes|messages) exceeded|resource limits exceeded/i.test(text))
            return answer({ ok: false, code: 'ROOM_FULL', message: 'the room is full' });
          this.#o.logger.warn({ err: e.message, room: roomId }, 'append: not stored');
          answer({ ok: false, code: 'UNAVAILABLE', message: 'not stored; retry' });
        }
      );
    return { stored };
  }

  #jsClient: JetStreamClient | undefined;
  #js(): JetStreamClient {
    this.#jsClient ??= this.#o.app.jetstream({ timeout: this.#o.publishTimeoutMs ?? 2_000 });
    return this.#jsClient;
  }
}

/** A fresh append id (the SDK makes its own; exported for tests and tools). */
export function newAppendId(): string {
  return randomBytes(16).toString('hex');
}
