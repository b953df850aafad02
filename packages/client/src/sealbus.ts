import { EventEmitter } from 'node:events';
import {
  connect,
  nkeyAuthenticator,
  type ConnectionOptions,
  type Msg,
  type NatsConnection,
} from 'nats';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import {
  FRAME_MAX_PAYLOAD,
  FrameError,
  FrameSealer,
  fingerprint as fingerprintOf,
  natsUserKey,
  type Identity,
} from '@sealbus/crypto';
import {
  memberDeliverSubject,
  roomAnswerPrefix,
  roomAnswerSubject,
  roomAnswersInbox,
  userEventsSubject,
  userReplyInboxPrefix,
  grantActive,
  type MemberRole,
  type MyRoom,
  type RoomPolicy,
  type UserRecord,
} from '@sealbus/protocol';
import { bindingVerifies, ensureBound } from './binding.js';
import { OwnerPins, TrustError, authorNext, authorStatement, type TrustState } from './chain.js';
import { LiveConnection, type LiveSubscription } from './conn.js';
import { ControlClient } from './control.js';
import { natsTransport } from './secure.js';
import { ControlError, PublishError, SealbusError } from './errors.js';
import { Appender, PersistedReader } from './persisted.js';
import { OrderedFrames, VerifyPool } from './verifier.js';
import { newRoomKey, sealRoomKey } from './keys.js';
import {
  DEFAULT_ROTATION_GRACE_MS,
  RoomState,
  type RoomTrust,
  type Opened,
  type PossibleLoss,
  type RejectedFrame,
  type RoomMessage,
} from './roomstate.js';
import { blobEnvelope, checkRef, openBlob, spoolBlob } from './blobs.js';
import type { BlobData, BlobRef } from '@sealbus/crypto';

export interface SealbusOptions {
  /** NATS servers; the client's own reconnect logic fails over between them. */
  natsServers: string[];
  /** membershipd control URLs, tried in order (failover on connection errors and 503). */
  controlUrls: string[];
  identity: Identity;
  /** PEM CA bundle for `tls://` NATS servers and `https://` control URLs. */
  ca?: string | Buffer;
  /** Connection name shown in server monitoring. */
  name?: string;
  /** Control-plane request timeout (default 10 s). */
  timeoutMs?: number;
  /**
   * Persisted rooms: how long `publish` keeps retrying a frame that was not
   * acknowledged (a node died, a stream leader is being elected); default 30 s.
   */
  publishTimeoutMs?: number;
  /** Extra nats.js options (reconnect tuning). */
  nats?: Partial<ConnectionOptions>;
  /**
   * Accept `nats://` and `http://` URLs to hosts that are not loopback
   * (plaintext: readable and changeable on the path; warned once). Default
   * false: such URLs are refused with `InsecureTransportError`.
   */
  allowInsecure?: boolean;
  /**
   * Whom this client trusts as a room's owner (the key that signs the
   * room's statements: its members and keys). Called once per room per
   * client with the owner's sign_pub; false refuses the room (TrustError
   * `UNTRUSTED_OWNER`). Default: accept, and pin the first owner seen per
   * room (a room whose owner then changes is refused: `OWNER_CHANGED`).
   * Compare `bus.fingerprint(owner)` out of band to decide.
   */
  trustOwner?: (ownerSignPub: string, room: string) => boolean | Promise<boolean>;
  /**
   * Live frames of the previous epoch are still taken this long after the
   * owner's rotation (its statement's time), so a rotation in flight loses
   * nothing. Default 30 000 ms.
   */
  rotationGraceMs?: number;
  /**
   * What an earlier run of this application trusted (`bus.trustState()`,
   * kept in a file of its own): pinned owners and the latest statement
   * verified per room, so a control plane cannot serve a restarted client a
   * room as it was before (`ROLLBACK`). Without it a client trusts the
   * chain it is served at its first load of each room.
   */
  trustState?: TrustState;
  /**
   * How often a room this client is subscribed to re-reads its owner's
   * statements, announcement or not: a control plane that drops
   * `room.changed` / `room.rekeyed` keeps a subscriber on an old member list
   * for at most this long (plus one control call). Default 30 000 ms; 0
   * turns the check off (announcements and frames of new epochs still
   * refresh).
   */
  statementCheckMs?: number;
}

export interface SubscribeOptions {
  /**
   * Persisted rooms: `start` re-reads the whole history, `new` only what is
   * published from now on; omitted, reading resumes where this member's
   * durable stopped. Ephemeral rooms only ever see new messages.
   */
  from?: 'start' | 'new';
}

export type MessageHandler = (msg: RoomMessage) => void | Promise<void>;

export interface RoomSubscription {
  readonly room: string;
  stop(): Promise<void>;
  /**
   * Answers a request this subscription delivered (`m.expectsReply`): to
   * the requester's inbox only, sealed under the room's key and bound to
   * the request. A reader's answer is `NOT_A_WRITER`; a message that is
   * not a request, `BAD_INPUT`.
   */
  respond(msg: RoomMessage, data: Uint8Array | string): Promise<void>;
}

/** A subscription read with `for await`: the room's messages in order; `stop()` (or leaving the loop) ends it. */
export interface MessageStream extends RoomSubscription, AsyncIterable<RoomMessage> {}

export interface SealbusEvents {
  /** A frame was refused (bad signature, non-member, unknown epoch, replay, ...). */
  rejected: [RejectedFrame];
  /** A sender's sequence jumped: frames may have been lost. */
  loss: [PossibleLoss];
  /** The NATS connection was re-established (possibly on another server). */
  reconnect: [server: string];
  disconnect: [server: string];
  /** The client renewed its connection to pick up new permissions. */
  refresh: [reason: string];
  /**
   * The control plane served something about a room that does not hold up
   * (a statement not signed by the owner or not following the chain, a
   * chain rolled back, a key that does not match the owner's commitment):
   * refused; what was verified before stays in force.
   */
  untrusted: [TrustError];
  /**
   * This identity left a room; its subscriptions there stopped. `reason`:
   * `removed` by the owner, the room `deleted`, or `left out` of a rekey
   * (revoked or expired).
   */
  removed: [room: string, reason: string];
  /** This identity was added to a room (it can subscribe or publish there now). */
  invited: [room: string];
  /** A room this client has open moved to a new epoch (the owner's statement verified). */
  rekeyed: [room: string, epoch: number];
  /**
   * A grant ended at `at`: this identity's membership of `room` (its
   * subscriptions there stopped; the room is no longer this client's), or,
   * with `room` null, the identity's own grant (the client closes).
   */
  expired: [room: string | null, at: string];
  error: [Error];
  /** The control plane says this identity is revoked or unknown: the client has closed. */
  revoked: [code: string];
  closed: [];
}

/** What `internal.ts` reaches into (this repository's tests and tools only). */
export const internals: {
  natsOf: (bus: Sealbus) => NatsConnection;
  renewalsOf: (bus: Sealbus) => number;
} = {
  natsOf: () => {
    throw new Error('not initialised');
  },
  renewalsOf: () => 0,
};

/** A rotation the SDK starts on its own happens at most this often per room. */
const AUTO_REKEY_INTERVAL_MS = 10_000;
/** Subscribed rooms re-read their statements this often (option `statementCheckMs`). */
const DEFAULT_STATEMENT_CHECK_MS = 30_000;
/** rekey.needed: rooms waiting at most, and the spacing of loads of rooms not loaded yet. */
const REKEY_QUEUE_MAX = 1_024;
const REKEY_LOAD_SPACING_MS = 200;

/** Re-authenticate if a membership is younger than the connection (its permissions predate it). */
const PERMISSION_MARGIN_MS = 2_000;

/** One room's reading: the subscriptions it hands each message to, and how it stops. */
/** A request waiting for its answer. */
interface Waiting {
  room: string;
  state: RoomState;
  /** SHA-256 of the request's frame: an answer's payload starts with it. */
  digest: Uint8Array;
  /** A 503 came (no responders, or a member claiming so): said at the timeout if nothing else came. */
  noResponders: boolean;
  resolve: (m: RoomMessage) => void;
  reject: (e: Error) => void;
}

