import type { KV } from 'nats';
import {
  newUserSchema,
  parseOrThrow,
  parseSignPubHex,
  userActive,
  userRecordSchema,
  ValidationError,
  type NewUser,
  type UserRecord,
} from '@sealbus/protocol';
import { StoreError } from './errors.js';
import { casUpdate, createOnly, decodeJson, encodeJson, getLive, readAll } from './kv.js';

const parseUser = (raw: unknown): UserRecord => parseOrThrow(userRecordSchema, raw);

function validKey(signPub: string): string {
  try {
    return parseSignPubHex(signPub);
  } catch (err) {
    throw new StoreError('INVALID', (err as Error).message, { cause: err });
  }
}

/**
 * Registers a user, create-only: an existing key (active or revoked) is a
 * CONFLICT and its row is left exactly as it was, role included.
 */
export async function addUser(kv: KV, input: NewUser, now = new Date()): Promise<UserRecord> {
  let parsed;
  try {
    parsed = parseOrThrow(newUserSchema, input);
  } catch (err) {
    throw new StoreError('INVALID', (err as ValidationError).message, { cause: err });
  }
  const record: UserRecord = {
    sign_pub: parsed.sign_pub,
    kex_pub: parsed.kex_pub ?? null,
    handle: parsed.handle,
    role: parsed.role,
    status: 'active',
    created_at: now.toISOString(),
    revoked_at: null,
    expires_at: parsed.expires_at ?? null,
  };
  const rev = await createOnly(kv, record.sign_pub, encodeJson(record), 'add user');
  if (rev === null) {
    throw new StoreError('CONFLICT', `user ${record.sign_pub} already registered (unchanged)`);
  }
  return record;
}

export async function getUser(kv: KV, signPub: string): Promise<UserRecord | null> {
  const entry = await getLive(kv, validKey(signPub), 'get user');
  return entry ? decodeJson(entry, parseUser) : null;
}

/** All users, revoked ones included, oldest first. */
export async function listUsers(kv: KV): Promise<UserRecord[]> {
  const users = await readAll(kv, parseUser, 'list users');
  return users.sort(
    (a, b) => a.created_at.localeCompare(b.created_at) || a.sign_pub.localeCompare(b.sign_pub)
  );
}

/**
 * Revokes a user: a status flip with `revoked_at`, never a delete, so the
 * record stays for audit. Revoking a revoked user changes nothing.
 */
export async function revokeUser(
  kv: KV,
  signPub: string,
  now = new Date()
): Promise<{ user: UserRecord; changed: boolean }> {
  const r = await casUpdate(
    kv,
    validKey(signPub),
    parseUser,
    (u): UserRecord | null =>
      u.status === 'revoked' ? null : { ...u, status: 'revoked', revoked_at: now.toISOString() },
    'revoke user'
  );
  return { user: r.value, changed: r.changed };
}

/** "May this key act at all": registered, not revoked, not expired (the policy's rule). */
export function userIsActive(user: UserRecord | null, now = Date.now()): user is UserRecord {
  return user !== null && userActive(user, now);
}
