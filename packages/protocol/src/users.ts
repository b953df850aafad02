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

const BINDING_HEX_RE = /^[0-9a-fA-F]{128}$/;

/** A key binding as hex: an Ed25519 signature, 64 bytes, returned lowercase. */
export const bindingHexSchema = z
  .string()
  .regex(BINDING_HEX_RE, 'must be 128 hex characters (a 64-byte Ed25519 signature)')
  .transform((v) => v.toLowerCase());

/**
 * A public identity token (`sbid1.` + base64url). Only its size is checked
 * here; decoding and the binding's signature are checked where the keys are
 * used (`parsePublicIdentity` in @sealbus/crypto), with codes BAD_TOKEN and
 * BAD_BINDING.
 */
export const publicTokenSchema = z.string().min(1, 'must not be empty').max(512, 'too long');

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

/**
 * A user row as stored and as served: the allowlist entry of one identity.
 * `nats_pub` is the user's derived NATS key and `binding` its signed
 * statement tying kex_pub and nats_pub to sign_pub; `bound` is true only when
 * the daemon verified that binding when it was written. Rows written before
 * bindings existed parse as unbound (nulls, false).
 */
export const userRecordSchema = z
  .object({
    sign_pub: keyHexSchema('sign_pub'),
    kex_pub: keyHexSchema('kex_pub').nullable(),
    nats_pub: keyHexSchema('nats_pub').nullable().default(null),
    binding: bindingHexSchema.nullable().default(null),
    bound: z.boolean().default(false),
    handle: handleSchema,
    role: roleSchema,
    status: userStatusSchema,
    created_at: timestampSchema,
    revoked_at: timestampSchema.nullable(),
    expires_at: expiresAtSchema,
  })
  .refine((u) => u.bound === (u.kex_pub !== null && u.nats_pub !== null && u.binding !== null), {
    message: 'bound must be true exactly when kex_pub, nats_pub and binding are all set',
    path: ['bound'],
  });
export type UserRecord = z.infer<typeof userRecordSchema>;

/**
 * What an admin supplies to register a user: either `public` (a public
 * identity token: a bound user) or `sign_pub` with an optional `kex_pub` (an
 * unbound user, who binds itself with `PUT /me/keys`). `nats_pub` and
 * `binding` may be given as fields too; the binding is then verified.
 */
export const newUserSchema = z
  .object({
    public: publicTokenSchema.optional(),
    sign_pub: keyHexSchema('sign_pub').optional(),
    kex_pub: keyHexSchema('kex_pub').nullable().optional(),
    nats_pub: keyHexSchema('nats_pub').nullable().optional(),
    binding: bindingHexSchema.nullable().optional(),
    handle: handleSchema,
    role: roleSchema,
    /** The grant ends then: requests, connections and issued JWTs stop at this time. */
    expires_at: timestampSchema
      .nullable()
      .optional()
      .refine((v) => v == null || Date.parse(v) > Date.now(), 'must be in the future'),
  })
  .superRefine((u, ctx) => {
    const issue = (path: string, message: string) =>
      ctx.addIssue({ code: 'custom', path: [path], message });
    if (u.public !== undefined) {
      for (const k of ['sign_pub', 'kex_pub', 'nats_pub', 'binding'] as const) {
        if (u[k] != null) issue(k, 'give either public or the keys, not both');
      }
      return;
    }
    if (u.sign_pub === undefined) return issue('sign_pub', 'required (or give public)');
    if ((u.nats_pub == null) !== (u.binding == null))
      return issue(u.nats_pub == null ? 'nats_pub' : 'binding', 'nats_pub and binding go together');
    if (u.binding != null && u.kex_pub == null)
      issue('kex_pub', 'a binding covers kex_pub: it is required with one');
  });
export type NewUser = z.input<typeof newUserSchema>;

/** `PUT /me/keys`: a user completes its own record with keys and their binding. */
export const setMyKeysSchema = z.object({
  kex_pub: keyHexSchema('kex_pub'),
  nats_pub: keyHexSchema('nats_pub'),
  binding: bindingHexSchema,
});
export type SetMyKeys = z.input<typeof setMyKeysSchema>;

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
