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
  rekeyResponseSchema,
  rekeySchema,
  roomDetailResponseSchema,
  roomIdSchema,
  roomRolesAllowedFor,
  userActive,
  userMayCreateRooms,
  ValidationError,
} from '@sealbus/protocol';
import { z } from 'zod';
import { HttpError } from '../errors.js';
import {
  audit,
  param,
  readJson,
  requireActor,
  requireMembership,
  tellDataPlane,
} from '../guard.js';
import type { RouteDef } from './types.js';

const signPubParam = z.string().transform((v, ctx) => {
  try {
    return parseSignPubHex(v);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as ValidationError).message });
    return z.NEVER;
  }
});

export const roomRoutes: RouteDef[] = [
  {
    method: 'post',
    path: '/rooms',
    summary: 'Create a room; the signer becomes its owner',
    access: 'signed',
    body: createRoomSchema,
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
      const room = await s.store.rooms.create({
        subject: input.subject,
        policy: input.policy,
        owner: actor.sign_pub,
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
      const members = await s.store.rooms.members(id);
      const users = await Promise.all(members.map((m) => s.store.getUser(m.sign_pub)));
      return c.json({
        ...room,
        role: me.role,
        members: members.map((m, i) => ({
          ...m,
          handle: users[i]?.handle ?? null,
          kex_pub: users[i]?.kex_pub ?? null,
          nats_pub: users[i]?.nats_pub ?? null,
          binding: users[i]?.binding ?? null,
          bound: users[i]?.bound ?? false,
          status: users[i]?.status ?? 'unknown',
        })),
      });
    },
  },
  {
    method: 'delete',
    path: '/rooms/{id}',
    summary: 'Delete a room, its memberships, sealed keys and (persisted) history (owner only)',
    access: 'owner',
    status: 200,
    response: roomDeletedResponseSchema,
    async handler(c, s) {
      const id = param(c, 'id', roomIdSchema);
      const { room } = await requireMembership(s, c, id, { action: 'room.delete', owner: true });
      const members = await s.store.rooms.delete(room);
      await audit(s, c, 'room.delete', id, 'ok', {
        subject: room.subject,
        members: members.length,
      });
      for (const m of members) {
        if (m.sign_pub !== room.owner)
          await tellDataPlane(s, c, { type: 'member.removed', room: id, sign_pub: m.sign_pub });
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
      const { member, epoch } = await s.store.rooms.addMember(room, {
        signPub: user.sign_pub,
        role: input.role,
        expiresAt: input.expires_at ?? null,
        addedBy: requireActor(c).sign_pub,
        ...(input.sealed_key !== undefined ? { sealedKey: input.sealed_key } : {}),
      });
      await audit(s, c, 'room.member.add', id, 'ok', {
        member: member.sign_pub,
        role: member.role,
        epoch,
      });
      return c.json({ id: room.id, subject: room.subject, epoch, member }, 201);
    },
  },
  {
    method: 'delete',
    path: '/rooms/{id}/members/{sign_pub}',
    summary: 'Remove a member and mark the room as needing a rekey (owner only)',
    access: 'owner',
    status: 200,
    response: memberRemovedResponseSchema,
    async handler(c, s) {
      const id = param(c, 'id', roomIdSchema);
      const target = param(c, 'sign_pub', signPubParam);
      const { room } = await requireMembership(s, c, id, {
        action: 'room.member.remove',
        owner: true,
      });
      const after = await s.store.rooms.removeMember(room, target);
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
    status: 200,
    response: rekeyResponseSchema,
    async handler(c, s) {
      const id = param(c, 'id', roomIdSchema);
      await requireMembership(s, c, id, { action: 'room.rekey', owner: true });
      const input = readJson(c, rekeySchema);
      const sealed: Record<string, string> = {};
      for (const [k, v] of Object.entries(input.sealed_keys)) {
        const key = parseKeyHex(k, `sealed_keys.${k.slice(0, 16)}`);
        if (key in sealed) throw new ValidationError('sealed_keys', `${key} is listed twice`);
        sealed[key] = v;
      }
      const room = await s.store.rooms.rekey(id, input.epoch, sealed);
      await audit(s, c, 'room.rekey', id, 'ok', {
        epoch: room.epoch,
        members: Object.keys(sealed).length,
      });
      return c.json({ id: room.id, subject: room.subject, epoch: room.epoch });
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
