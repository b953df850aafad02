import { z } from 'zod';
import { ValidationError } from './errors.js';
import { parseKeyHex } from './keys.js';
import { grantInForce, userIsActive } from './policy.js';

/** A zod schema around {@link parseKeyHex}, so routes and SDK share one rule. */
export const keyHexSchema = (field: string) =>
  z.string().transform((v, ctx) => {
    try {
      return parseKeyHex(v, field);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
      return z.NEVER;
    }
  });

/**
 * `guest`: may only ever be a room reader, cannot create rooms and never
 * passes an admin check.
 */
export const ROLES = Object.freeze(['admin', 'member', 'guest'] as const);
export const roleSchema = z.enum(ROLES);
export type Role = z.infer<typeof roleSchema>;

export const USER_STATUSES = Object.freeze(['active', 'revoked'] as const);
export const userStatusSchema = z.enum(USER_STATUSES);
export type UserStatus = z.infer<typeof userStatusSchema>;

/** Handles are labels for people and logs: short, printable, no spaces. */
export const handleSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(64, 'must be at most 64 characters')
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9._@-]*$/,
    'may contain letters, digits and . _ @ - (starting with a letter or digit)'
  );

const timestampSchema = z.iso.datetime({ offset: true });

/** When a grant ends (RFC 3339); null or absent: it does not expire. */
export const expiresAtSchema = timestampSchema.nullable().default(null);

/** True while a grant with this `expires_at` is still in force at `now` (ms); see policy.ts. */
export function grantActive(expiresAt: string | null | undefined, now = Date.now()): boolean {
  return grantInForce(expiresAt, now);
}

/** A user row as stored and as served: the allowlist entry of one identity. */
export const userRecordSchema = z.object({
  sign_pub: keyHexSchema('sign_pub'),
  kex_pub: keyHexSchema('kex_pub').nullable(),
  handle: handleSchema,
  role: roleSchema,
  status: userStatusSchema,
  created_at: timestampSchema,
  revoked_at: timestampSchema.nullable(),
  expires_at: expiresAtSchema,
});
export type UserRecord = z.infer<typeof userRecordSchema>;

/** What an admin supplies to register a user. */
export const newUserSchema = z.object({
  sign_pub: keyHexSchema('sign_pub'),
  kex_pub: keyHexSchema('kex_pub').nullable().optional(),
  handle: handleSchema,
  role: roleSchema,
  /** The grant ends then: requests, connections and issued JWTs stop at this time. */
  expires_at: timestampSchema
    .nullable()
    .optional()
    .refine((v) => v == null || Date.parse(v) > Date.now(), 'must be in the future'),
});
export type NewUser = z.input<typeof newUserSchema>;

/** Active: not revoked and not past its `expires_at` (policy.ts, the one rule). */
export function userActive(
  u: Pick<UserRecord, 'status' | 'expires_at'>,
  now = Date.now()
): boolean {
  return userIsActive(u, now);
}

/**
 * Parses with a schema and turns the first zod issue into a ValidationError
 * naming the field, for edges that report one clear problem at a time.
 */
export function parseOrThrow<S extends z.ZodType>(
  schema: S,
  value: unknown,
  name = 'body'
): z.output<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = issue.path.length > 0 ? issue.path.join('.') : name;
  const message = issue.message.startsWith(`${field}: `)
    ? issue.message.slice(field.length + 2)
    : issue.message;
  throw new ValidationError(field, message);
}
