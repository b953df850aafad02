import {
  FrameError,
  frameSignatureValid,
  openFramePayload,
  parseFrame,
  ReplayWindow,
  type FrameErrorCode,
  type Identity,
} from '@sealbus/crypto';
import type { MemberRole, RoomDetail } from '@sealbus/protocol';
import type { ControlClient } from './control.js';
import { openRoomKey } from './keys.js';

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
  /** True for a frame of an earlier epoch whose sender has since left the room (history). */
  formerMember: boolean;
  /** Stream sequence, for persisted rooms. */
  streamSeq?: number;
}

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
 * What a client knows about one room: its record and members, the epoch keys
 * it could open, and the replay windows of the senders it heard. Refreshes
 * itself from the control plane (at most once a second) when a frame names
 * an unknown sender or epoch.
 */
export class RoomState {
  detail: RoomDetail;
  readonly keys = new Map<number, Uint8Array>();
  /** Sealed keys not opened yet, by epoch. */
  readonly #sealed = new Map<number, string>();
  readonly #members = new Map<string, MemberRole>();
  readonly #window = new ReplayWindow();
  readonly #ctl: ControlClient;
  readonly #identity: Identity;
  #lastRefresh = 0;
  #refreshing: Promise<void> | undefined;
  #parked = 0;
  #parkedBytes = 0;

  private constructor(detail: RoomDetail, ctl: ControlClient, identity: Identity) {
    this.detail = detail;
    this.#ctl = ctl;
    this.#identity = identity;
  }

  static async load(roomId: string, ctl: ControlClient, identity: Identity): Promise<RoomState> {
    const s = new RoomState(await ctl.getRoom(roomId), ctl, identity);
    await s.refresh(true);
    return s;
  }

  get id(): string {
    return this.detail.id;
  }

  /**
   * Reloads members, epoch and keys. Unless forced, at most once a second:
   * a caller inside that second waits for the next allowed refresh rather
   * than being told nothing changed (a frame of a brand-new epoch must find
   * its key), and a flood of bogus frames costs one control call a second.
   */
  refresh(force = false): Promise<void> {
    if (this.#refreshing) return this.#refreshing;
    const wait = force ? 0 : Math.max(0, this.#lastRefresh + REFRESH_MIN_INTERVAL_MS - Date.now());
    this.#refreshing = (async () => {
      try {
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        this.detail = await this.#ctl.getRoom(this.detail.id);
        this.#members.clear();
        for (const m of this.detail.members) this.#members.set(m.sign_pub, m.role);
        if (this.detail.policy.encrypt) {
          const mine = await this.#ctl.myKeys(this.detail.id);
          // Opened when first needed: a control plane answering with tens of
          // thousands of sealed keys costs a map entry each, not a sealed-box
          // open each on the event loop.
          for (const k of mine.keys)
            if (!this.keys.has(k.epoch)) this.#sealed.set(k.epoch, k.sealed_key);
        }
        this.#lastRefresh = Date.now();
      } finally {
        this.#refreshing = undefined;
      }
    })();
    return this.#refreshing;
  }

  /** The key of an epoch, opening it the first time it is needed. */
  #key(epoch: number): Uint8Array | undefined {
    const have = this.keys.get(epoch);
    if (have) return have;
    const sealed = this.#sealed.get(epoch);
    if (sealed === undefined) return undefined;
    this.#sealed.delete(epoch);
    const key = openRoomKey(sealed, this.#identity);
    this.keys.set(epoch, key);
    return key;
  }

  /** The epoch and key a publisher uses now. */
  currentKey(): { epoch: number; key: Uint8Array | null } {
    if (!this.detail.policy.encrypt) return { epoch: this.detail.epoch, key: null };
    const key = this.#key(this.detail.epoch);
    if (!key)
      throw new FrameError(
        'UNKNOWN_EPOCH',
        `no key for the room's current epoch ${this.detail.epoch}`
      );
    return { epoch: this.detail.epoch, key };
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
   */
  openNow(bytes: Uint8Array, streamSeq: number | undefined, late: LateOutcome): Opened | null {
    const r = this.#check(bytes, streamSeq, true);
    if (r !== 'refresh') return r;
    const f = parseFrame(bytes);
    if (
      this.#parked >= MAX_PARKED ||
      this.#parkedBytes + bytes.length > MAX_PARKED_BYTES ||
      parkedBytesAllRooms + bytes.length > MAX_PARKED_BYTES_ALL_ROOMS
    ) {
      const why = this.#members.has(f.header.sender) ? 'UNKNOWN_EPOCH' : 'NOT_A_MEMBER';
      this.#backgroundRefresh();
      throw new FrameError(why, 'too many frames wait for this room to refresh; refused');
    }
    this.#parked++;
    this.#parkedBytes += bytes.length;
    parkedBytesAllRooms += bytes.length;
    void this.refresh()
      .catch(() => {})
      .then(() => {
        try {
          const again = this.#check(bytes, streamSeq, false);
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

  #backgroundRefresh(): void {
    void this.refresh().catch(() => {});
  }

  #check(bytes: Uint8Array, streamSeq: number | undefined, mayPark: boolean): Opened | 'refresh' {
    const f = parseFrame(bytes);
    const h = f.header;
    if (h.room !== this.detail.id)
      throw new FrameError('WRONG_ROOM', `frame of room ${h.room} on ${this.detail.subject}`);
    const policy = this.detail.policy;
    if (h.encrypted !== policy.encrypt)
      throw new FrameError('POLICY_MISMATCH', 'frame encryption differs from the room policy');
    if (policy.sign && !h.signed)
      throw new FrameError('POLICY_MISMATCH', 'unsigned frame in a room that requires signatures');
    // What needs no network first: a forged or mangled frame costs nothing.
    if (h.signed && !frameSignatureValid(f))
      throw new FrameError('BAD_SIGNATURE', 'sender signature does not verify');
    const key = h.encrypted ? this.#key(h.epoch) : undefined;
    // The AEAD covers the header: with the key in hand, a frame whose sender
    // bytes were changed fails here, before anyone is asked about that sender.
    const data = h.encrypted ? (key ? openFramePayload(f, key) : null) : f.payload;
    const role = this.#members.get(h.sender);
    // History: a frame of an earlier epoch may come from someone who left since.
    const formerMember = !role && h.epoch < this.detail.epoch;
    if ((!role && !formerMember) || data === null) {
      if (mayPark) return 'refresh';
      if (data === null) throw new FrameError('UNKNOWN_EPOCH', `no key for epoch ${h.epoch}`);
      throw new FrameError('NOT_A_MEMBER', 'sender is not a member of this room');
    }
    if (role === 'reader')
      throw new FrameError('NOT_A_MEMBER', 'sender is a reader and may not publish');
    // Only authentic frames may move the replay window.
    const v = this.#window.check(h.sender, h.session, h.seq);
    if (!v.ok)
      throw new FrameError(
        v.reason,
        v.reason === 'REPLAYED' ? 'frame already received' : 'frame older than the replay window'
      );
    return {
      message: {
        room: h.room,
        subject: this.detail.subject,
        sender: h.sender,
        epoch: h.epoch,
        session: h.session,
        seq: h.seq,
        data,
        formerMember,
        ...(streamSeq !== undefined ? { streamSeq } : {}),
      },
      loss: v.gap ? { room: h.room, sender: h.sender, session: h.session, ...v.gap } : null,
    };
  }
}
