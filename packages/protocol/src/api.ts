import { z } from 'zod';
import { auditRecordSchema } from './audit.js';
import {
  memberRecordSchema,
  memberRoleSchema,
  roomIdSchema,
  roomRecordSchema,
  sealedKeySchema,
} from './rooms.js';
import { keyHexSchema, userRecordSchema } from './users.js';

/** Every error response: a stable machine code and a human message. */
export const errorResponseSchema = z.object({
  error: z.object({ code: z.string(), message: z.string() }),
});
export type ErrorResponse = z.infer<typeof errorResponseSchema>;

export const userResponseSchema = z.object({ user: userRecordSchema });
export const usersResponseSchema = z.object({ users: z.array(userRecordSchema) });
export const revokeResponseSchema = z.object({ user: userRecordSchema, changed: z.boolean() });
/** `PUT /me/keys`: the record as it now is; `changed` false when it already held these keys. */
export const setMyKeysResponseSchema = z.object({ user: userRecordSchema, changed: z.boolean() });

/** A room as seen by one member: the record plus that member's role. */
export const myRoomSchema = roomRecordSchema.extend({ role: memberRoleSchema });
export type MyRoom = z.infer<typeof myRoomSchema>;
export const myRoomsResponseSchema = z.object({ rooms: z.array(myRoomSchema) });

export const roomMemberViewSchema = memberRecordSchema.extend({
  handle: z.string().nullable(),
  /** What the owner seals the next epoch's key to. */
  kex_pub: z.string().nullable(),
  nats_pub: z.string().nullable().default(null),
  /** With `bound`: sign_pub's signature over kex_pub and nats_pub, verified by the owner before sealing. */
  binding: z.string().nullable().default(null),
  bound: z.boolean().default(false),
  status: z.enum(['active', 'revoked', 'unknown']),
});
export const roomDetailResponseSchema = myRoomSchema.extend({
  members: z.array(roomMemberViewSchema),
});
export type RoomDetail = z.infer<typeof roomDetailResponseSchema>;

export const memberAddedResponseSchema = z.object({
  id: roomIdSchema,
  subject: z.string(),
  epoch: z.number().int().min(0),
  member: memberRecordSchema,
});
export const memberRemovedResponseSchema = z.object({
  id: roomIdSchema,
  subject: z.string(),
  removed: z.string(),
  needs_rekey: z.boolean(),
});
export const rekeyResponseSchema = z.object({
  id: roomIdSchema,
  subject: z.string(),
  epoch: z.number().int().min(0),
});
export const myKeysResponseSchema = z.object({
  id: roomIdSchema,
  subject: z.string(),
  epoch: z.number().int().min(0),
  // A sealed key is exactly a sealed 32-byte key; an epoch is never negative.
  keys: z.array(z.object({ epoch: z.number().int().min(0), sealed_key: sealedKeySchema })),
});
export const auditListSchema = z.object({ records: z.array(auditRecordSchema) });

export const cursorResponseSchema = z.object({
  id: roomIdSchema,
  subject: z.string(),
  from: z.enum(['start', 'new']).optional(),
  after: z.number().int().optional(),
});
/**
 * An active user's public keys. With `bound`, `binding` is sign_pub's
 * signature over kex_pub and nats_pub: a client verifies it before sealing a
 * room key to kex_pub, so the daemon cannot substitute a key.
 */
export const directoryEntrySchema = z.object({
  sign_pub: keyHexSchema('sign_pub'),
  kex_pub: keyHexSchema('kex_pub').nullable(),
  nats_pub: z.string().nullable().default(null),
  binding: z.string().nullable().default(null),
  bound: z.boolean().default(false),
  handle: z.string(),
});
export type DirectoryEntry = z.infer<typeof directoryEntrySchema>;
export const roomDeletedResponseSchema = z.object({
  id: roomIdSchema,
  subject: z.string(),
  deleted: z.literal(true),
});
