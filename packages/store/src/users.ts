import type { KV } from 'nats';
import { CryptoError, fromHex, parsePublicIdentity, verifyKeyBinding } from '@sealbus/crypto';
import {
  newUserSchema,
  parseKeyHex,
  parseOrThrow,
  parseSignPubHex,
  userActive,
  setMyKeysSchema,
  userRecordSchema,
  ValidationError,
  type NewUser,
  type SetMyKeys,
  type UserRecord,
} from '@sealbus/protocol';
import { StoreError, isWrongLastSequence, toStoreError } from './errors.js';
import {
  casUpdate,
  createOnly,
  decodeJson,
  encodeJson,
  getLive,
  getLiveRetrying,
  readAll,
} from './kv.js';

const parseUser = (raw: unknown): UserRecord => parseOrThrow(userRecordSchema, raw);

function validKey(key: string, field = 'sign_pub'): string {
  try {
    return field === 'sign_pub' ? parseSignPubHex(key) : parseKeyHex(key, field);
  } catch (err) {
    throw new StoreError('INVALID', (err as Error).message, { cause: err });
  }
}

/** Input that does not fit its schema is INVALID, before anything is written. */
function validInput<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw new StoreError('INVALID', (err as ValidationError).message, { cause: err });
  }
}

/** The keys of a bound record, as hex. */
interface BoundKeysHex {
  sign_pub: string;
  kex_pub: string;
  nats_pub: string;
  binding: string;
}

/**
 * Verifies a binding given as hex; a bad one is `CryptoError` BAD_BINDING,
 * the same error a token with a bad binding gives.
 */
export function checkBinding(k: BoundKeysHex): void {
  const ok = verifyKeyBinding(
    {
      signPub: fromHex(k.sign_pub, 'sign_pub', 32),
      kexPub: fromHex(k.kex_pub, 'kex_pub', 32),
      natsPub: fromHex(k.nats_pub, 'nats_pub', 32),
    },
    fromHex(k.binding, 'binding', 64)
  );
  if (!ok) {
    throw new CryptoError(
      'BAD_BINDING',
      `binding: not a signature of sign_pub ${k.sign_pub} over its kex_pub and nats_pub`
    );
  }
}

/** The value of a `sealbus_nats_keys` row: whose record names this NATS key. */
interface NatsKeyRow {
  sign_pub: string;
}
export const parseNatsKeyRow = (raw: unknown): NatsKeyRow => {
  const r = raw as Partial<NatsKeyRow> | null;
  if (typeof r?.sign_pub !== 'string') throw new Error('expected {"sign_pub"}');
  return { sign_pub: parseSignPubHex(r.sign_pub) };
};

/**
 * Points `nats_pub` at `signPub` in the NATS key index (compare-and-set),
 * before the user row naming it is written. A row held by another user is a
 * CONFLICT while that user is active and its record names this key; a stale
 * row (its owner's record names another key, e.g. after a failed write) or
 * one of a revoked user is taken over. An owner with no record yet may be a
 * write in flight: that is a CONFLICT too, never a takeover.
 */
export async function claimNatsKey(
  users: KV,
  natsKeys: KV,
  natsPub: string,
  signPub: string
): Promise<void> {
  // One key per protocol, across users too: a NATS key is never a sign key,
  // neither the claimant's own nor anyone's registered one (the callout
  // refuses sign keys, so such a claim could only confuse who is who).
  if (natsPub === signPub)
    throw new StoreError('INVALID', 'nats_pub: a NATS key is never the sign key itself');
  if (await getUser(users, natsPub))
    throw new StoreError('CONFLICT', `nats_pub ${natsPub} is a registered sign key (unchanged)`);
  const rev = await writeNatsKeyRow(users, natsKeys, natsPub, signPub);
  // A registration of natsPub as a sign key may have run beside this claim:
  // each side writes, then looks at the other's bucket, so at least one of
  // them sees the other (and both may: then both are refused).
  if (await getUser(users, natsPub)) {
    if (rev !== null) await natsKeys.delete(natsPub, { previousSeq: rev }).catch(() => {});
    throw new StoreError('CONFLICT', `nats_pub ${natsPub} is a registered sign key (unchanged)`);
  }
}

