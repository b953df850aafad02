import { blobOfMessage } from './blobs.js';
import type { BlobRef } from '@sealbus/crypto';
import {
  FrameError,
  frameSignatureValid,
  openFramePayload,
  parseFrame,
  ReplayWindow,
  type FrameErrorCode,
  type Identity,
} from '@sealbus/crypto';
import type { RoomDetail } from '@sealbus/protocol';
import { StatementChain, TrustError, type ServedStatement } from './chain.js';
import type { ControlClient } from './control.js';
import { openRoomKey } from './keys.js';

/** How long after a rotation frames of the previous epoch are still taken live (default 30 s). */
export const DEFAULT_ROTATION_GRACE_MS = 30_000;

/** What a room's state asks its client about trust. */
export interface RoomTrust {
  /** Refuses (throws TrustError) an owner the application does not trust or that changed. */
  checkOwner(room: string, owner: string): Promise<void>;
  /** Live frames of the previous epoch are taken this long after the rotation. */
  graceMs: number;
  /** Told when a background refresh found the control plane lying (TrustError). */
  report?: (err: TrustError) => void;
  /** Checks a verified chain against what this client verified before (ROLLBACK), and records it. */
  verified?: (room: string, chain: StatementChain) => void;
  /** True when this client has verified statements of the room before. */
  known?: (room: string) => boolean;
}

/** A decrypted, verified room message. */
export interface RoomMessage {
  room: string;
  subject: string;
  /** The sender's sign_pub. */
  sender: string;
  epoch: number;
  session: string;
  seq: number;
  data: Uint8Array;
  /**
   * History only: the sender was a writer when the frame's epoch was
   * current but is not one in the owner's latest statement (left, removed or
   * made a reader since).
   */
  formerMember: boolean;
  /** Stream sequence, for persisted rooms. */
  streamSeq?: number;
  /** A request (`bus.request`): answer it with `sub.respond(m, data)`. */
  expectsReply?: boolean;
  /**
   * The blob ref the message carries (sent with `publishBlob`), validated;
   * fetch it with `bus.getBlob(m.room, m.blob)`. Absent for other messages.
   */
  blob?: BlobRef;
  /** `data` as UTF-8 text. */
  string(): string;
  /** `data` parsed as JSON (UTF-8); throws SyntaxError when it is not JSON. */
  json<T = unknown>(): T;
}

const utf8 = new TextDecoder();
/** What every delivered message can do with its bytes (not own properties: the fields are the data). */
const messageMethods = {
  string(this: RoomMessage): string {
    return utf8.decode(this.data);
  },
  json<T = unknown>(this: RoomMessage): T {
    return JSON.parse(utf8.decode(this.data)) as T;
  },
};

/** A frame a receiver refused, with the reason. Never dropped silently. */
export interface RejectedFrame {
  room: string;
  code: FrameErrorCode;
  reason: string;
  sender?: string;
}

/** A jump in one sender's sequence: these frames may have been lost. */
export interface PossibleLoss {
  room: string;
  sender: string;
  session: string;
  from: number;
  to: number;
}

const REFRESH_MIN_INTERVAL_MS = 1_000;
/** Frames (and bytes) of one room that may wait for a refresh at once. */
export const MAX_PARKED = 32;
export const MAX_PARKED_BYTES = 4 * 1024 * 1024;
/** And all rooms of the process together: many rooms do not multiply the bound. */
export const MAX_PARKED_BYTES_ALL_ROOMS = 32 * 1024 * 1024;
let parkedBytesAllRooms = 0;

/** A frame opened: the message and any loss its seq jump implies. */
export interface Opened {
  message: RoomMessage;
  loss: PossibleLoss | null;
}

/** Where the outcome of a parked frame goes. */
export type LateOutcome = (outcome: Opened | Error) => void;

/**
 * What a client knows about one room: its owner-signed statement chain (the
 * members, roles, epoch and key commitments it trusts), the epoch keys it
 * could open, and the replay windows of the senders it heard. The daemon's
 * answers (`detail`) are used for what they cannot make unsafe: kex keys
 * (whose bindings are verified), user status, timestamps. Refreshes itself
 * from the control plane (at most once a second) when a frame names an
 * unknown sender or epoch.
 */
