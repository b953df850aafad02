import { z } from 'zod';
import {
  memberRoleSchema,
  roomIdSchema,
  roomPolicySchema,
  signedStatementSchema,
  type MemberRole,
  type RoomPolicy,
} from './rooms.js';

export { signedStatementSchema };

/**
 * Owner-signed room statements: every change of a room's members or key is
 * a statement the owner's SDK signs, chained by `seq` and `prev`. The
 * daemon stores and serves them as opaque text; members verify the chain
 * themselves and never take the daemon's member list or epoch on trust.
 *
 * The signed bytes are `"sealbus-room-statement-v1" || canonical JSON`,
 * where the canonical JSON (specified in docs/SECURITY.md) is the object
 * below with keys in ascending order, no whitespace, integers in decimal,
 * and strings in lowercase hex or the plain ASCII their schema allows.
 */

const HEX64 = /^[0-9a-f]{64}$/;
const pubHex = z.string().regex(HEX64, 'must be 64 lowercase hex characters');
/** RFC 3339 UTC with milliseconds, as `Date.prototype.toISOString` writes it. */
const createdSchema = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/, 'must be YYYY-MM-DDTHH:MM:SS.sssZ')
  .refine((s) => !Number.isNaN(Date.parse(s)), 'must be a valid time');
/** The statement's own subject rule: what a room subject may be (ASCII, no spaces). */
const subjectText = z.string().regex(/^[A-Za-z0-9_.-]{1,200}$/, 'must be a room subject');

export const roomStatementSchema = z.strictObject({
  created: createdSchema,
  /** The key epoch this statement is about; +1 on a rekey, unchanged otherwise. */
  epoch: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  /** HMAC-SHA256(epoch key, "sealbus-key-commitment-v1"), hex; null in unencrypted rooms. */
  key_commitment: z.string().regex(HEX64, 'must be 64 lowercase hex characters').nullable(),
  /** Every member with its role, sorted by sign_pub; the owner included. */
  members: z
    .array(z.tuple([pubHex, memberRoleSchema]))
    .min(1)
    .max(100_000),
  owner: pubHex,
  policy: roomPolicySchema,
  /** hex SHA-256 of the previous statement's canonical JSON; null at seq 0. */
  prev: z.string().regex(HEX64, 'must be 64 lowercase hex characters').nullable(),
  room: roomIdSchema,
  seq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  subject: subjectText,
});
export type RoomStatement = z.infer<typeof roomStatementSchema>;

export type SignedStatement = z.infer<typeof signedStatementSchema>;

/** The canonical JSON of a statement (the bytes that are signed and hashed). */
export function canonicalStatement(s: RoomStatement): string {
  const members = [...s.members].map(([k, r]) => [k, r] as [string, MemberRole]);
  const ordered = {
    created: s.created,
    epoch: s.epoch,
    key_commitment: s.key_commitment,
    members,
    owner: s.owner,
    policy: { encrypt: s.policy.encrypt, persist: s.policy.persist, sign: s.policy.sign },
    prev: s.prev,
    room: s.room,
    seq: s.seq,
    subject: s.subject,
  };
  return JSON.stringify(ordered);
}

/** Why a statement was refused. */
export class StatementError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StatementError';
  }
}

/**
 * Parses a served statement: valid JSON, the schema, members sorted and
 * unique with exactly one owner (the `owner` field), and the text exactly
 * the canonical form (one statement, one byte string). Does not check the
 * signature (that needs the crypto package) nor the chain.
 */
export function parseStatement(text: string): RoomStatement {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new StatementError('statement is not JSON');
  }
  const r = roomStatementSchema.safeParse(raw);
  if (!r.success)
    throw new StatementError(
      `statement: ${r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`
    );
  const s = r.data;
  if (canonicalStatement(s) !== text)
    throw new StatementError('statement is not in canonical form');
  for (let i = 1; i < s.members.length; i++)
    if (!(s.members[i - 1]![0] < s.members[i]![0]))
      throw new StatementError('statement members must be sorted by sign_pub, each once');
  const owners = s.members.filter(([, role]) => role === 'owner');
  if (owners.length !== 1 || owners[0]![0] !== s.owner)
    throw new StatementError('statement must list its owner, and only it, with role owner');
  if (s.policy.encrypt !== (s.key_commitment !== null))
    throw new StatementError(
      s.policy.encrypt
        ? 'an encrypted room statement needs a key_commitment'
        : 'an unencrypted room has no key_commitment'
    );
  if (!s.policy.encrypt && s.epoch !== 0)
    throw new StatementError('an unencrypted room stays at epoch 0');
  if ((s.seq === 0) !== (s.prev === null))
    throw new StatementError('prev is null exactly at seq 0');
  return s;
}

/** Members as a map (sign_pub → role). */
export function statementMembers(s: RoomStatement): Map<string, MemberRole> {
  return new Map(s.members);
}

/** What a change is: the daemon checks that the statement describes exactly this. */
export type StatementChange =
  | { kind: 'create' }
  | { kind: 'invite'; sign_pub: string; role: 'writer' | 'reader' }
  | { kind: 'remove'; sign_pub: string }
  | { kind: 'rekey' }
  /** An older room's first statement, written by its owner (the state as it stands). */
  | { kind: 'adopt' };

/**
 * Checks that `next` follows `prev` (null for the first statement) as the
 * change says: same room, subject, policy and owner; seq + 1; prev = the
 * hash given (the caller hashes, with the crypto package). Throws
 * StatementError naming the first difference.
 */