/** The index write of `claimNatsKey`: the row's new revision, or null when it already pointed at `signPub`. */
async function writeNatsKeyRow(
  users: KV,
  natsKeys: KV,
  natsPub: string,
  signPub: string
): Promise<number | null> {
  const value = encodeJson({ sign_pub: signPub } satisfies NatsKeyRow);
  for (let attempt = 1; attempt <= 8; attempt++) {
    const created = await createOnly(natsKeys, natsPub, value, 'claim nats key');
    if (created !== null) return created;
    const entry = await getLive(natsKeys, natsPub, 'claim nats key');
    if (!entry) continue; // deleted in between: create again
    const owner = decodeJson(entry, parseNatsKeyRow).sign_pub;
    if (owner === signPub) return null;
    const ownerRecord = await getUser(users, owner);
    if (!ownerRecord || (ownerRecord.nats_pub === natsPub && ownerRecord.status === 'active')) {
      throw new StoreError('CONFLICT', `nats_pub ${natsPub} is bound to another user (unchanged)`);
    }
    try {
      return await natsKeys.update(natsPub, value, entry.revision);
    } catch (err) {
      // Lost a race with another writer: look again.
      if (!isWrongLastSequence(err)) throw toStoreError(err, 'claim nats key');
    }
  }
  throw new StoreError('CONFLICT', `nats_pub ${natsPub}: the index kept changing under us`);
}

/** What a registration resolves to, every key as lowercase hex. */
export function resolveNewUser(
  input: NewUser
): Omit<UserRecord, 'status' | 'created_at' | 'revoked_at'> {
  const parsed = validInput(() => parseOrThrow(newUserSchema, input));
  const common = {
    handle: parsed.handle,
    role: parsed.role,
    expires_at: parsed.expires_at ?? null,
  };
  if (parsed.public !== undefined) {
    // CryptoError BAD_TOKEN / BAD_BINDING: typed, stable codes for the edges.
    const p = parsePublicIdentity(parsed.public);
    return {
      sign_pub: p.signPubHex,
      kex_pub: p.kexPubHex,
      nats_pub: p.natsPubHex,
      binding: p.bindingHex,
      bound: true,
      ...common,
    };
  }
  const keys = {
    sign_pub: parsed.sign_pub!,
    kex_pub: parsed.kex_pub ?? null,
    nats_pub: parsed.nats_pub ?? null,
    binding: parsed.binding ?? null,
  };
  if (keys.binding !== null) checkBinding(keys as BoundKeysHex);
  return { ...keys, bound: keys.binding !== null, ...common };
}

/**
 * Registers a user, create-only: an existing key (active or revoked) is a
 * CONFLICT and its row is left exactly as it was, role included. A binding
 * (in a token or as fields) is verified first; its NATS key is claimed in
 * the index before the row is written.
 */
export async function addUser(
  kv: KV,
  natsKeys: KV,
  input: NewUser,
  now = new Date()
): Promise<UserRecord> {
  const r = resolveNewUser(input);
  const record: UserRecord = {
    sign_pub: r.sign_pub,
    kex_pub: r.kex_pub,
    nats_pub: r.nats_pub,
    binding: r.binding,
    bound: r.bound,
    handle: r.handle,
    role: r.role,
    status: 'active',
    created_at: now.toISOString(),
    revoked_at: null,
    expires_at: r.expires_at,
  };
  // The mirror of claimNatsKey's rule: a sign key is never someone's NATS
  // key, nor one being claimed (an index row whose owner's record is not
  // written yet counts too).
  const clash = () =>
    new StoreError(
      'CONFLICT',
      `sign_pub ${record.sign_pub} is another user's NATS key (unchanged)`
    );
  if (await getLiveRetrying(natsKeys, record.sign_pub, 'add user')) throw clash();
  if (record.nats_pub !== null) await claimNatsKey(kv, natsKeys, record.nats_pub, record.sign_pub);
  const rev = await createOnly(kv, record.sign_pub, encodeJson(record), 'add user');
  if (rev === null) {
    throw new StoreError('CONFLICT', `user ${record.sign_pub} already registered (unchanged)`);
  }
  // A claim of this key as a NATS key may have run beside this write; see
  // claimNatsKey (write, then look at the other bucket).
  if (await getLiveRetrying(natsKeys, record.sign_pub, 'add user')) {
    await kv.delete(record.sign_pub, { previousSeq: rev }).catch(() => {});
    throw clash();
  }
  return record;
}