interface Feed {
  handlers: Set<{ handler: MessageHandler }>;
  stop: () => Promise<void>;
}

/** Request timeouts: the default, and the most (NATS lets an answer through for 60 s). */
const DEFAULT_REQUEST_MS = 5_000;
const MAX_REQUEST_MS = 60_000;

/** An answer's payload starts with the SHA-256 of the request's frame. */
const REPLY_BINDING = 32;

/** Longest a timer may wait (setTimeout's limit); a later end is re-armed. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * How far apart the daemon's and NATS's idea of a grant's end may be from
 * ours before it is news: a credential is cut to the whole second before a
 * membership's end, and clocks differ a little.
 */
const EXPIRY_SLACK_MS = 2_000;

/** How long after a membership's end a refusal of its subjects is taken as that end. */
const ENDED_QUIET_MS = 10_000;

/** How many times (a second apart) the identity's grant end is checked with the control plane. */
const GRANT_END_ATTEMPTS = 30;

/** How many times (a second apart) a refused subject is checked against the control plane. */
const CONFIRM_ATTEMPTS = 5;

/** One attempt at a persisted publish: a dead stream leader is noticed this fast. */
const PUBLISH_ATTEMPT_MS = 2_000;

/** How long a persisted reader waits for the daemon to move its consumer. */
const RESUME_TIMEOUT_MS = 5_000;

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]);
}

/**
 * The Sealbus SDK: end-to-end encrypted, signed rooms over NATS, with the
 * membership control plane behind it.
 *
 * @example
 * const bus = await Sealbus.connect({ natsServers, controlUrls, identity });
 * const room = await bus.createRoom({ subject: 'team.chat', policy: { encrypt: true, persist: false, sign: true } });
 * await bus.subscribe(room.id, (m) => console.log(new TextDecoder().decode(m.data)));
 * await bus.publish(room.id, new TextEncoder().encode('hello'));
 */