export function checkTransition(
  prev: { statement: RoomStatement; hash: string } | null,
  next: RoomStatement,
  change: StatementChange
): void {
  if (prev === null) {
    if (next.seq !== 0 || next.prev !== null)
      throw new StatementError('the first statement has seq 0 and no prev');
    if (change.kind === 'create') {
      if (next.epoch !== 0) throw new StatementError('a new room starts at epoch 0');
      if (next.members.length !== 1)
        throw new StatementError('a new room has its owner as only member');
    } else if (change.kind !== 'adopt') {
      throw new StatementError('this room has no statement yet');
    }
    return;
  }
  const p = prev.statement;
  if (next.seq !== p.seq + 1) throw new StatementError(`seq must be ${p.seq + 1}, is ${next.seq}`);
  if (next.prev !== prev.hash)
    throw new StatementError('prev is not the hash of the latest statement');
  if (next.room !== p.room || next.subject !== p.subject || next.owner !== p.owner)
    throw new StatementError('room, subject and owner never change');
  if (!samePolicy(next.policy, p.policy)) throw new StatementError('a room policy never changes');
  const before = statementMembers(p);
  const after = statementMembers(next);
  if (change.kind === 'rekey') {
    if (next.epoch !== p.epoch + 1)
      throw new StatementError(`a rekey moves the epoch to ${p.epoch + 1}`);
    if (next.key_commitment === p.key_commitment)
      throw new StatementError('a rekey commits to a new key');
    for (const [k, role] of after)
      if (before.get(k) !== role)
        throw new StatementError(`a rekey cannot add a member or change a role (${k})`);
    return;
  }
  if (next.epoch !== p.epoch || next.key_commitment !== p.key_commitment)
    throw new StatementError('only a rekey changes the epoch or its key');
  if (change.kind === 'invite') {
    if (before.has(change.sign_pub))
      throw new StatementError(`${change.sign_pub} is already a member`);
    if (after.get(change.sign_pub) !== change.role)
      throw new StatementError(`the statement does not add ${change.sign_pub} as ${change.role}`);
    if (after.size !== before.size + 1)
      throw new StatementError('an invite adds exactly one member');
    for (const [k, role] of before)
      if (after.get(k) !== role)
        throw new StatementError(`an invite keeps every other member as is (${k})`);
    return;
  }
  if (change.kind === 'remove') {
    if (change.sign_pub === p.owner) throw new StatementError('the owner cannot be removed');
    if (!before.has(change.sign_pub))
      throw new StatementError(`${change.sign_pub} is not a member`);
    if (after.has(change.sign_pub) || after.size !== before.size - 1)
      throw new StatementError(`the statement does not remove exactly ${change.sign_pub}`);
    for (const [k, role] of after)
      if (before.get(k) !== role)
        throw new StatementError(`a removal keeps every other member as is (${k})`);
    return;
  }
  throw new StatementError(`a ${change.kind} statement cannot follow another statement`);
}

function samePolicy(a: RoomPolicy, b: RoomPolicy): boolean {
  return a.encrypt === b.encrypt && a.persist === b.persist && a.sign === b.sign;
}

// ---- HTTP ----

export const statementsResponseSchema = z.object({
  id: roomIdSchema,
  /** seq of the latest statement; null for a room that has none yet (made before 0.2). */
  head: z.number().int().min(0).nullable(),
  statements: z.array(signedStatementSchema.extend({ seq: z.number().int().min(0) })),
});
export type StatementsResponse = z.infer<typeof statementsResponseSchema>;

/** Members sorted by sign_pub, as a statement lists them. */
export function sortedMembers(
  members: Iterable<[string, MemberRole]>
): Array<[string, MemberRole]> {
  return [...members].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

/**
 * The statement that follows `prev` (or a room's first, when `prev` is
 * null) with the given members, epoch and key commitment. Pure: the caller
 * hashes the previous statement and signs the result.
 */
export function nextStatement(
  prev: { statement: RoomStatement; hash: string } | null,
  s: {
    room: string;
    subject: string;
    policy: RoomPolicy;
    owner: string;
    epoch: number;
    key_commitment: string | null;
    members: Iterable<[string, MemberRole]>;
    created?: Date;
  }
): RoomStatement {
  return {
    created: (s.created ?? new Date()).toISOString(),
    epoch: s.epoch,
    key_commitment: s.key_commitment,
    members: sortedMembers(s.members),
    owner: s.owner,
    policy: { encrypt: s.policy.encrypt, persist: s.policy.persist, sign: s.policy.sign },
    prev: prev ? prev.hash : null,
    room: s.room,
    seq: prev ? prev.statement.seq + 1 : 0,
    subject: s.subject,
  };
}

/** What a verified next statement did, read from the difference (for a verifier). */
export function inferChange(prev: RoomStatement, next: RoomStatement): StatementChange {
  if (next.epoch !== prev.epoch) return { kind: 'rekey' };
  const before = statementMembers(prev);
  const after = statementMembers(next);
  if (after.size === before.size + 1) {
    for (const [k, role] of after)
      if (!before.has(k))
        return { kind: 'invite', sign_pub: k, role: role === 'reader' ? 'reader' : 'writer' };
  }
  if (after.size === before.size - 1) {
    for (const k of before.keys()) if (!after.has(k)) return { kind: 'remove', sign_pub: k };
  }
  throw new StatementError('the statement is neither an invite, a removal nor a rekey');
}