/**
 * A user completes its own record: kex_pub, nats_pub and their binding
 * (verified against the record's sign_pub). A key that differs from one
 * already registered is a CONFLICT (the record keeps it); the same keys
 * again change nothing.
 */
export async function setUserKeys(
  kv: KV,
  natsKeys: KV,
  signPub: string,
  input: SetMyKeys
): Promise<{ user: UserRecord; changed: boolean }> {
  const key = validKey(signPub);
  const k = validInput(() => parseOrThrow(setMyKeysSchema, input));
  checkBinding({ sign_pub: key, ...k });
  const refuse = (u: UserRecord): void => {
    if (u.status !== 'active') throw new StoreError('CONFLICT', `user ${key} is revoked`);
    if (u.kex_pub !== null && u.kex_pub !== k.kex_pub)
      throw new StoreError(
        'CONFLICT',
        'kex_pub differs from the registered one (unchanged): room keys are sealed to it'
      );
    if (u.nats_pub !== null && u.nats_pub !== k.nats_pub)
      throw new StoreError('CONFLICT', 'nats_pub differs from the registered one (unchanged)');
  };
  const current = await getUser(kv, key);
  if (!current) throw new StoreError('NOT_FOUND', `user ${key} not found`);
  refuse(current);
  // Same keys, already bound: nothing to do (a binding over the same keys is as good as any).
  if (current.bound) return { user: current, changed: false };
  await claimNatsKey(kv, natsKeys, k.nats_pub, key);
  const r = await casUpdate(
    kv,
    key,
    parseUser,
    (u): UserRecord | null => {
      refuse(u);
      if (u.bound) return null;
      return { ...u, kex_pub: k.kex_pub, nats_pub: k.nats_pub, binding: k.binding, bound: true };
    },
    'set user keys'
  );
  return { user: r.value, changed: r.changed };
}

export async function getUser(kv: KV, signPub: string): Promise<UserRecord | null> {
  const entry = await getLive(kv, validKey(signPub), 'get user');
  return entry ? decodeJson(entry, parseUser) : null;
}

/** Who presents `natsPub` to NATS, as the callout sees it. */
export type NatsKeyLookup =
  /** The user whose record names this NATS key (any status: the caller decides). */
  | { kind: 'user'; user: UserRecord }
  /** Not a NATS key but a registered sign_pub: a sign key is never a NATS key. */
  | { kind: 'sign_key'; user: UserRecord }
  | { kind: 'unknown' };

/**
 * Finds a user by its NATS key: the sign-key check and the index read side
 * by side, then the owner's record. A registered sign key is a sign key
 * first, whatever the index says (the store refuses such claims; a record
 * written around it still cannot turn a sign key into a way in). The index
 * row counts only while the owner's record names the key.
 */
export async function userByNatsKey(
  users: KV,
  natsKeys: KV,
  natsPub: string
): Promise<NatsKeyLookup> {
  const key = validKey(natsPub, 'nats_pub');
  const [asSignKey, entry] = await Promise.all([
    getUser(users, key),
    getLive(natsKeys, key, 'find nats key'),
  ]);
  if (asSignKey) return { kind: 'sign_key', user: asSignKey };
  if (entry) {
    const owner = await getUser(users, decodeJson(entry, parseNatsKeyRow).sign_pub);
    if (owner && owner.nats_pub === key) return { kind: 'user', user: owner };
  }
  return { kind: 'unknown' };
}

/** All users, revoked ones included, oldest first. */
export async function listUsers(kv: KV): Promise<UserRecord[]> {
  const users = await readAll(kv, parseUser, 'list users');
  return users.sort(
    (a, b) => a.created_at.localeCompare(b.created_at) || a.sign_pub.localeCompare(b.sign_pub)
  );
}

/**
 * Points every bound user's nats_pub at it in the index (a restore of an
 * archive made before the index existed, or a repair). Returns how many rows
 * were written or confirmed.
 */
export async function rebuildNatsKeyIndex(users: KV, natsKeys: KV): Promise<number> {
  let n = 0;
  for (const u of await listUsers(users)) {
    if (u.nats_pub === null || !u.bound) continue;
    await claimNatsKey(users, natsKeys, u.nats_pub, u.sign_pub);
    n++;
  }
  return n;
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
