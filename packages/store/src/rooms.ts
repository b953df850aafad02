import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  nanos,
  type JetStreamManager,
  type KV,
} from 'nats';
import {
  memberDeliverSubject,
  memberDurableName,
  memberRecordSchema,
  roomStreamName,
  parseOrThrow,
  roomKeyRecordSchema,
  roomRecordSchema,
  type MemberRecord,
  type MemberRole,
  type RoomKeyRecord,
  type RoomPolicy,
  type RoomRecord,
} from '@sealbus/protocol';
import { roomStatementHash, verifyRoomStatement } from '@sealbus/crypto';
import {
  StatementError,
  checkTransition,
  parseStatement,
  type RoomStatement,
  type SignedStatement,
  type StatementChange,
} from '@sealbus/protocol';
import { StoreError, isStreamNotFound, isWrongLastSequence, toStoreError } from './errors.js';
import { grantActive } from '@sealbus/protocol';
import {
  casUpdate,
  createOnly,
  decodeJson,
  encodeJson,
  getLive,
  listKeys,
  readAll,
  scan,
} from './kv.js';

/** Heartbeat interval of members' consumers: how soon a reader sees it missed the tail. */
export const MEMBER_HEARTBEAT_MS = 2_000;

/** Where a member's consumer (re)starts. */
export type CursorPosition = 'start' | 'new' | { after: number };

/** The size cap of a room stream when none is configured: 256 MiB. */
export const DEFAULT_ROOM_MAX_BYTES = 256 * 1024 * 1024;

const parseRoom = (raw: unknown): RoomRecord => parseOrThrow(roomRecordSchema, raw);
const parseMember = (raw: unknown): MemberRecord => parseOrThrow(memberRecordSchema, raw);
const parseKey = (raw: unknown): RoomKeyRecord => parseOrThrow(roomKeyRecordSchema, raw);
const parseIndex = (raw: unknown) => raw as { room: string; role?: MemberRole };

/** Every membership of one user, in one scan of the members bucket. */
export function scanMemberships(
  members: KV,
  signPub: string,
  timeoutMs?: number
): Promise<MemberRecord[]> {
  return scan(members, `*.${signPub}`, parseMember, 'list memberships', timeoutMs);
}

export interface RoomBuckets {
  rooms: KV;
  members: KV;
  roomsByMember: KV;
  roomKeys: KV;
}

const roomKey = (id: string) => `room.${id}`;
const subjectKey = (subject: string) => `subject.${subject}`;
const memberKey = (id: string, signPub: string) => `${id}.${signPub}`;

/** A room record from a rooms bucket view (null: none). */
export async function readRoom(kv: KV, id: string): Promise<RoomRecord | null> {
  const e = await getLive(kv, roomKey(id), 'get room');
  return e ? decodeJson(e, parseRoom) : null;
}

/** One membership from a members bucket view (null: none). */
export async function readMembership(
  kv: KV,
  id: string,
  signPub: string
): Promise<MemberRecord | null> {
  const e = await getLive(kv, memberKey(id, signPub), 'get membership');
  return e ? decodeJson(e, parseMember) : null;
}
const reverseKey = (signPub: string, id: string) => `${signPub}.${id}`;
const sealedKeyKey = (id: string, epoch: number, signPub: string) => `${id}.${epoch}.${signPub}`;
/** The latest statement of a room (compare-and-set: it serialises changes). */
const headKey = (id: string) => `${id}.head`;
/** Every statement, by seq (the chain members verify). */
const statementKey = (id: string, seq: number) => `${id}.s.${seq}`;

/** A stored statement: its seq and what the owner signed. */
export interface StoredStatement extends SignedStatement {
  seq: number;
}

/** A statement accepted as the room's next: parsed, and how to take it back. */
export interface AdvancedStatement {
  statement: RoomStatement;
  undo(): Promise<void>;
}

/** A statement's text, parsed and checked (protocol rules), or BAD_STATEMENT. */
function parsedStatement(text: string): RoomStatement {
  try {
    return parseStatement(text);
  } catch (err) {
    throw new StoreError('BAD_STATEMENT', (err as Error).message);
  }
}

const parseStored = (raw: unknown): StoredStatement => {
  const r = raw as StoredStatement;
  if (
    !Number.isSafeInteger(r?.seq) ||
    r.seq < 0 ||
    typeof r.statement !== 'string' ||
    typeof r.sig !== 'string'
  )
    throw new StoreError('CORRUPT', 'a stored statement is malformed');
  return r;
};

/** Deletes written keys after a failed multi-key change; best effort. */
async function undo(steps: Array<[KV, string]>): Promise<void> {
  for (const [kv, key] of steps.reverse()) await kv.delete(key).catch(() => {});
}

async function del(kv: KV, key: string, what: string): Promise<void> {
  try {
    await kv.delete(key);
  } catch (err) {
    throw toStoreError(err, what);
  }
}

/**
 * Rooms, memberships and sealed room keys. KV has no transactions, so every
 * multi-key change writes the record that grants access last and undoes what
 * it wrote on failure; reads for authorisation use `members`, the source of
 * truth, while `rooms_by_member` is the index behind "my rooms".
 */
