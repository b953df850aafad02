import {
  addMemberSchema,
  createRoomSchema,
  cursorResponseSchema,
  roomDeletedResponseSchema,
  cursorSchema,
  memberAddedResponseSchema,
  memberRemovedResponseSchema,
  myKeysResponseSchema,
  myRoomSchema,
  myRoomsResponseSchema,
  parseKeyHex,
  parseSignPubHex,
  parseOrThrow,
  adoptStatementSchema,
  grantActive,
  rekeyResponseSchema,
  removeMemberSchema,
  statementsResponseSchema,
  rekeySchema,
  roomDetailResponseSchema,
  roomIdSchema,
  roomRolesAllowedFor,
  userActive,
  userMayCreateRooms,
  ValidationError,
  parseStatement,
  type MemberRecord,
  type SignedStatement,
  type UserRecord,
} from '@sealbus/protocol';
import { verifyRoomStatement } from '@sealbus/crypto';
import { z } from 'zod';
import { HttpError } from '../errors.js';
import {
  audit,
  param,
  readJson,
  requireActor,
  requireMembership,
  tellDataPlane,
  intend,
} from '../guard.js';
import type { RouteDef } from './types.js';
import type { Services } from '../guard.js';

const signPubParam = z.string().transform((v, ctx) => {
  try {
    return parseSignPubHex(v);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as ValidationError).message });
    return z.NEVER;
  }
});

/** `?after=N` of the statements route: -1 (everything) when absent. */
const afterParam = z
  .string()
  .regex(/^(0|[1-9][0-9]{0,15})$/, 'must be a non-negative integer')
  .optional()
  .transform((v) => (v === undefined ? -1 : Number(v)));

/** Sealed keys by sign_pub, keys normalised (lowercase hex), each once. */
function sealedByKey(given: Record<string, string>): Record<string, string> {
  const sealed: Record<string, string> = {};
  for (const [k, v] of Object.entries(given)) {
    const key = parseKeyHex(k, `sealed_keys.${k.slice(0, 16)}`);
    if (key in sealed) throw new ValidationError('sealed_keys', `${key} is listed twice`);
    sealed[key] = v;
  }
  return sealed;
}

/** A room's members, each with its user record (null for a user that is gone). */
async function membersWithUsers(s: Services, id: string) {
  const members = await s.store.rooms.members(id);
  const users = await Promise.all(members.map((m) => s.store.getUser(m.sign_pub)));
  return members.map((m, i) => ({ m, u: users[i] ?? null }));
}

/**
 * A member that still holds the room's key but may no longer: its
 * membership expired, or its user is revoked, expired or gone.
 */
const inactive = ({ m, u }: { m: MemberRecord; u: UserRecord | null }) =>
  !grantActive(m.expires_at) || !u || !userActive(u);

/** The sign_pubs of a room's inactive members (a rekey leaves them out). */
async function inactiveMembers(s: Services, id: string): Promise<Set<string>> {
  return new Set((await membersWithUsers(s, id)).filter(inactive).map(({ m }) => m.sign_pub));
}

/**
 * Body limit of the routes that carry a statement (it lists every member):
 * 1 MiB holds a rekey of a room of about 4,000 members (a statement entry
 * and a sealed key are about 250 bytes per member).
 */
const STATEMENT_BODY_BYTES = 1024 * 1024;

/**
 * The cheap part of a statement's checks, before anything is recorded: it
 * parses, it is about this room and the owner signed it (400 BAD_STATEMENT
 * otherwise, and nothing is on the audit log). The store checks the rest
 * (seq, prev, the change it describes) when it applies it.
 */
function preCheckStatement(signed: SignedStatement, roomId: string, owner: string): void {
  let roomOf: string;
  try {
    roomOf = parseStatement(signed.statement).room;
  } catch (err) {
    throw new HttpError(400, 'BAD_STATEMENT', (err as Error).message);
  }
  if (roomOf !== roomId)
    throw new HttpError(400, 'BAD_STATEMENT', 'statement: it is not about this room');
  if (!verifyRoomStatement(owner, signed.statement, signed.sig))
    throw new HttpError(
      400,
      'BAD_STATEMENT',
      "statement: the room owner's signature does not verify"
    );
}

