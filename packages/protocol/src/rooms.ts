import { z } from 'zod';
import { keyHexSchema } from './users.js';

/** Bytes of a sealed 32-byte room key: ephemeral X25519 key + box (key + MAC). */
export const SEALED_ROOM_KEY_BYTES = 32 + 32 + 16;

const SUBJECT_TOKEN = /^[A-Za-z0-9_-]+$/;
/** First tokens kept for the system: NATS internals and Sealbus's own subjects. */
const RESERVED_FIRST = /^(\$|_)|^sealbus$/i;

/**
 * A room's NATS subject: literal tokens (no wildcards) of letters, digits,
 * `_` and `-`, separated by dots; at most 16 tokens and 200 characters. The
 * first token may not start with `$` or `_` (NATS system and inbox subjects)
 * nor be `sealbus` (control events and audit).
 */
export const subjectSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(200, 'must be at most 200 characters')
  .superRefine((s, ctx) => {
    const tokens = s.split('.');
    if (tokens.length > 16)
      ctx.addIssue({ code: 'custom', message: 'must have at most 16 tokens' });
    else if (!tokens.every((t) => SUBJECT_TOKEN.test(t))) {
      ctx.addIssue({
        code: 'custom',
        message: 'tokens may contain only letters, digits, _ and - (no wildcards, no empty tokens)',
      });
    } else if (RESERVED_FIRST.test(tokens[0]!)) {
      ctx.addIssue({ code: 'custom', message: `"${tokens[0]}" is reserved for the system` });
    }
  });

export const roomIdSchema = z
  .string()
  .regex(/^[0-9a-f]{24}$/, 'must be a room id (24 hex characters)');

export const roomPolicySchema = z.strictObject({
  /** Payloads are AEAD-encrypted with the epoch's room key. */
  encrypt: z.boolean(),
  /** Messages are kept in a replicated JetStream stream (immutable history). */
  persist: z.boolean(),
  /** Every frame carries the sender's Ed25519 signature. */
  sign: z.boolean(),
});
export type RoomPolicy = z.infer<typeof roomPolicySchema>;

export const MEMBER_ROLES = Object.freeze(['owner', 'writer', 'reader'] as const);
export const memberRoleSchema = z.enum(MEMBER_ROLES);
export type MemberRole = z.infer<typeof memberRoleSchema>;

/** An invitee's role: the owner is whoever created the room. */
export const inviteRoleSchema = z.enum(['writer', 'reader']);

/** A room key sealed to one member (standard base64 of a libsodium sealed box). */
export const sealedKeySchema = z
  .string()
  .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'must be standard base64')
  .refine((s) => Buffer.from(s, 'base64').length === SEALED_ROOM_KEY_BYTES, {
    message: `must decode to ${SEALED_ROOM_KEY_BYTES} bytes (a sealed 32-byte key)`,
  });

export const roomRecordSchema = z.object({
  id: roomIdSchema,
  subject: z.string(),
  owner: keyHexSchema('owner'),
  policy: roomPolicySchema,
  /** Current key epoch; 0 at creation, +1 per rekey. */
  epoch: z.number().int().min(0),
  /** Set when a member was removed and the owner has not rotated the key yet. */
  needs_rekey: z.boolean(),
  created_at: z.string(),
});
export type RoomRecord = z.infer<typeof roomRecordSchema>;

export const memberRecordSchema = z.object({
  room: roomIdSchema,
  sign_pub: keyHexSchema('sign_pub'),
  role: memberRoleSchema,
  /**
   * The room's subject and persistence, copied from the (immutable) room
   * record so that the auth callout builds a user's permissions from one
   * scan of that user's memberships.
   */
  subject: z.string(),
  persist: z.boolean(),
  added_at: z.string(),
  added_by: keyHexSchema('added_by'),
  /** The membership ends then (RFC 3339); null: it does not expire. */
  expires_at: z.iso.datetime({ offset: true }).nullable().default(null),
});
export type MemberRecord = z.infer<typeof memberRecordSchema>;

export const roomKeyRecordSchema = z.object({
  room: roomIdSchema,
  epoch: z.number().int().min(0),
  sign_pub: keyHexSchema('sign_pub'),
  sealed_key: sealedKeySchema,
  created_at: z.string(),
});
export type RoomKeyRecord = z.infer<typeof roomKeyRecordSchema>;

/** A room statement as stored and served: its canonical JSON and the owner's signature (hex). */
export const signedStatementSchema = z.strictObject({
  statement: z
    .string()
    .min(2)
    .max(8 * 1024 * 1024),
  sig: z.string().regex(/^[0-9a-f]{128}$/, 'must be 128 lowercase hex characters'),
});

// ---- requests ----

export const createRoomSchema = z.strictObject({
  /** The room's id, chosen by the creator (random): the owner's first statement names it. */
  id: roomIdSchema,
  subject: subjectSchema,
  policy: roomPolicySchema,
  /** Epoch 0's key sealed to the creator; required when `policy.encrypt`. */
  sealed_key: sealedKeySchema.optional(),
  /** The owner's statement seq 0: this room, its owner as only member, epoch 0. */
  statement: signedStatementSchema,
});
export type CreateRoomRequest = z.input<typeof createRoomSchema>;