export class Rooms {
  readonly #b: RoomBuckets;
  readonly #jsm: JetStreamManager;
  readonly #replicas: number;
  readonly #maxBytes: number;
  /** Rooms whose stream has fewer replicas than configured (see raiseReplicas). */
  readonly #degraded = new Set<string>();

  /** `roomMaxBytes`: the size limit of every room stream created from now on. */
  constructor(
    buckets: RoomBuckets,
    jsm: JetStreamManager,
    replicas: number,
    roomMaxBytes: number = DEFAULT_ROOM_MAX_BYTES
  ) {
    this.#b = buckets;
    this.#jsm = jsm;
    this.#replicas = replicas;
    if (!Number.isSafeInteger(roomMaxBytes) || roomMaxBytes <= 0)
      throw new StoreError('INVALID', 'roomMaxBytes must be a positive integer');
    this.#maxBytes = roomMaxBytes;
  }

  /**
   * The stream of a persisted room: its subject only, replicated like the
   * buckets, with message delete and purge denied — published history
   * cannot be rewritten, not even by the daemon. Its size is capped
   * (`max_bytes`) with discard-new: a full room refuses new messages and
   * keeps every old one (discard-old would silently drop history). Streams
   * made before the cap existed keep their configuration.
   */
  async #createStream(room: RoomRecord, maxBytes = this.#maxBytes): Promise<void> {
    // With a node down a cluster cannot place every replica: the stream is
    // made with as many as can be placed and raised once the peers are back
    // (raiseReplicas), so rooms can be created during an outage or upgrade.
    for (let replicas = this.#replicas; ; replicas--) {
      try {
        await this.#jsm.streams.add({
          name: roomStreamName(room.id),
          description: `persisted room ${room.id}`,
          subjects: [room.subject],
          num_replicas: replicas,
          storage: StorageType.File,
          retention: RetentionPolicy.Limits,
          max_bytes: maxBytes,
          discard: DiscardPolicy.New,
          deny_delete: true,
          deny_purge: true,
          allow_rollup_hdrs: false,
          duplicate_window: nanos(120_000),
        });
        if (replicas < this.#replicas) this.#degraded.add(room.id);
        return;
      } catch (err) {
        if (replicas > 1 && isPlacementError(err)) continue;
        throw toStoreError(err, 'create room stream');
      }
    }
  }

  /**
   * Room streams made with fewer replicas than configured (during an outage)
   * are raised to the configured count once the peers can hold them. Returns
   * the rooms raised, how many still wait, and the last refusal; the rest
   * are tried again on the next call.
   */
  async raiseReplicas(): Promise<{ raised: string[]; waiting: number; lastError?: string }> {
    const raised: string[] = [];
    let lastError: string | undefined;
    for (const id of [...this.#degraded]) {
      try {
        const info = await this.#jsm.streams.info(roomStreamName(id));
        if (info.config.num_replicas < this.#replicas)
          await this.#jsm.streams.update(roomStreamName(id), {
            ...info.config,
            num_replicas: this.#replicas,
          });
        this.#degraded.delete(id);
        raised.push(id);
      } catch (err) {
        if (isStreamNotFound(err))
          this.#degraded.delete(id); // the room went
        else lastError = (err as Error).message; // peers still missing: next time
      }
    }
    return {
      raised,
      waiting: this.#degraded.size,
      ...(lastError !== undefined ? { lastError } : {}),
    };
  }

  /**
   * Finds room streams with fewer replicas than configured (made during an
   * outage, by this node before a restart or by another node) and queues
   * them for raiseReplicas. Returns how many are queued.
   */
  async findUnderReplicated(): Promise<number> {
    if (this.#replicas <= 1) return 0;
    try {
      for await (const info of this.#jsm.streams.list())
        if (
          info.config.name.startsWith(ROOM_STREAM_PREFIX) &&
          info.config.num_replicas < this.#replicas
        )
          this.#degraded.add(info.config.name.slice(ROOM_STREAM_PREFIX.length));
    } catch (err) {
      throw toStoreError(err, 'list room streams');
    }
    return this.#degraded.size;
  }

  /**
   * A member's durable push consumer, the only way members read a persisted
   * room: it delivers to a subject under the member's own inbox prefix, with
   * no acks and no flow control, so a member needs no JetStream grant at all
   * and the server never publishes anything for it anywhere else. Heartbeats
   * (to the same subject) carry the last delivered stream sequence, from
   * which the SDK sees a gap and asks the daemon to resume after the last
   * sequence it processed.
   */
  async #createConsumer(roomId: string, signPub: string, from: CursorPosition = 'start') {
    const start =
      typeof from === 'object'
        ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from.after + 1 }
        : { deliver_policy: from === 'start' ? DeliverPolicy.All : DeliverPolicy.New };
    try {
      await this.#jsm.consumers.add(roomStreamName(roomId), {
        durable_name: memberDurableName(signPub),
        description: `member ${signPub}`,
        deliver_subject: memberDeliverSubject(signPub, roomId),
        ack_policy: AckPolicy.None,
        flow_control: false,
        idle_heartbeat: nanos(MEMBER_HEARTBEAT_MS),
        ...start,
      });
    } catch (err) {
      throw toStoreError(err, 'create member consumer');
    }
  }

  async #deleteConsumer(roomId: string, signPub: string): Promise<void> {
    try {
      await this.#jsm.consumers.delete(roomStreamName(roomId), memberDurableName(signPub));
    } catch (err) {
      if (!/consumer not found/i.test((err as Error).message))
        throw toStoreError(err, 'delete member consumer');
    }
  }

  /**
   * What a restored persisted room needs beside its rows: its stream (when
   * missing) and a consumer for each member that has none, reading from the
   * start (read positions are not part of a backup). Idempotent. A stream
   * made here has no size cap until `capRestoredStream` (its history is
   * loaded in between, and must fit whatever the cap).
   */
  async restorePersistence(room: RoomRecord, members: string[]): Promise<void> {
    if (!room.policy.persist) return;
    try {
      await this.#jsm.streams.info(roomStreamName(room.id));
    } catch (err) {
      if (!isStreamNotFound(err)) throw toStoreError(err, 'read room stream');
      await this.#createStream(room, -1);
    }
    for (const signPub of members) {
      try {
        await this.#jsm.consumers.info(roomStreamName(room.id), memberDurableName(signPub));
      } catch (err) {
        if (!/consumer not found/i.test((err as Error).message))
          throw toStoreError(err, 'read member consumer');
        await this.#createConsumer(room.id, signPub, 'start');
      }
    }
  }

  /**
   * Caps a restored room's stream once its history is loaded: at the
   * configured size, or at the size of that history when it is larger
   * (lowering `max_bytes` below what a stream holds would delete its oldest
   * messages). For offline restores only: a concurrent writer could grow
   * the stream between the read and the update.
   */
  async capRestoredStream(room: RoomRecord): Promise<void> {
    if (!room.policy.persist) return;
    try {
      const info = await this.#jsm.streams.info(roomStreamName(room.id));
      if (info.config.max_bytes > 0) return;
      await this.#jsm.streams.update(roomStreamName(room.id), {
        ...info.config,
        max_bytes: Math.max(this.#maxBytes, info.state.bytes),
        discard: DiscardPolicy.New,
      });
    } catch (err) {
      throw toStoreError(err, 'cap room stream');
    }
  }

  /** Moves a member's read position of a persisted room: its start, its end, or after a sequence. */
  async resetCursor(room: RoomRecord, signPub: string, from: CursorPosition): Promise<void> {
    if (!room.policy.persist)
      throw new StoreError('INVALID', 'only persisted rooms have a history to read');
    await this.#deleteConsumer(room.id, signPub);
    await this.#createConsumer(room.id, signPub, from);
    // A removal that ran between the caller's membership check and the
    // create deleted the old consumer and would leave this one behind:
    // look again, and take it back when the membership is gone.
    if (!(await this.membership(room.id, signPub))) {
      await this.#deleteConsumer(room.id, signPub);
      throw new StoreError('NOT_FOUND', `${signPub} is not a member of room ${room.id}`);
    }
  }

  /**
   * Every membership of one user, read in one pass over the members bucket
   * (the auth callout's hot path: a user in 1,000 rooms costs one scan, not
   * 1,000 reads).
   */
  async membershipsOf(signPub: string): Promise<MemberRecord[]> {
    return scanMemberships(this.#b.members, signPub);
  }

  /**
   * Creates a room owned by `owner`. The subject is claimed create-only
   * first, so two rooms can never share a subject (CONFLICT).
   */
  async create(input: {
    /** The id the owner's statement names (random, chosen by the creator). */
    id: string;
    subject: string;
    policy: RoomPolicy;
    owner: string;
    sealedKey?: string;
    /** The owner's statement seq 0. */
    statement: SignedStatement;
    now?: Date;
  }): Promise<RoomRecord> {
    const now = (input.now ?? new Date()).toISOString();
    if (input.policy.encrypt !== (input.sealedKey !== undefined)) {
      throw new StoreError(
        'INVALID',
        input.policy.encrypt
          ? 'sealed_key: an encrypted room needs epoch 0 key sealed to its creator'
          : 'sealed_key: an unencrypted room has no key'
      );
    }
    const room: RoomRecord = {
      id: input.id,
      subject: input.subject,
      owner: input.owner,
      policy: input.policy,
      epoch: 0,
      needs_rekey: false,
      created_at: now,
    };
    await this.#claimSubject(room.subject, room.id, now);
    const written: Array<[KV, string]> = [[this.#b.rooms, subjectKey(room.subject)]];
    let streamMade = false;
    try {
      await this.#create(this.#b.rooms, roomKey(room.id), room, 'create room');
      written.push([this.#b.rooms, roomKey(room.id)]);
      // Any statement under this id is a leftover of an interrupted create (the
      // room record did not exist): the owner's seq 0 replaces it.
      await this.#b.roomKeys.delete(headKey(room.id)).catch(() => {});
      await this.advance(room, input.statement, { kind: 'create' });
      written.push(
        [this.#b.roomKeys, headKey(room.id)],
        [this.#b.roomKeys, statementKey(room.id, 0)]
      );
      if (input.sealedKey !== undefined) {
        await this.#putSealedKey(room.id, 0, room.owner, input.sealedKey, now);
        written.push([this.#b.roomKeys, sealedKeyKey(room.id, 0, room.owner)]);
      }
      if (room.policy.persist) {
        await this.#createStream(room);
        streamMade = true;
        await this.#createConsumer(room.id, room.owner);
      }
      await this.#writeMember({
        room: room.id,
        sign_pub: room.owner,
        role: 'owner',
        expires_at: null,
        subject: room.subject,
        persist: room.policy.persist,
        added_at: now,
        added_by: room.owner,
      });
    } catch (err) {
      if (streamMade) await this.#jsm.streams.delete(roomStreamName(room.id)).catch(() => {});
      await undo(written);
      throw err;
    }
    return room;
  }

  async #claimSubject(subject: string, id: string, now: string): Promise<void> {
    const key = subjectKey(subject);
    if (
      (await createOnly(
        this.#b.rooms,
        key,
        encodeJson({ room: id, created_at: now }),
        'claim subject'
      )) !== null
    ) {
      return;
    }
    // Taken. A claim whose room never came to exist (a creator that died
    // between the two writes) is reclaimed once it is clearly abandoned.
    const entry = await getLive(this.#b.rooms, key, 'claim subject');
    if (entry) {
      const claim = decodeJson(entry, (r) => r as { room: string; created_at: string });
      const abandoned =
        (await this.get(claim.room)) === null && Date.now() - Date.parse(claim.created_at) > 60_000;
      if (abandoned) {
        try {
          await this.#b.rooms.update(
            key,
            encodeJson({ room: id, created_at: now }),
            entry.revision
          );
          return;
        } catch (err) {
          if (!isWrongLastSequence(err)) throw toStoreError(err, 'claim subject');
        }
      }
    }
    throw new StoreError('CONFLICT', `subject ${subject} is already used by another room`);
  }

  async #create(kv: KV, key: string, value: unknown, what: string): Promise<void> {
    if ((await createOnly(kv, key, encodeJson(value), what)) === null) {
      throw new StoreError('CONFLICT', `${what}: ${key} already exists`);
    }
  }

  async #putSealedKey(
    room: string,
    epoch: number,
    signPub: string,
    sealedKey: string,
    now: string
  ): Promise<void> {
    const rec: RoomKeyRecord = {
      room,
      epoch,
      sign_pub: signPub,
      sealed_key: sealedKey,
      created_at: now,
    };
    await this.#create(
      this.#b.roomKeys,
      sealedKeyKey(room, epoch, signPub),
      rec,
      'store sealed key'
    );
  }

  /** Writes the reverse index, then the membership that grants access. */
  async #writeMember(m: MemberRecord): Promise<void> {
    const idx = reverseKey(m.sign_pub, m.room);
    try {
      await this.#b.roomsByMember.put(idx, encodeJson({ room: m.room, role: m.role }));
    } catch (err) {
      throw toStoreError(err, 'index membership');
    }
    try {
      await this.#create(this.#b.members, memberKey(m.room, m.sign_pub), m, 'add member');
    } catch (err) {
      // Only drop the index if the membership is not someone else's success.
      if (!(err instanceof StoreError && err.code === 'CONFLICT'))
        await undo([[this.#b.roomsByMember, idx]]);
      throw err;
    }
  }

  async get(id: string): Promise<RoomRecord | null> {
    return readRoom(this.#b.rooms, id);
  }

  async membership(id: string, signPub: string): Promise<MemberRecord | null> {
    return readMembership(this.#b.members, id, signPub);
  }

  async members(id: string): Promise<MemberRecord[]> {
    const all = await readAll(this.#b.members, parseMember, 'list members', `${id}.*`);
    return all.sort(
      (a, b) => a.added_at.localeCompare(b.added_at) || a.sign_pub.localeCompare(b.sign_pub)
    );
  }

  /** Rooms `signPub` belongs to, each with its role (confirmed against `members`). */
  async roomsOf(signPub: string): Promise<Array<{ room: RoomRecord; role: MemberRole }>> {
    const idx = await readAll(this.#b.roomsByMember, parseIndex, 'list my rooms', `${signPub}.*`);
    const out: Array<{ room: RoomRecord; role: MemberRole }> = [];
    await Promise.all(
      idx.map(async ({ room: id }) => {
        const [room, m] = await Promise.all([this.get(id), this.membership(id, signPub)]);
        if (room && m && grantActive(m.expires_at)) out.push({ room, role: m.role });
      })
    );
    return out.sort(
      (a, b) =>
        a.room.created_at.localeCompare(b.room.created_at) || a.room.id.localeCompare(b.room.id)
    );
  }

  /**
   * Adds a member with the current epoch's key sealed to them. An existing
   * member is a CONFLICT and is left unchanged.
   */
  async addMember(
    room: RoomRecord,
    input: {
      signPub: string;
      role: 'writer' | 'reader';
      sealedKey?: string;
      addedBy: string;
      /** The membership ends then (RFC 3339). */
      expiresAt?: string | null;
      /** The owner's next statement, adding exactly this member. */
      statement: SignedStatement;
      now?: Date;
    }
  ): Promise<{ member: MemberRecord; epoch: number }> {
    const now = (input.now ?? new Date()).toISOString();
    if (room.policy.encrypt !== (input.sealedKey !== undefined)) {
      throw new StoreError(
        'INVALID',
        room.policy.encrypt
          ? 'sealed_key: the current room key sealed to the new member is required'
          : 'sealed_key: an unencrypted room has no key'
      );
    }
    if (await this.membership(room.id, input.signPub)) {
      throw new StoreError('CONFLICT', `${input.signPub} is already a member of room ${room.id}`);
    }
    const member: MemberRecord = {
      room: room.id,
      sign_pub: input.signPub,
      role: input.role,
      subject: room.subject,
      persist: room.policy.persist,
      added_at: now,
      added_by: input.addedBy,
      expires_at: input.expiresAt ?? null,
    };
    const advanced = await this.advance(room, input.statement, {
      kind: 'invite',
      sign_pub: input.signPub,
      role: input.role,
    });
    const written: Array<[KV, string]> = [];
    try {
      await this.#addMemberRows(room, member, input.sealedKey, now, written);
    } catch (err) {
      await advanced.undo();
      throw err;
    }
    return { member, epoch: room.epoch };
  }

  async #addMemberRows(
    room: RoomRecord,
    member: MemberRecord,
    sealedKey: string | undefined,
    now: string,
    written: Array<[KV, string]>
  ): Promise<void> {
    const input = { signPub: member.sign_pub, sealedKey };
    if (input.sealedKey !== undefined) {
      const k = sealedKeyKey(room.id, room.epoch, input.signPub);
      // A key left by an earlier membership of the same person is replaced.
      try {
        await this.#b.roomKeys.put(
          k,
          encodeJson({
            room: room.id,
            epoch: room.epoch,
            sign_pub: input.signPub,
            sealed_key: input.sealedKey,
            created_at: now,
          })
        );
      } catch (err) {
        throw toStoreError(err, 'store sealed key');
      }
      written.push([this.#b.roomKeys, k]);
    }
    try {
      // A durable left by an earlier membership restarts from the beginning.
      if (room.policy.persist) {
        await this.#deleteConsumer(room.id, input.signPub);
        await this.#createConsumer(room.id, input.signPub, 'start');
      }
      await this.#writeMember(member);
    } catch (err) {
      if (room.policy.persist) await this.#deleteConsumer(room.id, input.signPub).catch(() => {});
      await undo(written);
      throw err;
    }
  }

  /**
   * Removes a member (not the owner) and marks the room as needing a rekey:
   * the removed member still holds the current key until the owner rotates.
   */
  async removeMember(
    room: RoomRecord,
    signPub: string,
    statement: SignedStatement
  ): Promise<RoomRecord> {
    const m = await this.membership(room.id, signPub);
    if (!m) throw new StoreError('NOT_FOUND', `${signPub} is not a member of room ${room.id}`);
    if (m.role === 'owner')
      throw new StoreError('INVALID', 'the owner cannot be removed from their room');
    const advanced = await this.advance(room, statement, { kind: 'remove', sign_pub: signPub });
    await this.#dropMember(room, signPub).catch(async (err: unknown) => {
      await advanced.undo();
      throw err;
    });
    return (await this.#markForRekey(room.id)).value;
  }

  /** Every membership whose expiry has passed (one scan of the members bucket). */
  async expiredMemberships(now = Date.now()): Promise<MemberRecord[]> {
    const all = await readAll(this.#b.members, parseMember, 'list members');
    return all.filter((m) => m.expires_at !== null && !grantActive(m.expires_at, now));
  }

  /** Marks an encrypted room as needing a rekey (a member was revoked or expired). */
  async markForRekey(id: string): Promise<boolean> {
    try {
      return (await this.#markForRekey(id)).changed;
    } catch (err) {
      if (err instanceof StoreError && err.code === 'NOT_FOUND') return false;
      throw err;
    }
  }

  /** Sets `needs_rekey` on an encrypted room (compare-and-set; unchanged when already set). */
  #markForRekey(id: string) {
    return casUpdate(
      this.#b.rooms,
      roomKey(id),
      parseRoom,
      (cur): RoomRecord | null =>
        cur.policy.encrypt && !cur.needs_rekey ? { ...cur, needs_rekey: true } : null,
      'mark room for rekey'
    );
  }

  /** Access goes first; the index and the consumer follow. */
  async #dropMember(room: RoomRecord, signPub: string): Promise<void> {
    await del(this.#b.members, memberKey(room.id, signPub), 'remove member');
    await del(this.#b.roomsByMember, reverseKey(signPub, room.id), 'remove member');
    if (room.policy.persist) await this.#deleteConsumer(room.id, signPub);
  }

  /**
   * The first statement of a room made before statements existed, written
   * by its owner: the members exactly as the room has them, and (in an
   * encrypted room) a new epoch with a fresh key sealed to each of them, so
   * nothing the control plane served before (a key, a member list) is ever
   * committed to. Refused once a room has a statement.
   */
  async adopt(
    room: RoomRecord,
    statement: SignedStatement,
    sealedKeys: Record<string, string> | undefined,
    now = new Date()
  ): Promise<RoomRecord> {
    if (await this.head(room.id))
      throw new StoreError('STALE_STATEMENT', 'this room already has statements');
    const next = parsedStatement(statement.statement);
    const members = await this.members(room.id);
    const stated = new Map(next.members);
    if (stated.size !== members.length || !members.every((m) => stated.get(m.sign_pub) === m.role))
      throw new StoreError(
        'BAD_STATEMENT',
        "statement: a room's first statement lists its members, with their roles, as they are"
      );
    const epoch = room.policy.encrypt ? room.epoch + 1 : room.epoch;
    if (room.policy.encrypt) {
      const given = Object.keys(sealedKeys ?? {});
      if (given.length !== stated.size || !given.every((k) => stated.has(k)))
        throw new StoreError('INVALID', "sealed_keys must cover exactly the statement's members");
    } else if (sealedKeys && Object.keys(sealedKeys).length)
      throw new StoreError('INVALID', 'sealed_keys: an unencrypted room has no key');
    const entry = await getLive(this.#b.rooms, roomKey(room.id), 'adopt');
    if (!entry) throw new StoreError('NOT_FOUND', `room ${room.id} not found`);
    const current = decodeJson(entry, parseRoom);
    if (current.epoch !== room.epoch)
      throw new StoreError('STALE_STATEMENT', 'the room changed meanwhile; retry');
    const advanced = await this.advance({ ...current, epoch }, statement, { kind: 'adopt' }, next);
    if (!room.policy.encrypt) return current;
    return this.#commitEpoch(
      current,
      entry.revision,
      epoch,
      sealedKeys!,
      advanced,
      now,
      new StoreError('STALE_STATEMENT', 'the room changed meanwhile; retry')
    );
  }

  /**
   * The last steps of a move to a new epoch whose statement `advanced`
   * wrote: each sealed key stored create-only, then the room record's epoch
   * moved with a compare-and-set from `revision` (a room that changed since
   * is `changed`). On any failure the keys and the statement are undone.
   */
  async #commitEpoch(
    room: RoomRecord,
    revision: number,
    epoch: number,
    sealedKeys: Record<string, string>,
    advanced: AdvancedStatement,
    now: Date,
    /** What a room that changed since `revision` is. */
    changed: StoreError
  ): Promise<RoomRecord> {
    const at = now.toISOString();
    const written: Array<[KV, string]> = [];
    try {
      for (const [m, sealed] of Object.entries(sealedKeys)) {
        await this.#putSealedKey(room.id, epoch, m, sealed, at);
        written.push([this.#b.roomKeys, sealedKeyKey(room.id, epoch, m)]);
      }
      const next: RoomRecord = { ...room, epoch, needs_rekey: false };
      try {
        await this.#b.rooms.update(roomKey(room.id), encodeJson(next), revision);
      } catch (err) {
        if (isWrongLastSequence(err)) throw changed;
        throw toStoreError(err, 'move to a new epoch');
      }
      return next;
    } catch (err) {
      await undo(written);
      await advanced.undo();
      throw err;
    }
  }

  /**
   * Rotates the room key to `epoch` (= current + 1), as the owner's
   * statement says: one sealed key per member of the statement, exactly.
   * The statement keeps every active member (`inactive` names the members
   * that are revoked or expired, which it may leave out, and must); the
   * memberships it leaves out are dropped. The statement head moves first
   * (compare-and-set), then the keys are stored create-only and the epoch
   * moves with a compare-and-set on the room record; a concurrent rekey or a
   * stale epoch is a CONFLICT and leaves nothing behind. Returns the room
   * and the members dropped.
   */
  async rekey(
    id: string,
    epoch: number,
    sealedKeys: Record<string, string>,
    statement: SignedStatement,
    inactive: ReadonlySet<string> = new Set(),
    now = new Date()
  ): Promise<{ room: RoomRecord; dropped: string[] }> {
    const entry = await getLive(this.#b.rooms, roomKey(id), 'rekey');
    if (!entry) throw new StoreError('NOT_FOUND', `room ${id} not found`);
    const room = decodeJson(entry, parseRoom);
    if (!room.policy.encrypt)
      throw new StoreError('INVALID', 'an unencrypted room has no key to rotate');
    if (epoch !== room.epoch + 1) {
      throw new StoreError(
        'CONFLICT',
        `epoch must be ${room.epoch + 1} (the current epoch is ${room.epoch})`
      );
    }
    const current = (await this.members(id)).map((m) => m.sign_pub);
    const given = Object.keys(sealedKeys);
    const next = parsedStatement(statement.statement);
    if (next.epoch !== epoch)
      throw new StoreError('BAD_STATEMENT', `statement: its epoch is not ${epoch}`);
    const stated = next.members.map(([k]) => k);
    const missingKey = stated.filter((m) => !given.includes(m));
    const extra = given.filter((g) => !stated.includes(g));
    if (missingKey.length || extra.length) {
      throw new StoreError(
        'INVALID',
        `sealed_keys must cover exactly the statement's members` +
          (missingKey.length ? `; missing: ${missingKey.join(', ')}` : '') +
          (extra.length ? `; not in the statement: ${extra.join(', ')}` : '')
      );
    }
    const notMembers = stated.filter((m) => !current.includes(m));
    if (notMembers.length)
      throw new StoreError('BAD_STATEMENT', `not members of the room: ${notMembers.join(', ')}`);
    const sealedToInactive = stated.filter((m) => inactive.has(m));
    if (sealedToInactive.length)
      throw new StoreError(
        'BAD_STATEMENT',
        `revoked or expired members must be left out of a rekey: ${sealedToInactive.join(', ')}`
      );
    const leftOut = current.filter((m) => !stated.includes(m));
    const activeLeftOut = leftOut.filter((m) => !inactive.has(m));
    if (activeLeftOut.length)
      throw new StoreError(
        'BAD_STATEMENT',
        `a rekey keeps every active member (remove them first): ${activeLeftOut.join(', ')}`
      );
    const advanced = await this.advance(room, statement, { kind: 'rekey' }, next);
    let next2: RoomRecord;
    try {
      next2 = await this.#commitEpoch(
        room,
        entry.revision,
        epoch,
        sealedKeys,
        advanced,
        now,
        new StoreError('CONFLICT', 'the room changed during the rekey; retry')
      );
    } catch (err) {
      if (
        err instanceof StoreError &&
        err.code === 'CONFLICT' &&
        /already exists/.test(err.message)
      )
        throw new StoreError(
          'CONFLICT',
          `epoch ${epoch} is being or has been set by another rekey`
        );
      throw err;
    }
    // The members left out (revoked or expired) lose the membership too.
    for (const m of leftOut) await this.#dropMember(next2, m).catch(() => {});
    return { room: next2, dropped: leftOut };
  }

  /**
   * Deletes a room: memberships first (access), then the index, the sealed
   * keys, the stream of a persisted room, the record and the subject claim.
   * Returns the members it had, so their connections can be cut.
   */
  async delete(room: RoomRecord): Promise<MemberRecord[]> {
    // Ordered so that an interrupted delete can be retried by the owner: the
    // owner's membership and the room record go last (a retry still passes
    // the owner check and finishes the job).
    const members = await this.members(room.id);
    if (room.policy.persist) {
      try {
        await this.#jsm.streams.delete(roomStreamName(room.id));
      } catch (err) {
        if (!/stream not found/i.test((err as Error).message))
          throw toStoreError(err, 'delete room stream');
      }
    }
    const keyNames = await listKeys(this.#b.roomKeys, 'delete room', `${room.id}.>`);
    for (const k of keyNames) await del(this.#b.roomKeys, k, 'delete room');
    const ownerLast = [
      ...members.filter((m) => m.sign_pub !== room.owner),
      ...members.filter((m) => m.sign_pub === room.owner),
    ];
    for (const m of ownerLast) {
      await del(this.#b.roomsByMember, reverseKey(m.sign_pub, room.id), 'delete room');
      await del(this.#b.members, memberKey(room.id, m.sign_pub), 'delete room');
    }
    await del(this.#b.rooms, roomKey(room.id), 'delete room');
    await del(this.#b.rooms, subjectKey(room.subject), 'delete room');
    return members;
  }

  /** The latest statement of a room, or null (a room made before statements). */
  async head(id: string): Promise<StoredStatement | null> {
    const e = await getLive(this.#b.roomKeys, headKey(id), 'read statement');
    return e ? decodeJson(e, parseStored) : null;
  }

  /**
   * The statements of a room with seq > `after` (all with -1), in order, up
   * to the head: as many as fit in about `maxBytes` (at least one), so a
   * long chain is read in pages.
   */
  async statements(
    id: string,
    after = -1,
    maxBytes = 512 * 1024
  ): Promise<{ head: number | null; statements: StoredStatement[] }> {
    const head = await this.head(id);
    if (!head) return { head: null, statements: [] };
    const out: StoredStatement[] = [];
    let bytes = 0;
    for (let q = after + 1; q <= head.seq; q += 16) {
      const seqs: number[] = [];
      for (let x = q; x < q + 16 && x <= head.seq; x++) seqs.push(x);
      const batch = await Promise.all(
        seqs.map((x) => getLive(this.#b.roomKeys, statementKey(id, x), 'read statement'))
      );
      for (const e of batch) {
        // A gap (an interrupted write) ends what can be served: members verify a chain.
        if (!e) return { head: head.seq, statements: out };
        const s = decodeJson(e, parseStored);
        if (out.length > 0 && bytes + s.statement.length > maxBytes)
          return { head: head.seq, statements: out };
        bytes += s.statement.length;
        out.push(s);
      }
    }
    return { head: head.seq, statements: out };
  }

  /**
   * Makes `signed` the room's next statement, if it is one: signed by the
   * room's owner, following the latest statement as `change` says, and
   * describing this room. The head moves with a compare-and-set, so two
   * changes racing cannot both take the same seq (CONFLICT for the loser).
   * Returns the statement and an undo for when the change it describes
   * then fails.
   */
  async advance(
    room: RoomRecord,
    signed: SignedStatement,
    change: StatementChange,
    next: RoomStatement = parsedStatement(signed.statement)
  ): Promise<AdvancedStatement> {
    if (!verifyRoomStatement(room.owner, signed.statement, signed.sig))
      throw new StoreError(
        'BAD_STATEMENT',
        "statement: the room owner's signature does not verify"
      );
    if (next.room !== room.id || next.owner !== room.owner || next.subject !== room.subject)
      throw new StoreError(
        'BAD_STATEMENT',
        'statement: it is not about this room (id, owner or subject)'
      );
    if (
      next.policy.encrypt !== room.policy.encrypt ||
      next.policy.persist !== room.policy.persist ||
      next.policy.sign !== room.policy.sign
    )
      throw new StoreError('BAD_STATEMENT', "statement: the policy is not the room's");
    const entry = await getLive(this.#b.roomKeys, headKey(room.id), 'read statement');
    const prev = entry ? decodeJson(entry, parseStored) : null;
    let prevStatement: RoomStatement | null = null;
    if (prev) {
      try {
        prevStatement = parseStatement(prev.statement);
      } catch (err) {
        throw new StoreError(
          'CORRUPT',
          `the stored statement is unreadable: ${(err as Error).message}`
        );
      }
    }
    try {
      checkTransition(
        prevStatement
          ? { statement: prevStatement, hash: roomStatementHash(prev!.statement) }
          : null,
        next,
        change
      );
    } catch (err) {
      if (err instanceof StatementError) {
        // A statement for a seq someone else took first: the client is behind.
        const behind = prevStatement && next.seq <= prevStatement.seq;
        throw new StoreError(
          behind ? 'STALE_STATEMENT' : 'BAD_STATEMENT',
          `statement: ${err.message}`
        );
      }
      throw err;
    }
    const expectEpoch = change.kind === 'rekey' ? room.epoch + 1 : room.epoch;
    if (next.epoch !== expectEpoch)
      throw new StoreError(
        change.kind === 'rekey' ? 'STALE_STATEMENT' : 'BAD_STATEMENT',
        `statement: epoch must be ${expectEpoch} (the room is at ${room.epoch})`
      );
    const stored: StoredStatement = { seq: next.seq, statement: signed.statement, sig: signed.sig };
    const value = encodeJson(stored);
    let revision: number;
    try {
      if (entry) revision = await this.#b.roomKeys.update(headKey(room.id), value, entry.revision);
      else {
        const r = await createOnly(this.#b.roomKeys, headKey(room.id), value, 'write statement');
        if (r === null)
          throw new StoreError(
            'STALE_STATEMENT',
            'the room changed meanwhile; fetch its statements and retry'
          );
        revision = r;
      }
    } catch (err) {
      if (isWrongLastSequence(err))
        throw new StoreError(
          'STALE_STATEMENT',
          'the room changed meanwhile; fetch its statements and retry'
        );
      throw toStoreError(err, 'write statement');
    }
    try {
      await this.#b.roomKeys.put(statementKey(room.id, next.seq), value);
    } catch (err) {
      await this.#rollbackHead(room.id, prev, revision);
      throw toStoreError(err, 'write statement');
    }
    return {
      statement: next,
      undo: async () => {
        await this.#rollbackHead(room.id, prev, revision);
        await this.#b.roomKeys.delete(statementKey(room.id, next.seq)).catch(() => {});
      },
    };
  }

  async #rollbackHead(id: string, prev: StoredStatement | null, revision: number): Promise<void> {
    try {
      if (prev) await this.#b.roomKeys.update(headKey(id), encodeJson(prev), revision);
      else await this.#b.roomKeys.delete(headKey(id), { previousSeq: revision });
    } catch {
      /* best effort: a later change by the owner follows whatever head is left */
    }
  }

  /** The sealed keys of one member in one room, every epoch, oldest first. */
  async keysOf(id: string, signPub: string): Promise<RoomKeyRecord[]> {
    const keys = await readAll(this.#b.roomKeys, parseKey, 'list keys', `${id}.*.${signPub}`);
    return keys.sort((a, b) => a.epoch - b.epoch);
  }
}

/** JetStream could not place a stream's replicas (a peer is down). */
const ROOM_STREAM_PREFIX = roomStreamName('');

/** A peer is missing (not a full disk: "insufficient resources" is refused as it is). */
function isPlacementError(err: unknown): boolean {
  return /no suitable peers/i.test((err as Error)?.message ?? '');
}
