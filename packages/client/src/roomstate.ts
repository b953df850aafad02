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

/**
 * What a client knows about one room: its record and members, the epoch keys
 * it could open, and the replay windows of the senders it heard. Refreshes
 * itself from the control plane (at most once a second) when a frame names
 * an unknown sender or epoch.
 */
export class RoomState {
  detail: RoomDetail;
  readonly keys = new Map<number, Uint8Array>();
  readonly #members = new Map<string, MemberRole>();
  readonly #window = new ReplayWindow();
  readonly #ctl: ControlClient;
  readonly #identity: Identity;
  #lastRefresh = 0;
  #refreshing: Promise<void> | undefined;

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
          for (const k of mine.keys) {
            if (!this.keys.has(k.epoch))
              this.keys.set(k.epoch, openRoomKey(k.sealed_key, this.#identity));
          }
        }
        this.#lastRefresh = Date.now();
      } finally {
        this.#refreshing = undefined;
      }
    })();
    return this.#refreshing;
  }

  /** The epoch and key a publisher uses now. */
  currentKey(): { epoch: number; key: Uint8Array | null } {
    if (!this.detail.policy.encrypt) return { epoch: this.detail.epoch, key: null };
    const key = this.keys.get(this.detail.epoch);
    if (!key)
      throw new FrameError(
        'UNKNOWN_EPOCH',
        `no key for the room's current epoch ${this.detail.epoch}`
      );
    return { epoch: this.detail.epoch, key };
  }

  /**
   * Verifies and opens one frame. Throws FrameError with the reason when
   * rejected; returns the message (and any loss the seq jump implies).
   */
  async open(
    bytes: Uint8Array,
    streamSeq?: number
  ): Promise<{ message: RoomMessage; loss: PossibleLoss | null }> {
    const f = parseFrame(bytes);
    const h = f.header;
    if (h.room !== this.detail.id)
      throw new FrameError('WRONG_ROOM', `frame of room ${h.room} on ${this.detail.subject}`);
    const policy = this.detail.policy;
    if (h.encrypted !== policy.encrypt)
      throw new FrameError('POLICY_MISMATCH', 'frame encryption differs from the room policy');
    if (policy.sign && !h.signed)
      throw new FrameError('POLICY_MISMATCH', 'unsigned frame in a room that requires signatures');
    let role = this.#members.get(h.sender);
    if (!role) {
      await this.refresh();
      role = this.#members.get(h.sender);
    }
    // History: a frame of an earlier epoch may come from someone who left since.
    const formerMember = !role && h.epoch < this.detail.epoch;
    if (!role && !formerMember)
      throw new FrameError('NOT_A_MEMBER', 'sender is not a member of this room');
    if (role === 'reader')
      throw new FrameError('NOT_A_MEMBER', 'sender is a reader and may not publish');
    if (h.signed && !frameSignatureValid(f))
      throw new FrameError('BAD_SIGNATURE', 'sender signature does not verify');
    let key: Uint8Array | undefined;
    if (h.encrypted) {
      key = this.keys.get(h.epoch);
      if (!key) {
        await this.refresh();
        key = this.keys.get(h.epoch);
      }
      if (!key) throw new FrameError('UNKNOWN_EPOCH', `no key for epoch ${h.epoch}`);
    }
    const data = key ? openFramePayload(f, key) : f.payload;
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
