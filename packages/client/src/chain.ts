import {
  keyCommitment,
  roomStatementHash,
  signRoomStatement,
  verifyRoomStatement,
} from '@sealbus/crypto';
import {
  StatementError,
  canonicalStatement,
  checkTransition,
  inferChange,
  nextStatement,
  parseStatement,
  type MemberRole,
  type RoomPolicy,
  type RoomStatement,
  type SignedStatement,
} from '@sealbus/protocol';
import { SealbusError } from './errors.js';

/**
 * Why the SDK refused what the control plane served about a room's trust:
 * `UNBOUND_KEY` a key binding that does not verify under the member's own
 * sign key (nothing is sealed); `BAD_STATEMENT` a statement that is not
 * signed by the room's owner or does not follow the chain; `ROLLBACK` a
 * chain older than one already verified; `OWNER_CHANGED` a room whose owner
 * is not the one pinned; `UNTRUSTED_OWNER` an owner the application's
 * `trustOwner` refused; `NO_STATEMENT` a room (made before statements) its
 * owner has not signed yet; `BAD_KEY` an epoch key that does not match the
 * owner's commitment.
 */
export type TrustErrorCode =
  | 'UNBOUND_KEY'
  | 'BAD_STATEMENT'
  | 'ROLLBACK'
  | 'OWNER_CHANGED'
  | 'UNTRUSTED_OWNER'
  | 'NO_STATEMENT'
  | 'BAD_KEY'
  | 'WITHHELD';

export class TrustError extends SealbusError {
  declare readonly code: TrustErrorCode;
  readonly room: string | undefined;

  constructor(code: TrustErrorCode, message: string, room?: string) {
    super(code, message);
    this.room = room;
  }
}

/** What the statements say about one epoch. */
export interface EpochInfo {
  epoch: number;
  commitment: string | null;
  /** Everyone who was writer or owner in some statement of this epoch. */
  writers: Set<string>;
  /** Everyone who was a member (any role: each held the epoch's key) in some statement of it. */
  members: Set<string>;
  /**
   * When the epoch began (ms): the owner's time of its first statement, or
   * when this client first verified it if that is earlier (an owner's clock
   * ahead, or a made-up time, cannot stretch the rotation grace).
   */
  since: number;
}

/** A stored statement as served: seq, canonical JSON, signature. */
export interface ServedStatement extends SignedStatement {
  seq: number;
}

/**
 * A room's verified statement chain: from seq 0, each statement signed by
 * the owner named at seq 0, each following the previous one. What members
 * trust about the room (members, roles, epoch and its key commitment)
 * comes from here, never from the daemon's answers.
 */
export class StatementChain {
  readonly room: string;
  readonly owner: string;
  #latest: RoomStatement;
  readonly #epochs = new Map<number, EpochInfo>();
  /** hex SHA-256 of each verified statement, by seq (what a pin compares). */
  readonly #hashes = new Map<number, string>();
  readonly #first: RoomStatement;

  private constructor(room: string, first: RoomStatement, text: string) {
    this.room = room;
    this.owner = first.owner;
    this.#first = first;
    this.#latest = first;
    this.#hashes.set(first.seq, roomStatementHash(text));
    this.#note(first);
  }

  /** Verifies a chain from seq 0 for `room`. Throws TrustError('BAD_STATEMENT'). */
  static fromStatements(room: string, served: readonly ServedStatement[]): StatementChain {
    const [head, ...rest] = served;
    if (!head) throw new TrustError('NO_STATEMENT', `room ${room} has no statement`, room);
    let first: RoomStatement;
    try {
      first = parseStatement(head.statement);
    } catch (err) {
      throw new TrustError('BAD_STATEMENT', `statement 0: ${(err as Error).message}`, room);
    }
    if (first.seq !== 0 || head.seq !== 0)
      throw new TrustError('BAD_STATEMENT', 'the chain does not start at seq 0', room);
    if (first.room !== room)
      throw new TrustError('BAD_STATEMENT', `statement 0 is about room ${first.room}`, room);
    if (!verifyRoomStatement(first.owner, head.statement, head.sig))
      throw new TrustError(
        'BAD_STATEMENT',
        "statement 0: the owner's signature does not verify",
        room
      );
    const chain = new StatementChain(room, first, head.statement);
    chain.extend(rest);
    return chain;
  }

  get latest(): RoomStatement {
    return this.#latest;
  }

  get seq(): number {
    return this.#latest.seq;
  }