export class RoomState {
  detail: RoomDetail;
  chain: StatementChain;
  readonly keys = new Map<number, Uint8Array>();
  /** Sealed keys not opened yet, by epoch. */
  readonly #sealed = new Map<number, string>();
  /** Epochs whose served key did not match the owner's commitment. */
  readonly #badKeys = new Set<number>();
  readonly #window = new ReplayWindow();
  readonly #ctl: ControlClient;
  readonly #identity: Identity;
  readonly #trust: RoomTrust;
  #lastRefresh = 0;
  /**
   * Set when the owner's own signed frame names an epoch the served chain
   * does not reach: the control plane withholds the owner's latest
   * statement. Until a refresh brings it, this client publishes nothing,
   * refuses live frames of older epochs (after the grace), and flags older
   * persisted frames `formerMember` (membership now cannot be confirmed).
   */
  #behind: { epoch: number; at: number } | undefined;
  #refreshing: Promise<void> | undefined;
  #parked = 0;
  #parkedBytes = 0;

  private constructor(
    detail: RoomDetail,
    chain: StatementChain,
    ctl: ControlClient,
    identity: Identity,
    trust: RoomTrust
  ) {
    this.detail = detail;
    this.chain = chain;
    this.#ctl = ctl;
    this.#identity = identity;
    this.#trust = trust;
  }

  static async load(
    roomId: string,
    ctl: ControlClient,
    identity: Identity,
    trust: RoomTrust
  ): Promise<RoomState> {
    const detail = await ctl.getRoom(roomId);
    let chain: StatementChain | undefined;
    const take = (page: ServedStatement[]) => {
      if (page.length === 0) return;
      if (chain) chain.extend(page);
      else chain = StatementChain.fromStatements(roomId, page);
    };
    const served = await fetchStatements(ctl, roomId, -1, take);
    if (served.head === null || !chain) {
      if (trust.known?.(roomId))
        throw new TrustError(
          'ROLLBACK',
          `room ${roomId}: the control plane serves no statement for a room this client verified`,
          roomId
        );
      // A room made before statements: its owner signs its first one, explicitly.
      throw new TrustError(
        'NO_STATEMENT',
        `room ${roomId} has no owner statement yet: its owner adopts it with adoptRoom(roomId, members)`,
        roomId
      );
    }
    await trust.checkOwner(roomId, chain.owner);
    trust.verified?.(roomId, chain);
    const s = new RoomState(detail, chain, ctl, identity, trust);
    await s.refresh(true);
    return s;
  }

  get id(): string {
    return this.chain.room;
  }