export const addMemberSchema = z.strictObject({
  sign_pub: keyHexSchema('sign_pub'),
  role: inviteRoleSchema,
  /** The current epoch's key sealed to the invitee; required in encrypted rooms. */
  sealed_key: sealedKeySchema.optional(),
  /** The epoch `sealed_key` belongs to; a stale one is a 409 instead of a key the invitee cannot use. */
  epoch: z.number().int().min(0).optional(),
  /** The membership ends then (RFC 3339, in the future). */
  expires_at: z.iso
    .datetime({ offset: true })
    .nullable()
    .optional()
    .refine((v) => v == null || Date.parse(v) > Date.now(), 'must be in the future'),
  /** The owner's next statement: the members so far plus this one, in this role. */
  statement: signedStatementSchema,
});
export type AddMemberRequest = z.input<typeof addMemberSchema>;

export const rekeySchema = z.strictObject({
  /** Must be the room's current epoch + 1. */
  epoch: z.number().int().min(1),
  /** The new key sealed to every current member, by sign_pub: no more, no less. */
  sealed_keys: z.record(z.string(), sealedKeySchema),
  /** The owner's next statement: this epoch, its key's commitment, exactly the members sealed to. */
  statement: signedStatementSchema,
});
export type RekeyRequest = z.input<typeof rekeySchema>;

/** Body of a removal: the owner's next statement, without the member. */
export const removeMemberSchema = z.strictObject({ statement: signedStatementSchema });
export type RemoveMemberRequest = z.input<typeof removeMemberSchema>;

/**
 * The first statement of a room made before statements existed (its owner
 * writes it once): its members as they are and, in an encrypted room, the
 * next epoch, whose fresh key is sealed to each of them here.
 */
export const adoptStatementSchema = z.strictObject({
  statement: signedStatementSchema,
  sealed_keys: z.record(z.string(), sealedKeySchema).optional(),
});

/**
 * Where a member's reading of a persisted room restarts: its start, new
 * messages only, or right after a stream sequence the member has processed
 * (a resume after a gap, a failover or a clean stop).
 */
export const cursorSchema = z.union([
  z.strictObject({ from: z.enum(['start', 'new']) }),
  z.strictObject({ after: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) }),
]);
export type CursorRequest = z.input<typeof cursorSchema>;

/** Stream of a persisted room. */
export function roomStreamName(roomId: string): string {
  return `ROOM_${roomId}`;
}

/** A member's durable consumer on a persisted room's stream (the daemon creates it). */
export function memberDurableName(signPub: string): string {
  return `m_${signPub.slice(0, 32)}`;
}

/**
 * Where a member's consumer delivers a persisted room: under the member's
 * own inbox prefix, so the server publishes there and nowhere else on the
 * member's behalf. A member may subscribe to it only while a membership
 * grants exactly this subject (no inbox grant reaches it; see
 * `userReplyInboxPrefix`), so a removed or expired member whose consumer
 * is still there reads nothing from it.
 */
export function memberDeliverSubject(signPub: string, roomId: string): string {
  return `${userInboxPrefix(signPub)}.room.${roomId}`;
}

/** Where a writer sends a sealed frame for a persisted room (the daemon appends it). */
export function appendSubject(roomId: string): string {
  return `sealbus.append.${roomId}`;
}

/** The `Sealbus-Append-Id` header: one id per frame, kept across its retries. */
export const APPEND_ID_HEADER = 'Sealbus-Append-Id';

/** Where the daemon answers an append: under the writer's own inbox prefix. */
export function appendResultSubject(signPub: string, appendId: string): string {
  return `${userInboxPrefix(signPub)}.append.${appendId}`;
}

/** A user's inbox prefix: replies to other users' requests never reach it. */
export function userInboxPrefix(signPub: string): string {
  return `_INBOX_${signPub.slice(0, 32)}`;
}

/**
 * What a user's connection passes to its NATS client as `inboxPrefix`: the
 * part of its inbox where replies to its own requests arrive (the user may
 * subscribe to anything under it). Not the inbox prefix itself: nats-server
 * checks a wildcard subscription against the grants as if it were a literal
 * subject, so a grant `<prefix>.*` would admit a subscription `<prefix>.>`,
 * which would then receive the room deliveries beside it.
 */
export function userReplyInboxPrefix(signPub: string): string {
  return `${userInboxPrefix(signPub)}.r`;
}

/**
 * Where an answer to a request in an ephemeral room goes: under the room
 * (only its writers may publish there) and the requester (only it may
 * subscribe there), so an answer reaches the requester and nobody else.
 */
export function roomAnswerSubject(roomId: string, requester: string, id: string): string {
  return `${roomAnswerPrefix(roomId, requester)}${id}`;
}

/** `roomAnswerSubject` up to its last token (with the trailing dot). */
export function roomAnswerPrefix(roomId: string, requester: string): string {
  return `sealbus.reply.${roomId}.${requester.slice(0, 32)}.`;
}

/**
 * What a writer of an ephemeral room subscribes to for the answers to its
 * requests there (granted per room: only the room's writers can send to it).
 */
export function roomAnswersInbox(roomId: string, signPub: string): string {
  return `sealbus.reply.${roomId}.${signPub.slice(0, 32)}.*`;
}

/** What a writer of an ephemeral room may publish answers to. */
export function roomAnswersGrant(roomId: string): string {
  return `sealbus.reply.${roomId}.*.*`;
}

/** Where membershipd tells a user that its rooms or keys changed. */
export function userEventsSubject(signPub: string): string {
  return `sealbus.events.${signPub.slice(0, 32)}`;
}