export class Sealbus extends EventEmitter<SealbusEvents> {
  readonly control: ControlClient;
  readonly identity: Identity;
  /** The NATS connection, renewed make-before-break when permissions change. */
  readonly #conn: LiveConnection;
  readonly #rooms = new Map<string, Promise<RoomState>>();
  readonly #sealers = new Map<string, FrameSealer>();
  readonly #subs = new Map<string, Set<RoomSubscription>>();
  #statementTimer: ReturnType<typeof setInterval> | undefined;
  readonly #rekeyQueue = new Set<string>();
  /** The rooms this identity owns, as last listed (rekey.needed for rooms not loaded). */
  #ownedRooms: { ids: Set<string>; at: number } | undefined;
  #rekeyDraining = false;
  #authenticatedAt = Date.now();
  /** Set when told we were added somewhere: the next new room refreshes the connection. */
  #permsStale = false;
  /** Rooms known to be covered by the current connection's permissions. */
  readonly #fresh = new Set<string>();
  #refreshing: Promise<void> | undefined;
  #standing: Promise<void> | undefined;
  #publishTimeoutMs = 30_000;
  #appender: Appender | undefined;
  #closed = false;
  #pins = new OwnerPins();
  readonly #trust: RoomTrust = {
    graceMs: DEFAULT_ROTATION_GRACE_MS,
    checkOwner: (room, owner) => this.#pins.check(room, owner),
    report: (err) => this.emit('untrusted', err),
    verified: (room, chain) => this.#pins.verified(room, chain),
    known: (room) => this.#pins.known(room),
  };
  /** What reads each room this client subscribed to (one per room). */
  readonly #feeds = new Map<string, Promise<Feed>>();
  /** Requests waiting for their answer, by id (the last token of the reply subject). */
  readonly #requests = new Map<string, Waiting>();
  /** Per room: the subscription answers to this client's requests there come to. */
  readonly #answerSubs = new Map<string, LiveSubscription>();
  /** Requests delivered to this client's subscriptions: where and to what they are answered. */
  readonly #asked = new WeakMap<RoomMessage, { room: string; reply: string; digest: Uint8Array }>();
  /** Answers go out under a frame session of their own (a room's seqs stay gap-free). */
  readonly #replySealers = new Map<string, FrameSealer>();
  /** Subjects of memberships that ended a moment ago: NATS refusing them is no news. */
  readonly #endedSubjects = new Map<string, number>();
  /** Timers for the ends of grants: per room (memberships), and `null` for the identity's own. */
  readonly #ends = new Map<
    string | null,
    { at: string; timer: NodeJS.Timeout; subject?: string }
  >();
  /** When this client last rotated a room on its own (revoked or expired member). */
  readonly #autoRekeyAt = new Map<string, number>();

  /**
   * Node's EventEmitter throws an 'error' nobody listens to, which would take
   * an application down over a transient NATS error: report errors only to
   * listeners.
   */
  override emit<K extends keyof SealbusEvents>(event: K, ...args: SealbusEvents[K]): boolean {
    if (event === 'error' && this.listenerCount('error') === 0) return false;
    const emit = super.emit.bind(this) as (e: string, ...a: unknown[]) => boolean;
    return emit(event, ...args);
  }

  private constructor(control: ControlClient, conn: LiveConnection, identity: Identity) {
    super();
    this.control = control;
    this.#conn = conn;
    this.identity = identity;
  }

  static {
    // For this repository's own tests and tools (`@sealbus/client/internal`),
    // not part of the API: the raw connection in use now.
    internals.natsOf = (bus) => bus.#conn.nc;
    internals.renewalsOf = (bus) => bus.#conn.renewals;
  }

  static async connect(o: SealbusOptions): Promise<Sealbus> {
    // tls:// means verified TLS, never a plaintext fallback; plaintext only to loopback.
    const { tls, servers } = natsTransport(o.natsServers, o.allowInsecure);
    const control = new ControlClient({
      urls: o.controlUrls,
      identity: o.identity,
      ...(o.allowInsecure ? { allowInsecure: true } : {}),
      ...(o.ca ? { ca: o.ca } : {}),
      ...(o.timeoutMs ? { timeoutMs: o.timeoutMs } : {}),
    });
    const options: ConnectionOptions = {
      name: o.name ?? 'sealbus-client',
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      // A refused reconnect may be the callout riding out a node failure:
      // keep trying, and let #checkStanding close the client if the
      // identity was really revoked.
      ignoreAuthErrorAbort: true,
      ...o.nats,
      // What follows is not the caller's to loosen.
      servers,
      // Never the sign key: a server picks the nonce it asks us to sign.
      authenticator: nkeyAuthenticator(new TextEncoder().encode(natsUserKey(o.identity).seed)),
      // Replies to this identity's requests land under its own prefix, which
      // only it may subscribe to.
      inboxPrefix: userReplyInboxPrefix(o.identity.signPubHex),
      // A CA given means TLS is expected, whatever the scheme.
      ...(tls || o.ca ? { tls: o.ca ? { ca: o.ca.toString() } : {} } : {}),
      // A plaintext server must not add servers (gossip) that are not the
      // loopback ones checked above.
      ...(tls || o.ca || o.allowInsecure ? {} : { ignoreClusterUpdates: true }),
    };
    // The connection's renewals report to the client made from it below.
    const made: { bus?: Sealbus } = {};
    let me: UserRecord | null;
    let conn: LiveConnection;
    try {
      // The directory must bind our derived NATS key before the callout admits it.
      me = await ensureBound(control, o.identity);
      conn = await LiveConnection.open({
        // A renewal tries the server in use first: subscriptions made there
        // take effect at once (elsewhere, interest needs time to spread).
        open: (preferred) =>
          connect(
            preferred
              ? {
                  ...options,
                  servers: [preferred, ...servers.filter((s) => !sameServer(s, preferred))],
                  noRandomize: true,
                }
              : options
          ),
        adopted: (nc) => {
          if (made.bus) made.bus.#watchConnection(nc);
        },
      });
    } catch (err) {
      control.close();
      throw err;
    }
    const bus = (made.bus = new Sealbus(control, conn, o.identity));
    if (o.publishTimeoutMs !== undefined) bus.#publishTimeoutMs = o.publishTimeoutMs;
    if (o.trustState) bus.#pins = OwnerPins.from(o.trustState);
    if (o.trustOwner) bus.#pins.trustOwner = o.trustOwner;
    if (o.rotationGraceMs !== undefined) bus.#trust.graceMs = o.rotationGraceMs;
    bus.#startStatementChecks(o.statementCheckMs ?? DEFAULT_STATEMENT_CHECK_MS);
    bus.#watchConnection(conn.nc);
    bus.#watchEvents();
    if (me?.expires_at) bus.#armEnd(null, me.expires_at);
    return bus;
  }

  /** Reports a connection's events while it is the one in use (a replaced one goes quietly). */
  #watchConnection(nc: NatsConnection): void {
    void (async () => {
      for await (const s of nc.status()) {
        if (nc !== this.#conn.nc) continue;
        if (s.type === 'reconnect') {
          this.#authenticatedAt = Date.now();
          this.emit('reconnect', String(s.data));
        } else if (s.type === 'disconnect') {
          this.emit('disconnect', String(s.data));
        } else if (s.type === 'error') {
          const err = s.data instanceof Error ? s.data : new Error(String(s.data));
          // nats.js reports the server's -ERR as its code, AUTHORIZATION_VIOLATION.
          if (/authorization[ _]violation/i.test(String(s.data))) void this.#checkStanding();
          // A membership ending takes its subjects away: that is `expired`, not an error.
          // A credential's lifetime ending (it is cut to the earliest
          // membership end) is routine: the client reconnects with a fresh one.
          if (/authentication[ _]expired/i.test(String(s.data))) continue;
          const refused = permissionSubject(s);
          const ending = this.#endingRoom(refused);
          if (ending) {
            this.#confirmEnd(ending, err);
            continue;
          }
          // A subscription the reconnect restored just before the end took it away.
          if (refused !== undefined && (this.#endedSubjects.get(refused) ?? 0) > Date.now())
            continue;
          this.emit('error', err);
        }
      }
    })();
    void nc.closed().then(() => {
      if (nc === this.#conn.nc) this.emit('closed');
    });
  }

  /**
   * The server refused this identity: ask the control plane why. A revoked
   * or unknown key closes the client (event `revoked`); anything else (the
   * store electing a leader, a node down) is transient and reconnecting goes on.
   */
  #checkStanding(): Promise<void> {
    this.#standing ??= (async () => {
      try {
        await this.control.me();
      } catch (err) {
        if (err instanceof ControlError && err.status === 401 && err.code === 'EXPIRED_KEY') {
          await this.#ended(null, this.#ends.get(null)?.at ?? new Date().toISOString());
        } else if (
          err instanceof ControlError &&
          err.status === 401 &&
          (err.code === 'REVOKED_KEY' || err.code === 'UNKNOWN_KEY')
        ) {
          this.emit('revoked', err.code);
          await this.close();
        }
      } finally {
        this.#standing = undefined;
      }
    })();
    return this.#standing;
  }

  /**
   * Subscribed rooms re-read their statements now and then, so a dropped
   * announcement leaves a subscriber behind for a bounded time. Network
   * failures wait for the next round; a statement that does not verify is
   * `untrusted`, as everywhere.
   */
  #startStatementChecks(everyMs: number): void {
    if (!(everyMs > 0)) return;
    let running = false;
    this.#statementTimer = setInterval(() => {
      // One round at a time, one room at a time, one call per room unless
      // the owner signed something new: a client in many rooms costs the
      // control plane a steady trickle, not a burst.
      if (running) return;
      running = true;
      void (async () => {
        for (const [roomId, set] of [...this.#subs]) {
          if (this.#closed) break;
          if (set.size === 0 || !this.#rooms.has(roomId)) continue;
          try {
            const state = await this.#rooms.get(roomId)!;
            const r = await this.control.statements(roomId, state.chain.seq);
            if (r.head === state.chain.seq && r.statements.length === 0) continue;
            await this.#recheck(roomId); // verifies; a shorter chain is ROLLBACK
          } catch (e) {
            if (e instanceof TrustError) this.emit('untrusted', e);
          }
        }
      })().finally(() => (running = false));
    }, everyMs);
    this.#statementTimer.unref?.();
  }

  /** Re-reads a loaded room's statements and keys; `rekeyed` when the epoch moved. */
  async #recheck(roomId: string, force = true): Promise<void> {
    const state = await this.#rooms.get(roomId)!;
    const before = state.chain.epoch;
    await state.refresh(force);
    if (state.chain.epoch !== before) this.emit('rekeyed', roomId, state.chain.epoch);
  }

  #watchEvents(): void {
    this.#conn.subscribe(userEventsSubject(this.identity.signPubHex), (msg) => {
      let ev: { type?: string; room?: string; reason?: string };
      try {
        ev = JSON.parse(new TextDecoder().decode(msg.data));
      } catch {
        return;
      }
      void this.#onEvent(ev).catch((e: unknown) =>
        e instanceof TrustError ? this.emit('untrusted', e) : this.emit('error', e as Error)
      );
    });
  }

  async #onEvent(ev: { type?: string; room?: string; reason?: string }): Promise<void> {
    switch (ev.type) {
      case 'member.added':
        // Lazily: the next use of a room we were not in renews the connection
        // (a reconnect drops in-flight core messages, so not on every event).
        this.#permsStale = true;
        if (ev.room) this.emit('invited', ev.room);
        if (ev.room && this.#rooms.has(ev.room)) await this.#recheck(ev.room, false);
        return;
      case 'room.changed':
      case 'room.rekeyed':
        // Not forced: a stream of events costs at most one refresh a second per room.
        if (ev.room && this.#rooms.has(ev.room)) await this.#recheck(ev.room, false);
        return;
      case 'rekey.needed':
        // A member was revoked or expired: the owner rotates to a key they lack.
        if (ev.room) this.#queueRekey(ev.room);
        return;
      case 'member.removed':
        if (ev.room) {
          // Only the owner's statement removes us: an event alone (which the
          // control plane could send at will) must not make us drop, and later
          // reload, what we verified.
          const loaded = this.#rooms.get(ev.room);
          if (loaded) {
            const state = await loaded.catch(() => undefined);
            if (state) {
              const still = await state
                .refresh(true)
                .then(() => state.chain.role(this.identity.signPubHex) !== undefined)
                .catch(
                  (err: unknown) =>
                    !(err instanceof ControlError && (err.status === 403 || err.status === 404))
                );
              if (still) return;
            }
          }
          await this.#forget(ev.room);
          this.emit('removed', ev.room, ev.reason ?? 'removed');
        }
        return;
    }
  }

  /**
   * Renews the NATS connection (new permissions from the auth callout),
   * make-before-break: the new connection is up and subscribed before the
   * old one lets go, so no subscription misses a message (event `refresh`).
   */
  refreshConnection(reason: string): Promise<void> {
    if (this.#closed) return Promise.reject(new SealbusError('CLOSED', 'the client is closed'));
    this.#refreshing ??= (async () => {
      try {
        this.#permsStale = false;
        const started = Date.now();
        await this.#conn.renew();
        this.#authenticatedAt = started;
        this.emit('refresh', reason);
      } finally {
        this.#refreshing = undefined;
      }
    })();
    return this.#refreshing;
  }

  /** The room's state, loaded once; refreshes the connection if the membership is newer than it. */
  async #room(roomId: string): Promise<RoomState> {
    if (this.#closed) throw new SealbusError('CLOSED', 'the client is closed');
    let p = this.#rooms.get(roomId);
    if (!p) {
      p = RoomState.load(roomId, this.control, this.identity, this.#trust);
      this.#rooms.set(roomId, p);
      p.catch(() => this.#rooms.delete(roomId));
    }
    const state = await p;
    if (!this.#fresh.has(roomId)) {
      const mine = state.detail.members.find((m) => m.sign_pub === this.identity.signPubHex);
      const newer =
        mine && Date.parse(mine.added_at) > this.#authenticatedAt - PERMISSION_MARGIN_MS;
      if (this.#permsStale || newer)
        await this.refreshConnection(`membership of ${roomId} is newer than the connection`);
      this.#fresh.add(roomId);
      if (mine?.expires_at) this.#armEnd(roomId, mine.expires_at, state.chain.subject);
    }
    return state;
  }

  /** What this client trusts now, to pass as `trustState` to a later run (JSON). */
  trustState(): TrustState {
    return this.#pins.export();
  }

  /**
   * A sign key's fingerprint: 60 digits in 12 groups of 5, the same as
   * `membershipd identity fingerprint FILE` prints. Compare it out of band
   * before trusting a room's owner (`trustOwner`).
   */
  fingerprint(signPub: string): string {
    return fingerprintOf(signPub);
  }

  /**
   * Creates a room; this identity signs its first statement (its owner,
   * epoch 0, and for an encrypted room the commitment to epoch 0's key,
   * which is made here and sealed to this identity only).
   */
  async createRoom(input: { subject: string; policy: RoomPolicy }): Promise<MyRoom> {
    const policy: unknown = (input as { policy?: unknown } | undefined)?.policy;
    if (
      typeof policy !== 'object' ||
      policy === null ||
      !(['encrypt', 'persist', 'sign'] as const).every(
        (k) => typeof (policy as Record<string, unknown>)[k] === 'boolean'
      )
    )
      throw new SealbusError(
        'BAD_INPUT',
        'createRoom: policy must be {encrypt, persist, sign}, each true or false'
      );
    if (typeof input.subject !== 'string')
      throw new SealbusError('BAD_INPUT', 'createRoom: subject must be a string');
    const key = input.policy.encrypt ? newRoomKey() : null;
    const id = randomBytes(12).toString('hex');
    const statement = authorStatement(this.identity.signSeed, null, {
      room: id,
      subject: input.subject,
      policy: input.policy,
      owner: this.identity.signPubHex,
      epoch: 0,
      key,
      members: [[this.identity.signPubHex, 'owner']],
    });
    const room = await this.control.createRoom({
      id,
      subject: input.subject,
      policy: input.policy,
      statement,
      ...(key ? { sealed_key: sealRoomKey(key, this.identity.kexPubHex) } : {}),
    });
    this.#pins.pin(room.id, this.identity.signPubHex);
    return room;
  }

  /**
   * Invites a user: signs the statement that adds them and seals the
   * room's current key to their kex key, only if that key's binding
   * verifies under the sign_pub given here (TrustError `UNBOUND_KEY`
   * otherwise, and nothing is sealed or sent).
   */
  async invite(
    roomId: string,
    signPub: string,
    role: 'writer' | 'reader' = 'writer',
    opts: { expiresAt?: string } = {}
  ) {
    const state = await this.#room(roomId);
    await state.refresh(true);
    const chain = state.chain;
    this.#mustOwn(state);
    const { epoch, key } = state.currentKey();
    let sealed: string | undefined;
    if (key)
      sealed = sealRoomKey(
        key,
        boundKexPub(await this.control.directory(signPub), signPub, roomId)
      );
    const statement = authorNext(this.identity.signSeed, chain, {
      epoch,
      key,
      members: [...chain.members(), [signPub, role]],
    });
    const r = await this.control.addMember(roomId, {
      sign_pub: signPub,
      role,
      epoch,
      statement,
      ...(sealed ? { sealed_key: sealed } : {}),
      ...(opts.expiresAt ? { expires_at: opts.expiresAt } : {}),
    });
    await state.refresh(true);
    return r;
  }

  /**
   * Removes a member (a signed statement without them) and, in an encrypted
   * room, rotates the key at once so the removed member cannot read
   * anything published afterwards.
   */
  async removeMember(roomId: string, signPub: string): Promise<{ epoch: number }> {
    const state = await this.#room(roomId);
    await state.refresh(true);
    this.#mustOwn(state);
    const chain = state.chain;
    const statement = authorNext(this.identity.signSeed, chain, {
      epoch: chain.epoch,
      key: chain.policy.encrypt ? state.currentKey().key : null,
      members: chain.members().filter(([k]) => k !== signPub),
    });
    await this.control.removeMember(roomId, signPub, { statement });
    if (!chain.policy.encrypt) {
      await state.refresh(true);
      return { epoch: state.chain.epoch };
    }
    return { epoch: await this.rekey(roomId) };
  }

  /**
   * Rotates an encrypted room's key to the next epoch: a signed statement
   * of the new epoch and its key's commitment, the key sealed to every
   * active member (revoked users and expired memberships are left out, and
   * lose the membership). Every member's kex key must be bound to its sign
   * key (TrustError `UNBOUND_KEY`, nothing sent). Owner only.
   */
  async rekey(roomId: string): Promise<number> {
    const state = await this.#room(roomId);
    await state.refresh(true);
    this.#mustOwn(state);
    const chain = state.chain;
    const now = Date.now();
    const view = new Map(state.detail.members.map((m) => [m.sign_pub, m]));
    const keep: Array<[string, MemberRole]> = chain.members().filter(([k, role]) => {
      if (role === 'owner') return true;
      const m = view.get(k);
      return m !== undefined && m.status === 'active' && grantActive(m.expires_at, now);
    });
    const key = newRoomKey();
    const epoch = chain.epoch + 1;
    const sealed = this.#sealTo(
      key,
      keep.map(([k]) => k),
      view,
      roomId
    );
    const statement = authorNext(this.identity.signSeed, chain, {
      epoch,
      key,
      members: keep,
    });
    await this.control.rekey(roomId, { epoch, sealed_keys: sealed, statement });
    await state.refresh(true);
    state.adoptOwnKey(epoch, key);
    return epoch;
  }

  /**
   * A rotation this client starts on its own (a member revoked or expired,
   * as the control plane says): at most one per room every 10 s, so a
   * control plane claiming it again and again cannot make the owner sign
   * rekeys without end.
   */
  /**
   * `rekey.needed` names rooms (one per room a revoked or expired member was
   * in: a burst when a user in many rooms goes). They are taken one at a
   * time, each room once while queued, at most REKEY_QUEUE_MAX waiting, a
   * room this client has not loaded at most every REKEY_LOAD_SPACING_MS: an
   * event stream naming random rooms costs a bounded number of calls. A
   * room left out rotates at its owner's next publish anyway.
   */
  #queueRekey(roomId: string): void {
    if (typeof roomId !== 'string' || this.#rekeyQueue.size >= REKEY_QUEUE_MAX) return;
    this.#rekeyQueue.add(roomId);
    if (this.#rekeyDraining) return;
    this.#rekeyDraining = true;
    void (async () => {
      try {
        while (this.#rekeyQueue.size > 0 && !this.#closed) {
          const next = this.#rekeyQueue.values().next().value as string;
          this.#rekeyQueue.delete(next);
          const loaded = this.#rooms.has(next);
          try {
            if (!loaded) {
              // One listing tells which of the named rooms this identity owns.
              let owned = this.#ownedRooms;
              if (!owned || Date.now() - owned.at > REKEY_LOAD_SPACING_MS * 10) {
                const mine = await this.control.listMyRooms();
                owned = this.#ownedRooms = {
                  ids: new Set(mine.filter((r) => r.role === 'owner').map((r) => r.id)),
                  at: Date.now(),
                };
              }
              if (!owned.ids.has(next)) continue;
            }
            const state = await this.#room(next);
            if (state.chain.owner === this.identity.signPubHex && state.chain.policy.encrypt)
              await this.#autoRekey(next);
          } catch (e) {
            if (e instanceof TrustError) this.emit('untrusted', e);
            else if (!(e instanceof ControlError)) this.emit('error', e as Error);
          }
          if (!loaded) await new Promise((r) => setTimeout(r, REKEY_LOAD_SPACING_MS));
        }
      } finally {
        this.#rekeyDraining = false;
      }
    })();
  }

  async #autoRekey(roomId: string): Promise<void> {
    const last = this.#autoRekeyAt.get(roomId) ?? 0;
    if (Date.now() - last < AUTO_REKEY_INTERVAL_MS) return;
    this.#autoRekeyAt.set(roomId, Date.now());
    await this.rekey(roomId);
  }

  /**
   * Adopts a room made before statements existed (Sealbus 0.1): this
   * identity, its owner, signs the room's first statement. `members` is who
   * the application knows to be in the room, with their roles (this
   * identity as `owner` included or not); the control plane's member list
   * must be exactly that, or nothing is signed (`TrustError`
   * `BAD_STATEMENT`), so a member it injected is never signed in. An
   * encrypted room moves to a new epoch at once, its fresh key sealed to
   * each member's bound kex key (`UNBOUND_KEY` otherwise): no key the
   * control plane served is ever committed to. The room's policy and
   * subject are signed too: pass `expect.policy` (and `expect.subject`) as
   * the application knows them, and a served one that differs signs
   * nothing; without `expect.policy`, only a room served as encrypted and
   * signed is adopted (a weaker policy served by a lying control plane
   * would make the owner publish in the clear). Returns the epoch.
   */
  async adoptRoom(
    roomId: string,
    members: Iterable<[string, MemberRole]> | Record<string, MemberRole>,
    expect: { policy?: RoomPolicy; subject?: string } = {}
  ): Promise<number> {
    const expected = new Map<string, MemberRole>(
      Symbol.iterator in Object(members)
        ? (members as Iterable<[string, MemberRole]>)
        : Object.entries(members as Record<string, MemberRole>)
    );
    expected.set(this.identity.signPubHex, 'owner');
    const detail = await this.control.getRoom(roomId);
    if (detail.owner !== this.identity.signPubHex)
      throw new ControlError(403, 'NOT_OWNER', `only the owner of room ${roomId} can adopt it`);
    if (this.#pins.known(roomId))
      throw new TrustError(
        'ROLLBACK',
        `room ${roomId} already has statements this client verified`,
        roomId
      );
    const p = detail.policy;
    const policyOk = expect.policy
      ? p.encrypt === expect.policy.encrypt &&
        p.persist === expect.policy.persist &&
        p.sign === expect.policy.sign
      : p.encrypt && p.sign;
    if (!policyOk)
      throw new TrustError(
        'BAD_STATEMENT',
        `room ${roomId}: the control plane serves policy ${JSON.stringify(p)}` +
          (expect.policy
            ? `, not the ${JSON.stringify(expect.policy)} given; nothing signed`
            : '; pass the policy the application knows (adoptRoom(room, members, {policy})) to adopt a room that is not encrypted and signed; nothing signed'),
        roomId
      );
    if (expect.subject !== undefined && detail.subject !== expect.subject)
      throw new TrustError(
        'BAD_STATEMENT',
        `room ${roomId}: the control plane serves subject ${detail.subject}, not ${expect.subject}; nothing signed`,
        roomId
      );
    const listed = new Map(detail.members.map((m) => [m.sign_pub, m.role]));
    const same =
      listed.size === expected.size && [...expected].every(([k, r]) => listed.get(k) === r);
    if (!same)
      throw new TrustError(
        'BAD_STATEMENT',
        `room ${roomId}: the control plane lists other members than the ones given; nothing signed`,
        roomId
      );
    const epoch = detail.policy.encrypt ? detail.epoch + 1 : detail.epoch;
    const key = detail.policy.encrypt ? newRoomKey() : null;
    const sealed = key
      ? this.#sealTo(
          key,
          [...expected.keys()],
          new Map(detail.members.map((m) => [m.sign_pub, m])),
          roomId
        )
      : undefined;
    const statement = authorStatement(this.identity.signSeed, null, {
      room: roomId,
      subject: detail.subject,
      policy: detail.policy,
      owner: this.identity.signPubHex,
      epoch,
      key,
      members: expected,
    });
    await this.control.adoptStatement(roomId, statement, sealed);
    this.#pins.pin(roomId, this.identity.signPubHex);
    this.#rooms.delete(roomId);
    return epoch;
  }

  /**
   * `key` sealed to each member named (this identity's own kex key, or a
   * member's kex key from `view` only if bound to that sign key: UNBOUND_KEY
   * otherwise, before anything is sent).
   */
  #sealTo(
    key: Uint8Array,
    members: string[],
    view: ReadonlyMap<string, Parameters<typeof boundKexPub>[0]>,
    roomId: string
  ): Record<string, string> {
    const sealed: Record<string, string> = {};
    for (const k of members) {
      const entry = view.get(k);
      if (k === this.identity.signPubHex) sealed[k] = sealRoomKey(key, this.identity.kexPubHex);
      else if (!entry)
        throw new TrustError(
          'UNBOUND_KEY',
          `user ${k}: no entry to seal to; nothing sealed`,
          roomId
        );
      else sealed[k] = sealRoomKey(key, boundKexPub(entry, k, roomId));
    }
    return sealed;
  }

  #mustOwn(state: RoomState): void {
    if (state.chain.owner !== this.identity.signPubHex)
      throw new ControlError(403, 'NOT_OWNER', `only the owner of room ${state.id} can change it`);
  }

  /** Deletes a room this identity owns (memberships, keys and history go with it). */
  async deleteRoom(roomId: string): Promise<void> {
    for (const s of this.#subs.get(roomId) ?? []) await s.stop();
    await this.control.deleteRoom(roomId);
    await this.#forget(roomId);
  }

  /** This client is done with a room: its subscriptions stop and what it loaded goes. */
  async #forget(roomId: string): Promise<void> {
    for (const s of this.#subs.get(roomId) ?? []) await s.stop().catch(() => {});
    this.#subs.delete(roomId);
    this.#rooms.delete(roomId);
    this.#sealers.delete(roomId);
    this.#fresh.delete(roomId);
    const end = this.#ends.get(roomId);
    if (end) clearTimeout(end.timer);
    this.#ends.delete(roomId);
    this.#answerSubs.get(roomId)?.unsubscribe();
    this.#answerSubs.delete(roomId);
  }

  /** Calls #ended when a grant's end `at` comes (room null: the identity's own grant). */
  #armEnd(room: string | null, at: string, subject?: string): void {
    const due = Date.parse(at);
    if (!Number.isFinite(due) || this.#closed) return;
    const had = this.#ends.get(room);
    if (had?.at === at) return;
    if (had) clearTimeout(had.timer);
    const wait = due - Date.now();
    const timer =
      wait > MAX_TIMER_MS
        ? setTimeout(() => {
            this.#ends.delete(room);
            this.#armEnd(room, at, subject);
          }, MAX_TIMER_MS)
        : setTimeout(() => void this.#ended(room, at), Math.max(0, wait));
    timer.unref();
    this.#ends.set(room, { at, timer, ...(subject ? { subject } : {}) });
  }

  /**
   * A grant ended. The identity's own: the control plane is asked first (a
   * clock ahead of the daemon's must not close a client early), then the
   * client closes. A membership: the room is let go.
   */
  async #ended(room: string | null, at: string, attempt = 1): Promise<void> {
    const end = this.#ends.get(room);
    if (end) clearTimeout(end.timer);
    this.#ends.delete(room);
    if (this.#closed) return;
    if (room === null) {
      // The control plane's word: 401 EXPIRED_KEY, or a record saying when.
      const verdict = await this.control.me().then(
        (me): 'ended' | 'unknown' | { at: string | null } =>
          me.expires_at && Date.parse(me.expires_at) <= Date.now() - EXPIRY_SLACK_MS
            ? 'ended'
            : { at: me.expires_at },
        (e: unknown) =>
          e instanceof ControlError && e.code === 'EXPIRED_KEY' ? 'ended' : 'unknown'
      );
      if (this.#closed) return;
      if (typeof verdict === 'object') {
        // Not ended by the daemon's clock (behind ours): look again shortly,
        // or at the end it names now.
        if (verdict.at && verdict.at !== at) return this.#armEnd(null, verdict.at);
        if (verdict.at === null) return;
      }
      if (verdict !== 'ended' && attempt < GRANT_END_ATTEMPTS) {
        // Not answered (or not yet ended): ask again, bounded; after that
        // our own clock decides.
        const timer = setTimeout(() => void this.#ended(null, at, attempt + 1), 1_000);
        timer.unref();
        this.#ends.set(null, { at, timer });
        return;
      }
      this.emit('expired', null, at);
      await this.close();
      return;
    }
    if (!this.#rooms.has(room)) return;
    const until = Date.now() + ENDED_QUIET_MS;
    for (const [k, t] of this.#endedSubjects) if (t <= Date.now()) this.#endedSubjects.delete(k);
    if (end?.subject) this.#endedSubjects.set(end.subject, until);
    this.#endedSubjects.set(memberDeliverSubject(this.identity.signPubHex, room), until);
    await this.#forget(room);
    this.emit('expired', room, at);
  }

  /** The room (with an end) whose subject or delivery subject `subject` is. */
  #endingRoom(subject: string | undefined): { room: string; at: string } | undefined {
    if (!subject) return undefined;
    for (const [room, end] of this.#ends)
      if (
        room !== null &&
        (subject === end.subject ||
          subject === memberDeliverSubject(this.identity.signPubHex, room))
      )
        return { room, at: end.at };
    return undefined;
  }

  /**
   * NATS refused a subject of a room whose membership has an end: the
   * server's clock may be ahead of ours, so ask the control plane. A
   * membership it says expired is `expired` now; anything else is reported
   * as the error it was.
   */
  #confirmEnd(ending: { room: string; at: string }, err: Error, attempt = 1): void {
    void this.control.getRoom(ending.room).then(
      // Still in force by the control plane's clock: NATS cuts a credential
      // to the whole second before the end, and clocks differ a little.
      // Ask again shortly (bounded); past that, it is the error it was.
      () => {
        if (this.#closed || !this.#ends.has(ending.room)) return;
        if (attempt >= CONFIRM_ATTEMPTS) return void this.emit('error', err);
        const timer = setTimeout(() => this.#confirmEnd(ending, err, attempt + 1), 1_000);
        timer.unref();
      },
      (e: unknown) => {
        // Already taken up (the end's timer, a removal): nothing to report.
        if (this.#closed || !this.#ends.has(ending.room)) return;
        if (e instanceof ControlError && e.code === 'MEMBERSHIP_EXPIRED')
          void this.#ended(ending.room, ending.at);
        else this.emit('error', err);
      }
    );
  }

  /** The NATS server this client is attached to now (its name), if connected. */
  get attachedServer(): string | null {
    return this.#conn.nc.info?.server_name ?? null;
  }

  listMyRooms(): Promise<MyRoom[]> {
    return this.control.listMyRooms();
  }

  /** One of this identity's rooms, found by its id or its subject; undefined when it has none such. */
  async room(idOrSubject: string): Promise<MyRoom | undefined> {
    if (typeof idOrSubject !== 'string')
      throw new SealbusError('BAD_INPUT', 'room: an id or a subject');
    return (await this.control.listMyRooms()).find(
      (r) => r.id === idOrSubject || r.subject === idOrSubject
    );
  }

  /**
   * Publishes to a room: bytes, or a string (sent as UTF-8), encrypted under
   * the current epoch key and signed as the room's policy says. Persisted
   * rooms resolve once JetStream stored the frame. Anything else is
   * `SealbusError` `BAD_INPUT`; more than one frame carries is
   * `PAYLOAD_TOO_LARGE`; a reader's publish is `PublishError`
   * `NOT_A_WRITER`, before anything is sent.
   */
  async publish(roomId: string, data: Uint8Array | string): Promise<void> {
    const bytes = payloadBytes(data);
    const state = await this.#writable(roomId);
    const frame = this.#seal(roomId, state, bytes);
    if (state.chain.policy.persist) {
      this.#appender ??= new Appender(this.#conn, this.identity.signPubHex);
      await this.#appender.append(roomId, frame, {
        attemptMs: PUBLISH_ATTEMPT_MS,
        timeoutMs: this.#publishTimeoutMs,
      });
    } else {
      this.#conn.publish(state.chain.subject, frame);
    }
  }

  /**
   * Encrypts `data` on this client under a fresh random key (chunked
   * ChaCha20-Poly1305, 64 KiB chunks) and stores the ciphertext in the room
   * (writers and the owner): resolves to the ref that opens it, key
   * included, so treat the ref like the plaintext. The ciphertext is
   * spooled to a 0600 file under `os.tmpdir()` (deleted afterwards; the
   * plaintext never touches the disk) because the signed upload names its
   * digest before its body. Memory stays constant for any input size.
   *
   * @example
   * const ref = await bus.putBlob(room.id, fs.createReadStream('photo.jpg'));
   */
  async putBlob(roomId: string, data: BlobData): Promise<BlobRef> {
    const spool = await spoolBlob(data);
    try {
      await this.control.uploadBlob(roomId, {
        path: spool.path,
        size: spool.stored,
        sha256: spool.sha256,
      });
      return spool.ref;
    } finally {
      await spool.dispose();
    }
  }

  /**
   * `putBlob`, then publishes the ref (with `name` and `type`) as a room
   * message: receivers see it as `m.blob` and fetch it with `getBlob`.
   */
  async publishBlob(
    roomId: string,
    data: BlobData,
    meta: { name?: string; type?: string } = {}
  ): Promise<BlobRef> {
    const ref = checkRef({
      ...(await this.putBlob(roomId, data)),
      ...(meta.name !== undefined ? { name: meta.name } : {}),
      ...(meta.type !== undefined ? { type: meta.type } : {}),
    });
    await this.publish(roomId, blobEnvelope(ref));
    return ref;
  }

  /**
   * The blob's plaintext, verified chunk by chunk as it streams in, in
   * constant memory; any tampering ends it with `SealbusError`
   * `BLOB_CORRUPT`, and no unverified plaintext is ever yielded.
   */
  async getBlobStream(roomId: string, ref: BlobRef): Promise<ReadableStream<Uint8Array>> {
    const r = checkRef(ref);
    const { body } = await this.control.downloadBlob(roomId, r.hash);
    return ReadableStream.from(openBlob(body, r));
  }

  /** `getBlobStream`, collected (holds the whole plaintext: prefer the stream for large blobs). */
  async getBlob(roomId: string, ref: BlobRef): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    const r = checkRef(ref);
    const { body } = await this.control.downloadBlob(roomId, r.hash);
    for await (const p of openBlob(body, r)) parts.push(Uint8Array.from(p));
    return Buffer.concat(parts);
  }

  /**
   * Asks the room and resolves with the first answer (`sub.respond` on the
   * other side): the request is a room message like any other (every
   * member subscribed sees it, `expectsReply` set); the answer comes to this
   * identity's own inbox only, sealed under the room's key by a writer of
   * the room and bound to this request (an answer to another request is
   * refused). Ephemeral rooms only (`UNSUPPORTED` in a persisted one, which
   * would store every request). No answer within `timeoutMs` (default
   * 5 s, at most 60 s): `TIMEOUT`; nobody subscribed: `NO_RESPONDERS`.
   */
  async request(
    roomId: string,
    data: Uint8Array | string,
    opts: { timeoutMs?: number } = {}
  ): Promise<RoomMessage> {
    const bytes = payloadBytes(data);
    const timeoutMs = opts.timeoutMs ?? DEFAULT_REQUEST_MS;
    if (typeof timeoutMs !== 'number' || !(timeoutMs > 0 && timeoutMs <= MAX_REQUEST_MS))
      throw new SealbusError(
        'BAD_INPUT',
        `request: timeoutMs must be more than 0 and at most ${MAX_REQUEST_MS}`
      );
    const state = await this.#writable(roomId);
    if (state.chain.policy.persist)
      throw new SealbusError(
        'UNSUPPORTED',
        `request: room ${roomId} is persisted (every frame is stored); requests run in ephemeral rooms`
      );
    const frame = this.#seal(roomId, state, bytes);
    const id = randomBytes(12).toString('hex');
    await this.#answers(roomId);
    const reply = roomAnswerSubject(roomId, this.identity.signPubHex, id);
    return new Promise<RoomMessage>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.#requests.delete(id);
      };
      const timer = setTimeout(() => {
        done();
        reject(
          waiting.noResponders
            ? new SealbusError('NO_RESPONDERS', `request: nobody in room ${roomId} is listening`)
            : new SealbusError(
                'TIMEOUT',
                `request: no answer in room ${roomId} within ${timeoutMs} ms`
              )
        );
      }, timeoutMs);
      const waiting: Waiting = {
        room: roomId,
        state,
        noResponders: false,
        digest: sha256(frame),
        resolve: (m) => {
          done();
          resolve(m);
        },
        reject: (e) => {
          done();
          reject(e);
        },
      };
      this.#requests.set(id, waiting);
      this.#conn.publish(state.chain.subject, frame, { reply });
    });
  }

  /**
   * Subscribes (once per room) to the answers to this client's requests
   * there: only writers of that room can send to it, so nobody outside the
   * room can flood it.
   */
  async #answers(roomId: string): Promise<void> {
    if (this.#answerSubs.has(roomId)) return;
    this.#answerSubs.set(
      roomId,
      this.#conn.subscribe(roomAnswersInbox(roomId, this.identity.signPubHex), (msg) =>
        this.#onAnswer(msg)
      )
    );
    await this.#conn.flush();
  }

  #onAnswer(msg: Msg): void {
    const id = msg.subject.slice(msg.subject.lastIndexOf('.') + 1);
    const waiting = this.#requests.get(id);
    if (!waiting || msg.subject !== roomAnswerSubject(waiting.room, this.identity.signPubHex, id))
      return;
    if (msg.data.length === 0 && msg.headers?.code === 503) {
      // Only a hint: any writer who saw the request could send one. A real
      // answer still wins until the timeout, which then says NO_RESPONDERS.
      waiting.noResponders = true;
      return;
    }
    const take = (opened: Opened) => {
      const m = opened.message;
      const bound = m.data.length >= 32 && timingSafeEqual(m.data.subarray(0, 32), waiting.digest);
      if (!bound) {
        this.emit('rejected', {
          room: waiting.room,
          code: 'MALFORMED',
          reason: 'an answer that is not bound to this request',
          sender: m.sender,
        });
        return;
      }
      const answer: RoomMessage = Object.assign(
        Object.create(Object.getPrototypeOf(m) as object),
        m,
        {
          data: m.data.subarray(32),
        }
      );
      waiting.resolve(answer);
    };
    // A frame that does not hold up is refused and the request keeps
    // waiting: a junk answer must not fail it.
    try {
      const opened = waiting.state.openNow(msg.data, undefined, (late) => {
        if (late instanceof FrameError)
          this.emit('rejected', { room: waiting.room, code: late.code, reason: late.message });
        else if (!(late instanceof Error)) take(late);
      });
      if (opened) take(opened);
    } catch (err) {
      if (err instanceof FrameError)
        this.emit('rejected', { room: waiting.room, code: err.code, reason: err.message });
      else this.emit('error', err as Error);
    }
  }

  /**
   * Answers a request (`m.expectsReply`) delivered by a subscription of
   * this client: sealed under the room's key, bound to the request, sent to
   * the requester's inbox only. Writers and the owner answer; a reader's
   * answer is `NOT_A_WRITER`, a message that is not a request `BAD_INPUT`.
   */
  async #respond(msg: RoomMessage, data: Uint8Array | string): Promise<void> {
    const bytes = payloadBytes(data, REPLY_BINDING);
    const asked = this.#asked.get(msg);
    if (!asked)
      throw new SealbusError(
        'BAD_INPUT',
        'respond: not a request this client received (m.expectsReply is false)'
      );
    const state = await this.#writable(asked.room);
    const payload = new Uint8Array(REPLY_BINDING + bytes.length);
    payload.set(asked.digest);
    payload.set(bytes, REPLY_BINDING);
    let sealer = this.#replySealers.get(asked.room);
    if (!sealer)
      this.#replySealers.set(
        asked.room,
        (sealer = new FrameSealer(asked.room, this.identity.signSeed))
      );
    const { epoch, key } = state.currentKey();
    const frame = sealer.seal(payload, { epoch, key, sign: state.chain.policy.sign });
    this.#conn.publish(asked.reply, frame);
  }

  /** The room's state, for a publish: this identity must be a writer or its owner. */
  async #writable(roomId: string): Promise<RoomState> {
    const state = await this.#room(roomId);
    const mine = state.chain.role(this.identity.signPubHex);
    if (mine !== 'writer' && mine !== 'owner')
      throw new PublishError(
        'NOT_A_WRITER',
        roomId,
        mine === 'reader'
          ? 'a reader cannot publish to this room'
          : "the owner's statement does not list this identity as a writer"
      );
    if (state.chain.policy.encrypt && state.chain.owner === this.identity.signPubHex) {
      // A member revoked or expired still holds the current key: rotate first.
      const now = Date.now();
      const stale =
        state.detail.needs_rekey ||
        state.detail.members.some((m) => !grantActive(m.expires_at, now));
      if (stale) await this.#autoRekey(roomId);
    }
    return state;
  }

  /** One frame of this client's in the room, under its current epoch. */
  #seal(roomId: string, state: RoomState, bytes: Uint8Array): Uint8Array {
    let sealer = this.#sealers.get(roomId);
    if (!sealer)
      this.#sealers.set(roomId, (sealer = new FrameSealer(roomId, this.identity.signSeed)));
    const { epoch, key } = state.currentKey();
    return sealer.seal(bytes, { epoch, key, sign: state.chain.policy.sign });
  }

  /** Delivers the room's verified, decrypted messages to `handler`; rejected frames go to the `rejected` event. */
  async subscribe(
    roomId: string,
    handler: MessageHandler,
    opts?: SubscribeOptions
  ): Promise<RoomSubscription>;
  /**
   * Without a handler: an async iterable of the room's messages
   * (`for await (const m of sub)`), buffered until read; `stop()` ends it.
   */
  async subscribe(roomId: string, opts?: SubscribeOptions): Promise<MessageStream>;
  async subscribe(
    roomId: string,
    handlerOrOpts?: MessageHandler | SubscribeOptions,
    maybeOpts: SubscribeOptions = {}
  ): Promise<RoomSubscription | MessageStream> {
    if (typeof handlerOrOpts === 'function')
      return this.#subscribe(roomId, handlerOrOpts, maybeOpts);
    if (
      handlerOrOpts !== undefined &&
      (typeof handlerOrOpts !== 'object' || handlerOrOpts === null)
    )
      throw new SealbusError('BAD_INPUT', 'subscribe: a handler function or options');
    const queue: RoomMessage[] = [];
    let wake: (() => void) | undefined;
    let ended = false;
    const sub = await this.#subscribe(
      roomId,
      (m) => {
        queue.push(m);
        wake?.();
      },
      handlerOrOpts ?? {}
    );
    const stop = async () => {
      ended = true;
      wake?.();
      await sub.stop();
    };
    return {
      room: roomId,
      stop,
      respond: (msg, data) => sub.respond(msg, data),
      async *[Symbol.asyncIterator]() {
        try {
          while (true) {
            while (queue.length) yield queue.shift()!;
            if (ended) return;
            await new Promise<void>((r) => (wake = r));
            wake = undefined;
          }
        } finally {
          if (!ended) await stop();
        }
      },
    };
  }

  async #subscribe(
    roomId: string,
    handler: MessageHandler,
    opts: SubscribeOptions
  ): Promise<RoomSubscription> {
    // One feed per room per client: each frame is opened once (its seq
    // moves the replay window once) and handed to every subscription there.
    if (opts.from && this.#feeds.has(roomId))
      throw new SealbusError(
        'BAD_INPUT',
        `subscribe: room ${roomId} is already read by this client; \`from\` applies to the first subscription (stop it first)`
      );
    const entry = { handler };
    let feedP = this.#feeds.get(roomId);
    if (!feedP) {
      // The first subscription's handler is in before anything is read
      // (a persisted room's history starts flowing at once).
      const handlers = new Set([entry]);
      feedP = this.#openFeed(roomId, opts, handlers);
      this.#feeds.set(roomId, feedP);
      feedP.catch(() => {
        if (this.#feeds.get(roomId) === feedP) this.#feeds.delete(roomId);
      });
    }
    const feed = await feedP;
    // The room's last subscription stopped meanwhile, and its feed with it: start anew.
    if (this.#feeds.get(roomId) !== feedP) return this.#subscribe(roomId, handler, opts);
    feed.handlers.add(entry);
    const set = this.#subs.get(roomId) ?? new Set();
    this.#subs.set(roomId, set);
    const handle: RoomSubscription = {
      room: roomId,
      stop: async () => {
        set.delete(handle);
        if (!feed.handlers.delete(entry) || feed.handlers.size > 0) return;
        if (this.#feeds.get(roomId) === feedP) this.#feeds.delete(roomId);
        await feed.stop();
      },
      respond: (msg, data) => this.#respond(msg, data),
    };
    set.add(handle);
    return handle;
  }

  /** Starts reading a room: its subscription (ephemeral) or its member consumer (persisted). */
  async #openFeed(
    roomId: string,
    opts: SubscribeOptions,
    handlers: Set<{ handler: MessageHandler }>
  ): Promise<Feed> {
    const state = await this.#room(roomId);
    const rejected = (bytes: Uint8Array, err: FrameError) => {
      const sender =
        bytes.length >= 50 ? Buffer.from(bytes.subarray(18, 50)).toString('hex') : undefined;
      this.emit('rejected', {
        room: roomId,
        code: err.code,
        reason: err.message,
        ...(sender ? { sender } : {}),
      });
    };
    const hand = async (opened: Opened, bytes: Uint8Array, reply?: string) => {
      if (opened.loss) this.emit('loss', opened.loss);
      // A request: answerable only at the sender's own answer subject in
      // this room (never a subject the sender chose elsewhere, which this
      // client's answer would then be published to).
      if (reply && isAnswerSubject(reply, roomId, opened.message.sender)) {
        opened.message.expectsReply = true;
        this.#asked.set(opened.message, { room: roomId, reply, digest: sha256(bytes) });
      }
      for (const { handler } of [...handlers]) {
        try {
          await handler(opened.message);
        } catch (err) {
          this.emit('error', err as Error);
        }
      }
    };
    // Never waits on the network: a frame that needs a refresh is parked
    // (bounded) and handed over when the refresh decides it, while the
    // frames behind it go on.
    const deliver = async (
      bytes: Uint8Array,
      streamSeq?: number,
      reply?: string,
      signatureValid?: boolean
    ) => {
      let opened: Opened | null;
      try {
        opened = state.openNow(
          bytes,
          streamSeq,
          (late) => {
            if (late instanceof FrameError) rejected(bytes, late);
            else if (late instanceof Error) this.emit('error', late);
            else void hand(late, bytes, reply);
          },
          signatureValid
        );
      } catch (err) {
        if (err instanceof FrameError) rejected(bytes, err);
        else this.emit('error', err as Error);
        return;
      }
      if (opened) await hand(opened, bytes, reply);
    };

    if (state.chain.policy.persist) {
      if (opts.from) await this.control.cursor(roomId, { from: opts.from });
      const reader = new PersistedReader({
        conn: this.#conn,
        signPub: this.identity.signPubHex,
        roomId,
        deliver: (bytes, seq) => deliver(bytes, seq),
        // Bounded: a stop must not hang on an unreachable control plane.
        resume: (after) =>
          withTimeout(
            this.control.cursor(roomId, { after }).then(() => {}),
            RESUME_TIMEOUT_MS
          ),
        onError: (err) => this.emit('error', err),
      });
      await this.#conn.flush();
      return { handlers, stop: () => reader.stop() };
    }
    // Signatures may be checked on other cores (verifier.ts); frames are
    // still opened one after another, in the order they came.
    const ordered = new OrderedFrames(
      state.chain.policy.sign ? VerifyPool.shared() : null,
      (bytes, reply, sig) => void deliver(bytes, undefined, reply, sig)
    );
    const sub = this.#conn.subscribe(
      state.chain.subject,
      (msg) => ordered.push(msg.data, msg.reply),
      // A subject taken away as the membership ends: the connection's
      // status reports it once, and #confirmEnd decides (expired or error).
      (err) => void (this.#endingRoom(permissionSubject(err)) ?? this.emit('error', err))
    );
    await this.#conn.flush();
    return {
      handlers,
      stop: async () => {
        sub.unsubscribe();
        ordered.close();
      },
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#statementTimer);
    for (const end of this.#ends.values()) clearTimeout(end.timer);
    this.#ends.clear();
    for (const r of [...this.#requests.values()])
      r.reject(new SealbusError('CLOSED', 'request: the client closed'));
    for (const set of this.#subs.values()) for (const s of set) await s.stop().catch(() => {});
    this.#appender?.close();
    await this.#conn.close();
    this.control.close();
  }
}

const utf8 = new TextEncoder();

/** The subject NATS refused, from a permissions violation (status or error). */
function permissionSubject(x: unknown): string | undefined {
  const ctx = (x as { permissionContext?: { subject?: unknown } } | null)?.permissionContext;
  return typeof ctx?.subject === 'string' ? ctx.subject : undefined;
}

/** Whether `reply` is `requester`'s answer subject in `roomId` (one id token after its prefix). */
function isAnswerSubject(reply: string, roomId: string, requester: string): boolean {
  const prefix = roomAnswerPrefix(roomId, requester);
  return reply.startsWith(prefix) && /^[A-Za-z0-9]{1,64}$/.test(reply.slice(prefix.length));
}

function sha256(bytes: Uint8Array): Uint8Array {
  return createHash('sha256').update(bytes).digest();
}

/** Whether a server URL names `hostPort` (as `NatsConnection.getServer()` gives it). */
function sameServer(url: string, hostPort: string): boolean {
  const bare = url.replace(/^[a-z]+:\/\//i, '');
  return bare === hostPort;
}

/** What `publish` sends: bytes as given, a string as UTF-8; anything else is refused. */
function payloadBytes(data: unknown, reserved = 0): Uint8Array {
  const bytes =
    data instanceof Uint8Array ? data : typeof data === 'string' ? utf8.encode(data) : null;
  if (!bytes)
    throw new SealbusError(
      'BAD_INPUT',
      `publish: the payload must be a Uint8Array or a string, not ${data === null ? 'null' : typeof data}`
    );
  if (bytes.length > FRAME_MAX_PAYLOAD - reserved)
    throw new SealbusError(
      'PAYLOAD_TOO_LARGE',
      `publish: ${bytes.length} bytes; one message carries at most ${FRAME_MAX_PAYLOAD - reserved}`
    );
  return bytes;
}

/**
 * The kex key to seal to for `signPub` (the key the application or the
 * owner's statement named, never one taken from the answer): only when the
 * answer is about that key and its binding verifies under it.
 */
function boundKexPub(
  entry: {
    sign_pub: string;
    kex_pub: string | null;
    nats_pub: string | null;
    binding: string | null;
  },
  signPub: string,
  room: string
): string {
  if (entry.sign_pub !== signPub || !bindingVerifies(entry) || !entry.kex_pub)
    throw new TrustError(
      'UNBOUND_KEY',
      `user ${signPub}: no kex key bound to this sign key (the binding does not verify); nothing sealed`,
      room
    );
  return entry.kex_pub;
}