  /**
   * Reloads the statements after the latest verified one, the daemon's view
   * and this member's sealed keys. Unless forced, at most once a second: a
   * caller inside that second waits for the next allowed refresh rather
   * than being told nothing changed (a frame of a brand-new epoch must find
   * its key), and a flood of bogus frames costs one control call a second.
   * A chain shorter than the verified one is a ROLLBACK (TrustError) and
   * changes nothing; a statement that does not verify is BAD_STATEMENT and
   * the chain keeps what it had.
   */
  refresh(force = false): Promise<void> {
    if (this.#refreshing) return this.#refreshing;
    const wait = force ? 0 : Math.max(0, this.#lastRefresh + REFRESH_MIN_INTERVAL_MS - Date.now());
    this.#refreshing = (async () => {
      try {
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        const id = this.chain.room;
        const verified = this.chain.seq;
        let detail: RoomDetail;
        let served: { head: number | null };
        try {
          [detail, served] = await Promise.all([
            this.#ctl.getRoom(id),
            fetchStatements(this.#ctl, id, verified, (page) => this.chain.extend(page)),
          ]);
        } finally {
          // Pages verified before a failure are verified all the same: the
          // pin follows them, so a later chain must contain them.
          if (this.chain.seq > verified) this.#trust.verified?.(id, this.chain);
        }
        if (this.#behind && this.chain.epoch >= this.#behind.epoch) this.#behind = undefined;
        if (served.head === null || served.head < verified)
          throw new TrustError(
            'ROLLBACK',
            `room ${id}: the control plane serves statement ${served.head ?? 'none'}, this client verified ${verified}`,
            id
          );
        this.#trust.verified?.(id, this.chain);
        this.detail = detail;
        if (this.chain.policy.encrypt) {
          const mine = await this.#ctl.myKeys(id);
          // Opened when first needed: a control plane answering with tens of
          // thousands of sealed keys costs a map entry each, not a sealed-box
          // open each on the event loop.
          for (const k of mine.keys)
            if (!this.keys.has(k.epoch)) {
              this.#sealed.set(k.epoch, k.sealed_key);
              this.#badKeys.delete(k.epoch);
            }
        }
        this.#lastRefresh = Date.now();
      } finally {
        this.#refreshing = undefined;
      }
    })();
    return this.#refreshing;
  }

  /**
   * The key of an epoch, opened the first time it is needed and taken only
   * if it matches the owner's commitment for that epoch (epochs before a
   * room's first statement, which only rooms made before 0.2 have, have no
   * commitment to match).
   */
  #key(epoch: number): Uint8Array | undefined {
    const have = this.keys.get(epoch);
    if (have) return have;
    const sealed = this.#sealed.get(epoch);
    if (sealed === undefined) return undefined;
    this.#sealed.delete(epoch);
    let key: Uint8Array;
    try {
      key = openRoomKey(sealed, this.#identity);
    } catch {
      this.#badKeys.add(epoch);
      return undefined;
    }
    if (!(epoch < this.chain.firstEpoch || this.chain.keyMatches(epoch, key))) {
      this.#badKeys.add(epoch);
      return undefined;
    }
    this.keys.set(epoch, key);
    return key;
  }

  /** Takes a key this client made (its own rekey) once the chain commits to it. */
  adoptOwnKey(epoch: number, key: Uint8Array): void {
    if (this.chain.keyMatches(epoch, key)) this.keys.set(epoch, key);
  }

  /** The epoch and key a publisher uses now: the latest statement's, never the daemon's. */
  currentKey(): { epoch: number; key: Uint8Array | null } {
    if (this.#behind)
      throw new TrustError(
        'WITHHELD',
        `the owner has published in epoch ${this.#behind.epoch}, but the control plane serves no statement for it (this client has ${this.chain.epoch}): nothing is sent under an older key`,
        this.chain.room
      );
    const epoch = this.chain.epoch;
    if (!this.chain.policy.encrypt) return { epoch, key: null };
    const key = this.#key(epoch);
    if (!key) {
      if (this.#badKeys.has(epoch))
        throw new TrustError(
          'BAD_KEY',
          `the key served for epoch ${epoch} does not match the owner's commitment`,
          this.chain.room
        );
      throw new FrameError('UNKNOWN_EPOCH', `no key for the room's current epoch ${epoch}`);
    }
    return { epoch, key };
  }

  /**
   * Verifies and opens one frame without waiting on the network: the
   * structure, the signature and (with a key in hand) the AEAD are checked
   * against what is already known. A frame that needs a refresh (a sender
   * or an epoch this client has not heard of) is parked, at most
   * MAX_PARKED frames and MAX_PARKED_BYTES per room: a background refresh
   * (one in flight per room, at most one a second) decides it, and `late`
   * gets the outcome. Returns the opened message, or null when parked;
   * throws FrameError when rejected now.
   *
   * `signatureValid`: the verdict of a verification thread on exactly these
   * bytes' signature (verifier.ts), in place of checking it here; only
   * frames laid out as signed have one.
   */
  openNow(
    bytes: Uint8Array,
    streamSeq: number | undefined,
    late: LateOutcome,
    signatureValid?: boolean
  ): Opened | null {
    const r = this.#check(bytes, streamSeq, true, signatureValid);
    if (r !== 'refresh') return r;
    const f = parseFrame(bytes);
    if (
      this.#parked >= MAX_PARKED ||
      this.#parkedBytes + bytes.length > MAX_PARKED_BYTES ||
      parkedBytesAllRooms + bytes.length > MAX_PARKED_BYTES_ALL_ROOMS
    ) {
      const why = this.chain.role(f.header.sender) ? 'UNKNOWN_EPOCH' : 'NOT_A_MEMBER';
      this.#backgroundRefresh();
      throw new FrameError(why, 'too many frames wait for this room to refresh; refused');
    }
    this.#parked++;
    this.#parkedBytes += bytes.length;
    parkedBytesAllRooms += bytes.length;
    void this.refresh()
      .catch((err: unknown) => {
        if (err instanceof TrustError) this.#trust.report?.(err);
      })
      .then(() => {
        try {
          const again = this.#check(bytes, streamSeq, false, signatureValid);
          late(again === 'refresh' ? new FrameError('NOT_A_MEMBER', 'unknown sender') : again);
        } catch (err) {
          late(err as Error);
        }
      })
      .finally(() => {
        this.#parked--;
        this.#parkedBytes -= bytes.length;
        parkedBytesAllRooms -= bytes.length;
      });
    return null;
  }

  /** Opens one frame, waiting for a refresh when it needs one (tools, tests). */
  async open(bytes: Uint8Array, streamSeq?: number): Promise<Opened> {
    return new Promise((resolve, reject) => {
      try {
        const r = this.openNow(bytes, streamSeq, (late) =>
          late instanceof Error ? reject(late) : resolve(late)
        );
        if (r) resolve(r);
      } catch (err) {
        reject(err as Error);
      }
    });
  }

  /** The owner proved an epoch the served chain lacks: see `#behind`. Reported once per epoch. */
  #markBehind(epoch: number): void {
    if (this.#behind && this.#behind.epoch >= epoch) return;
    this.#behind = { epoch, at: Date.now() };
    this.#trust.report?.(
      new TrustError(
        'WITHHELD',
        `room ${this.chain.room}: the owner's signed frame is of epoch ${epoch}, the control plane serves statements up to epoch ${this.chain.epoch}`,
        this.chain.room
      )
    );
  }

  #backgroundRefresh(): void {
    void this.refresh().catch((err: unknown) => {
      if (err instanceof TrustError) this.#trust.report?.(err);
    });
  }

  /**
   * The rules (docs/SECURITY.md, "Live and history"): a live frame (an
   * ephemeral room) comes from a writer or the owner of the latest verified
   * statement, in the latest epoch or, for the grace after a rotation, the
   * one before. A persisted room's frame (history, or new) is judged by the
   * statements of its epoch: its sender was a writer then; `formerMember`
   * when it is not one now.
   */
  #check(
    bytes: Uint8Array,
    streamSeq: number | undefined,
    mayPark: boolean,
    signatureValid?: boolean
  ): Opened | 'refresh' {
    const f = parseFrame(bytes);
    const h = f.header;
    const chain = this.chain;
    if (h.room !== chain.room)
      throw new FrameError('WRONG_ROOM', `frame of room ${h.room} on ${chain.subject}`);
    const policy = chain.policy;
    if (h.encrypted !== policy.encrypt)
      throw new FrameError('POLICY_MISMATCH', 'frame encryption differs from the room policy');
    if (policy.sign && !h.signed)
      throw new FrameError('POLICY_MISMATCH', 'unsigned frame in a room that requires signatures');
    // What needs no network first: a forged or mangled frame costs nothing.
    if (h.signed && !(signatureValid ?? frameSignatureValid(f)))
      throw new FrameError('BAD_SIGNATURE', 'sender signature does not verify');
    // An epoch no statement speaks of yet: only a refresh can tell.
    if (h.epoch > chain.epoch) {
      if (mayPark) return 'refresh';
      // The owner's own signed frame is evidence of that epoch.
      if (h.signed && h.sender === chain.owner) this.#markBehind(h.epoch);
      throw new FrameError('UNKNOWN_EPOCH', `no owner statement for epoch ${h.epoch}`);
    }
    const behind = this.#behind;
    const key = h.encrypted ? this.#key(h.epoch) : undefined;
    // The AEAD covers the header: with the key in hand, a frame whose sender
    // bytes were changed fails here, before anyone is asked about that sender.
    const data = h.encrypted ? (key ? openFramePayload(f, key) : null) : f.payload;
    if (data === null) {
      if (mayPark && !this.#badKeys.has(h.epoch)) return 'refresh';
      throw new FrameError(
        'UNKNOWN_EPOCH',
        this.#badKeys.has(h.epoch)
          ? `the key served for epoch ${h.epoch} does not match the owner's commitment`
          : `no key for epoch ${h.epoch}`
      );
    }
    const role = chain.role(h.sender);
    const writerNow = role === 'writer' || role === 'owner';
    let formerMember = false;
    if (h.epoch < chain.firstEpoch && !h.signed)
      // Before the room's first statement (a room adopted later) no key has a
      // commitment: only a sender's signature says who sent such a frame.
      throw new FrameError(
        'UNKNOWN_EPOCH',
        `unsigned frame of epoch ${h.epoch}, from before the owner's first statement`
      );
    if (streamSeq !== undefined) {
      // History: by the statements of the frame's epoch.
      const info = chain.epochInfo(h.epoch) ?? chain.epochInfo(chain.firstEpoch);
      const writerThen =
        (info?.writers.has(h.sender) ?? false) || (h.epoch < chain.firstEpoch && writerNow);
      if (!writerThen) {
        if (mayPark && role === undefined) return 'refresh';
        throw new FrameError(
          'NOT_A_MEMBER',
          role === 'reader'
            ? 'sender is a reader and may not publish'
            : `sender was not a writer of this room in epoch ${h.epoch}`
        );
      }
      // The owner has moved past the statements we are served: who is a
      // writer now cannot be confirmed.
      formerMember = !writerNow || (behind !== undefined && h.epoch < behind.epoch);
    } else {
      if (!writerNow) {
        if (mayPark && role === undefined) return 'refresh';
        if (role === 'reader')
          throw new FrameError('NOT_A_MEMBER', 'sender is a reader and may not publish');
        const wasWriter = chain.everWriter(h.sender);
        throw new FrameError(
          wasWriter ? 'FORMER_MEMBER' : 'NOT_A_MEMBER',
          wasWriter
            ? 'sender is no longer a writer of this room (owner statement)'
            : 'sender is not a member of this room'
        );
      }
      if (h.epoch < chain.epoch) {
        const since = chain.epochInfo(chain.epoch)?.since ?? 0;
        // An unsigned frame names its sender but does not prove it: any
        // holder of the old key could have made it. Its grace holds only
        // if everyone who held that key is still a member.
        const holdersStayed =
          h.signed ||
          [...(chain.epochInfo(h.epoch)?.members ?? [])].every((k) => chain.role(k) !== undefined);
        const inGrace =
          h.epoch === chain.epoch - 1 && Date.now() < since + this.#trust.graceMs && holdersStayed;
        if (!inGrace)
          throw new FrameError(
            'STALE_EPOCH',
            `frame of epoch ${h.epoch}; the room rotated to ${chain.epoch}`
          );
      }
      if (behind && h.epoch < behind.epoch) {
        const inGrace =
          h.signed && h.epoch === behind.epoch - 1 && Date.now() < behind.at + this.#trust.graceMs;
        if (!inGrace)
          throw new FrameError(
            'STALE_EPOCH',
            `frame of epoch ${h.epoch}; the owner has moved to ${behind.epoch}, whose statement the control plane withholds`
          );
      }
    }
    // Only authentic frames may move the replay window.
    const v = this.#window.check(h.sender, h.session, h.seq);
    if (!v.ok)
      throw new FrameError(
        v.reason,
        v.reason === 'REPLAYED' ? 'frame already received' : 'frame older than the replay window'
      );
    const blob = blobOfMessage(data);
    return {
      message: Object.assign(Object.create(messageMethods) as RoomMessage, {
        room: h.room,
        subject: chain.subject,
        sender: h.sender,
        epoch: h.epoch,
        session: h.session,
        seq: h.seq,
        data,
        formerMember,
        ...(streamSeq !== undefined ? { streamSeq } : {}),
        ...(blob ? { blob } : {}),
      }),
      loss: v.gap ? { room: h.room, sender: h.sender, session: h.session, ...v.gap } : null,
    };
  }
}

/**
 * Every statement after `after`, page by page up to the head the first page
 * named, each page handed to `take` (which verifies it, and throws to stop)
 * before the next is asked for: a control plane that serves junk, or pages
 * without end, is stopped at its first statement that does not verify.
 */
async function fetchStatements(
  ctl: ControlClient,
  id: string,
  after: number,
  take: (page: ServedStatement[]) => void
): Promise<{ head: number | null }> {
  const first = await ctl.statements(id, after);
  take(first.statements);
  let last = first.statements.at(-1)?.seq ?? after;
  while (first.head !== null && last < first.head) {
    const page = await ctl.statements(id, last);
    if (page.statements.length === 0) break;
    take(page.statements);
    last = page.statements.at(-1)!.seq;
  }
  return { head: first.head };
}