export const roomRoutes: RouteDef[] = [
  {
    method: 'post',
    path: '/rooms',
    summary: 'Create a room; the signer becomes its owner',
    access: 'signed',
    body: createRoomSchema,
    maxBody: STATEMENT_BODY_BYTES,
    status: 201,
    response: myRoomSchema,
    async handler(c, s) {
      const actor = requireActor(c);
      if (!userMayCreateRooms(actor, Date.now())) {
        await audit(s, c, 'room.create', null, 'denied', { reason: 'guest' });
        throw new HttpError(403, 'GUEST_FORBIDDEN', 'guests cannot create rooms');
      }
      const input = readJson(c, createRoomSchema);
      // The quota counts rooms the signer owns (not rooms it was added to:
      // others' invitations must not use up its own allowance). Checked
      // before the create, so concurrent creates may overshoot it by a few.
      const owned = (await s.store.rooms.membershipsOf(actor.sign_pub)).filter(
        (m) => m.role === 'owner'
      ).length;
      if (owned >= s.maxRoomsPerUser) {
        await audit(s, c, 'room.create', null, 'denied', {
          reason: 'room quota',
          owned,
          limit: s.maxRoomsPerUser,
        });
        throw new HttpError(
          403,
          'ROOM_QUOTA',
          `you own ${owned} rooms, the most this node allows per user (${s.maxRoomsPerUser}); delete one first`
        );
      }
      preCheckStatement(input.statement, input.id, actor.sign_pub);
      await intend(s, c, 'room.create', input.id, { subject: input.subject });
      const room = await s.store.rooms.create({
        id: input.id,
        subject: input.subject,
        policy: input.policy,
        owner: actor.sign_pub,
        statement: input.statement,
        ...(input.sealed_key !== undefined ? { sealedKey: input.sealed_key } : {}),
      });
      await audit(s, c, 'room.create', room.id, 'ok', {
        subject: room.subject,
        encrypt: room.policy.encrypt,
        persist: room.policy.persist,
        sign: room.policy.sign,
      });
      return c.json({ ...room, role: 'owner' }, 201);
    },
  },
  {
    method: 'get',
    path: '/rooms',
    summary: 'The rooms the signer belongs to, with its role in each',
    access: 'signed',
    status: 200,
    response: myRoomsResponseSchema,
    async handler(c, s) {
      const actor = requireActor(c);
      const rooms = await s.store.rooms.roomsOf(actor.sign_pub);
      return c.json({ rooms: rooms.map(({ room, role }) => ({ ...room, role })) });
    },
  },
  {
    method: 'get',
    path: '/rooms/{id}',
    summary: 'A room and its members (members only)',
    access: 'member',
    status: 200,
    response: roomDetailResponseSchema,
    async handler(c, s) {
      const id = param(c, 'id', roomIdSchema);
      const { room, me } = await requireMembership(s, c, id, { action: 'room.get' });
      const members = await membersWithUsers(s, id);
      // A revoked user or an expired membership still holds the current key:
      // the room needs a rekey (that leaves them out) whatever its record says.
      const stale = room.policy.encrypt && members.some(inactive);
      return c.json({
        ...room,
        needs_rekey: room.needs_rekey || stale,
        role: me.role,
        members: members.map(({ m, u }) => ({
          ...m,
          handle: u?.handle ?? null,
          kex_pub: u?.kex_pub ?? null,
          nats_pub: u?.nats_pub ?? null,
          binding: u?.binding ?? null,
          bound: u?.bound ?? false,
          status: u?.status ?? 'unknown',
        })),
      });
    },
  },
  {
    method: 'delete',
    path: '/rooms/{id}',
    summary:
      'Delete a room, its memberships, sealed keys, blobs and (persisted) history (owner only)',
    access: 'owner',
    status: 200,
    response: roomDeletedResponseSchema,
    async handler(c, s) {
      const id = param(c, 'id', roomIdSchema);
      const { room } = await requireMembership(s, c, id, { action: 'room.delete', owner: true });
      await intend(s, c, 'room.delete', id);
      // Blobs first: a failure here leaves the room, so deleting it again finishes the job.
      const blobs = await s.store.blobs.deleteRoom(id);
      const members = await s.store.rooms.delete(room);
      await audit(s, c, 'room.delete', id, 'ok', {
        subject: room.subject,
        members: members.length,
        blobs,
      });
      for (const m of members) {
        if (m.sign_pub !== room.owner)
          await tellDataPlane(s, c, {
            type: 'member.removed',
            room: id,
            sign_pub: m.sign_pub,
            reason: 'deleted',
          });
      }
      return c.json({ id: room.id, subject: room.subject, deleted: true });
    },
  },
  {
    method: 'post',
    path: '/rooms/{id}/members',
    summary: "Invite a user, with the current epoch's key sealed to them (owner only)",
    access: 'owner',
    body: addMemberSchema,
    maxBody: STATEMENT_BODY_BYTES,
    status: 201,
    response: memberAddedResponseSchema,
    async handler(c, s) {
      const id = param(c, 'id', roomIdSchema);
      const { room } = await requireMembership(s, c, id, {
        action: 'room.member.add',
        owner: true,
      });
      const input = readJson(c, addMemberSchema);
      if (input.epoch !== undefined && input.epoch !== room.epoch) {
        throw new HttpError(
          409,
          'STALE_EPOCH',
          `the room is at epoch ${room.epoch}, the key given is for ${input.epoch}`
        );
      }
      const user = await s.store.getUser(input.sign_pub);
      if (!user)
        throw new HttpError(404, 'USER_NOT_FOUND', `no user with sign_pub ${input.sign_pub}`);
      if (user.status !== 'active')
        throw new HttpError(409, 'USER_REVOKED', `user ${input.sign_pub} is revoked`);
      if (!userActive(user))
        throw new HttpError(409, 'USER_EXPIRED', `user ${input.sign_pub}'s grant has expired`);
      if (!roomRolesAllowedFor(user.role).includes(input.role))
        throw new HttpError(400, 'GUEST_READER_ONLY', 'a guest can only be a reader');
      preCheckStatement(input.statement, id, room.owner);
      await intend(s, c, 'room.member.add', id, { member: input.sign_pub, role: input.role });
      const { member, epoch } = await s.store.rooms.addMember(room, {
        signPub: user.sign_pub,
        role: input.role,
        expiresAt: input.expires_at ?? null,
        addedBy: requireActor(c).sign_pub,
        statement: input.statement,
        ...(input.sealed_key !== undefined ? { sealedKey: input.sealed_key } : {}),
      });
      await audit(s, c, 'room.member.add', id, 'ok', {
        member: member.sign_pub,
        role: member.role,
        epoch,
      });
      await tellDataPlane(s, c, { type: 'member.added', room: id, sign_pub: member.sign_pub });
      return c.json({ id: room.id, subject: room.subject, epoch, member }, 201);
    },
  },
  {
    method: 'delete',
    path: '/rooms/{id}/members/{sign_pub}',
    summary:
      "Remove a member (body: the owner's statement without them) and mark the room as needing a rekey (owner only)",
    access: 'owner',
    body: removeMemberSchema,
    maxBody: STATEMENT_BODY_BYTES,
    status: 200,
    response: memberRemovedResponseSchema,
    async handler(c, s) {
      const id = param(c, 'id', roomIdSchema);
      const target = param(c, 'sign_pub', signPubParam);
      const { room } = await requireMembership(s, c, id, {
        action: 'room.member.remove',
        owner: true,
      });
      const input = readJson(c, removeMemberSchema);
      preCheckStatement(input.statement, id, room.owner);
      await intend(s, c, 'room.member.remove', id, { member: target });
      const after = await s.store.rooms.removeMember(room, target, input.statement);
      await audit(s, c, 'room.member.remove', id, 'ok', { member: target });
      await tellDataPlane(s, c, { type: 'member.removed', room: id, sign_pub: target });
      return c.json({
        id: room.id,
        subject: room.subject,
        removed: target,
        needs_rekey: after.needs_rekey,
      });
    },
  },
  {
    method: 'post',
    path: '/rooms/{id}/rekey',
    summary:
      'Rotate the room key to the next epoch, sealed to exactly the current members (owner only)',
    access: 'owner',
    body: rekeySchema,
    maxBody: STATEMENT_BODY_BYTES,
    status: 200,
    response: rekeyResponseSchema,
    async handler(c, s) {
      const id = param(c, 'id', roomIdSchema);
      const { room: current } = await requireMembership(s, c, id, {
        action: 'room.rekey',
        owner: true,
      });
      const input = readJson(c, rekeySchema);
      const sealed = sealedByKey(input.sealed_keys);
      const inactive = await inactiveMembers(s, id);
      preCheckStatement(input.statement, id, current.owner);
      await intend(s, c, 'room.rekey', id);
      const { room, dropped } = await s.store.rooms.rekey(
        id,
        input.epoch,
        sealed,
        input.statement,
        inactive
      );
      await audit(s, c, 'room.rekey', id, 'ok', {
        epoch: room.epoch,
        members: Object.keys(sealed).length,
        dropped: dropped.length,
      });
      for (const m of dropped)
        await tellDataPlane(s, c, {
          type: 'member.removed',
          room: id,
          sign_pub: m,
          reason: 'left out',
        });
      await tellDataPlane(s, c, { type: 'room.rekeyed', room: id, epoch: room.epoch });
      return c.json({ id: room.id, subject: room.subject, epoch: room.epoch });
    },
  },
  {
    method: 'get',
    path: '/rooms/{id}/statements',
    summary:
      "The room's owner-signed statements (query `after`: only those with a greater seq), served as stored",
    access: 'member',
    status: 200,
    response: statementsResponseSchema,
    async handler(c, s) {
      const id = param(c, 'id', roomIdSchema);
      const after = parseOrThrow(afterParam, c.req.query('after'), 'after');
      await requireMembership(s, c, id, { action: 'room.statements' });
      const r = await s.store.rooms.statements(id, after);
      return c.json({ id, head: r.head, statements: r.statements });
    },
  },
  {
    method: 'post',
    path: '/rooms/{id}/statements',
    summary:
      "A room made before statements gets its first one: the owner's statement of its members as they stand and, in an encrypted room, the next epoch with a fresh key sealed to each (owner only)",
    access: 'owner',
    body: adoptStatementSchema,
    maxBody: STATEMENT_BODY_BYTES,
    status: 201,
    response: statementsResponseSchema,
    async handler(c, s) {
      const id = param(c, 'id', roomIdSchema);
      const { room } = await requireMembership(s, c, id, {
        action: 'room.statement.adopt',
        owner: true,
      });
      const input = readJson(c, adoptStatementSchema);
      preCheckStatement(input.statement, id, room.owner);
      await intend(s, c, 'room.statement.adopt', id);
      const after = await s.store.rooms.adopt(
        room,
        input.statement,
        input.sealed_keys ? sealedByKey(input.sealed_keys) : undefined
      );
      const members = await s.store.rooms.members(id);
      await audit(s, c, 'room.statement.adopt', id, 'ok', {
        members: members.length,
        epoch: after.epoch,
      });
      if (after.epoch !== room.epoch)
        await tellDataPlane(s, c, { type: 'room.rekeyed', room: id, epoch: after.epoch });
      const r = await s.store.rooms.statements(id);
      return c.json({ id, head: r.head, statements: r.statements }, 201);
    },
  },
  {
    method: 'post',
    path: '/rooms/{id}/cursor',
    summary:
      "Restart the signer's reading of a persisted room: from its start, from new messages, or after a stream sequence",
    access: 'member',
    body: cursorSchema,
    status: 200,
    response: cursorResponseSchema,
    async handler(c, s) {
      const id = param(c, 'id', roomIdSchema);
      const { room } = await requireMembership(s, c, id, { action: 'room.cursor' });
      const input = readJson(c, cursorSchema);
      const at = 'after' in input ? { after: input.after } : input.from;
      await s.store.rooms.resetCursor(room, requireActor(c).sign_pub, at);
      return c.json({ id: room.id, subject: room.subject, ...input });
    },
  },
  {
    method: 'get',
    path: '/rooms/{id}/keys',
    summary: "The signer's own sealed keys for this room, every epoch",
    access: 'member',
    status: 200,
    response: myKeysResponseSchema,
    async handler(c, s) {
      const id = param(c, 'id', roomIdSchema);
      const { room } = await requireMembership(s, c, id, { action: 'room.keys' });
      const keys = await s.store.rooms.keysOf(id, requireActor(c).sign_pub);
      return c.json({
        id: room.id,
        subject: room.subject,
        epoch: room.epoch,
        keys: keys.map((k) => ({ epoch: k.epoch, sealed_key: k.sealed_key })),
      });
    },
  },
];