  get epoch(): number {
    return this.#latest.epoch;
  }

  get policy(): RoomPolicy {
    return this.#latest.policy;
  }

  get subject(): string {
    return this.#latest.subject;
  }

  /** The role a member has in the latest statement. */
  role(signPub: string): MemberRole | undefined {
    for (const [k, r] of this.#latest.members) if (k === signPub) return r;
    return undefined;
  }

  members(): Array<[string, MemberRole]> {
    return this.#latest.members.map(([k, r]) => [k, r]);
  }

  epochInfo(epoch: number): EpochInfo | undefined {
    return this.#epochs.get(epoch);
  }

  /** The first epoch the chain speaks for (a room adopted later has older, unstated epochs). */
  get firstEpoch(): number {
    return this.#first.epoch;
  }

  /** hex SHA-256 of the latest statement (the next one's `prev`). */
  get latestHash(): string {
    return this.#hashes.get(this.#latest.seq)!;
  }

  /** hex SHA-256 of the verified statement at `seq`, if the chain has it. */
  hashAt(seq: number): string | undefined {
    return this.#hashes.get(seq);
  }

  /**
   * Verifies and appends statements after the latest (seq order). Throws
   * TrustError('BAD_STATEMENT') at the first one that does not follow; the
   * chain then keeps what it had verified before it.
   */
  extend(served: readonly ServedStatement[]): void {
    for (const s of served) {
      if (s.seq <= this.#latest.seq) continue;
      let next: RoomStatement;
      try {
        next = parseStatement(s.statement);
        if (next.seq !== s.seq) throw new StatementError('served seq differs from the statement');
        if (!verifyRoomStatement(this.owner, s.statement, s.sig))
          throw new StatementError("the owner's signature does not verify");
        const change = inferChange(this.#latest, next);
        checkTransition({ statement: this.#latest, hash: this.latestHash }, next, change);
      } catch (err) {
        throw new TrustError(
          'BAD_STATEMENT',
          `statement ${s.seq}: ${(err as Error).message}`,
          this.room
        );
      }
      this.#latest = next;
      this.#hashes.set(next.seq, roomStatementHash(s.statement));
      this.#note(next);
    }
  }

  #note(s: RoomStatement): void {
    let info = this.#epochs.get(s.epoch);
    if (!info) {
      info = {
        epoch: s.epoch,
        commitment: s.key_commitment,
        writers: new Set(),
        members: new Set(),
        since: Math.min(Date.parse(s.created), Date.now()),
      };
      this.#epochs.set(s.epoch, info);
    }
    for (const [k, r] of s.members) {
      info.members.add(k);
      if (r !== 'reader') info.writers.add(k);
    }
  }

  /** True when `signPub` was a writer or the owner in any verified statement. */
  everWriter(signPub: string): boolean {
    for (const info of this.#epochs.values()) if (info.writers.has(signPub)) return true;
    return false;
  }

  /** True when `key` is the key the owner committed to for `epoch`. */
  keyMatches(epoch: number, key: Uint8Array): boolean {
    const info = this.#epochs.get(epoch);
    if (!info) return false;
    return info.commitment !== null && keyCommitment(key) === info.commitment;
  }
}

/** Signs a statement with the owner's sign seed: what a change request carries. */
export function signStatement(signSeed: Uint8Array, s: RoomStatement): SignedStatement {
  const statement = canonicalStatement(s);
  return { statement, sig: signRoomStatement(signSeed, statement) };
}

/**
 * The owner's next statement after `chain` (or a room's first, for null),
 * signed. Members given as entries; the caller decides what changes.
 */
export function authorStatement(
  signSeed: Uint8Array,
  chain: StatementChain | null,
  s: {
    room: string;
    subject: string;
    policy: RoomPolicy;
    owner: string;
    epoch: number;
    key: Uint8Array | null;
    members: Iterable<[string, MemberRole]>;
  }
): SignedStatement {
  const next = nextStatement(chain ? { statement: chain.latest, hash: chain.latestHash } : null, {
    room: s.room,
    subject: s.subject,
    policy: s.policy,
    owner: s.owner,
    epoch: s.epoch,
    key_commitment: s.key ? keyCommitment(s.key) : null,
    members: s.members,
  });
  return signStatement(signSeed, next);
}

/**
 * The owner's statement that follows `chain` in the same room: only the
 * epoch, its key and the members change.
 */
export function authorNext(
  signSeed: Uint8Array,
  chain: StatementChain,
  s: { epoch: number; key: Uint8Array | null; members: Iterable<[string, MemberRole]> }
): SignedStatement {
  return authorStatement(signSeed, chain, {
    room: chain.room,
    subject: chain.subject,
    policy: chain.policy,
    owner: chain.owner,
    ...s,
  });
}

/**
 * Whom a client trusts as room owners: the application's `trustOwner`
 * decides the first time a room is seen, and the owner is pinned for that
 * room from then on (a room whose statements another key signs is refused).
 */
export class OwnerPins {
  readonly #pins = new Map<string, string>();
  /** The latest statement verified per room: a chain served later must contain it. */
  readonly #marks = new Map<string, { seq: number; hash: string }>();
  trustOwner: ((ownerSignPub: string, room: string) => boolean | Promise<boolean>) | undefined;

  constructor(trustOwner?: (ownerSignPub: string, room: string) => boolean | Promise<boolean>) {
    this.trustOwner = trustOwner;
  }

  /** Throws TrustError OWNER_CHANGED or UNTRUSTED_OWNER; pins on first success. */
  async check(room: string, owner: string): Promise<void> {
    const pinned = this.#pins.get(room);
    if (pinned !== undefined) {
      if (pinned !== owner)
        throw new TrustError(
          'OWNER_CHANGED',
          `room ${room}: its statements are signed by ${owner}, not by the owner pinned (${pinned})`,
          room
        );
      return;
    }
    if (this.trustOwner && !(await this.trustOwner(owner, room)))
      throw new TrustError('UNTRUSTED_OWNER', `room ${room}: owner ${owner} is not trusted`, room);
    this.#pins.set(room, owner);
  }

  /**
   * Records `chain` as verified for `room`, after checking it contains the
   * latest statement this client verified before (same seq, same hash):
   * a control plane cannot roll a room back under a running client, not even
   * by making it drop and reload the room. Throws TrustError ROLLBACK.
   */
  verified(room: string, chain: StatementChain): void {
    const m = this.#marks.get(room);
    if (m && (chain.seq < m.seq || chain.hashAt(m.seq) !== m.hash))
      throw new TrustError(
        'ROLLBACK',
        `room ${room}: the chain served does not contain statement ${m.seq} this client verified`,
        room
      );
    this.#marks.set(room, { seq: chain.seq, hash: chain.latestHash });
  }

  /** True once this client verified a statement of `room`. */
  known(room: string): boolean {
    return this.#marks.has(room);
  }

  /** Pins an owner without asking (a room this client created). */
  pin(room: string, owner: string): void {
    if (!this.#pins.has(room)) this.#pins.set(room, owner);
  }

  pinned(room: string): string | undefined {
    return this.#pins.get(room);
  }

  /**
   * What this client trusts, to keep across restarts (a file the
   * application owns): each room's pinned owner and latest verified
   * statement. A client started with it refuses an older chain than it saw
   * before it stopped, as a running one does.
   */
  export(): TrustState {
    const rooms: TrustState['rooms'] = {};
    for (const [room, owner] of this.#pins) {
      const m = this.#marks.get(room);
      rooms[room] = { owner, ...(m ? { seq: m.seq, hash: m.hash } : {}) };
    }
    return { version: 1, rooms };
  }

  /** Pins and marks from `export()` (of this or an earlier process). */
  static from(state: TrustState, trustOwner?: OwnerPins['trustOwner']): OwnerPins {
    const p = new OwnerPins(trustOwner);
    if (state?.version !== 1 || typeof state.rooms !== 'object')
      throw new TypeError('not a Sealbus trust state (version 1)');
    for (const [room, r] of Object.entries(state.rooms)) {
      if (!/^[0-9a-f]{24}$/.test(room) || !/^[0-9a-f]{64}$/.test(r.owner))
        throw new TypeError(`trust state: bad entry for room ${room}`);
      p.#pins.set(room, r.owner);
      if (
        Number.isSafeInteger(r.seq) &&
        typeof r.hash === 'string' &&
        /^[0-9a-f]{64}$/.test(r.hash)
      )
        p.#marks.set(room, { seq: r.seq!, hash: r.hash });
    }
    return p;
  }
}

/** `OwnerPins.export()`: JSON, safe to store (public keys and hashes only). */
export interface TrustState {
  version: 1;
  rooms: Record<string, { owner: string; seq?: number; hash?: string }>;
}
