import {
  credentialExpiry,
  effectiveRoomRole,
  grantInForceForCredential,
  type MemberRecord,
  type UserRecord,
} from '@sealbus/protocol';
import type { NatsKeyLookup } from '@sealbus/store';
import type { CalloutReason } from '../metrics.js';
import { permissionsFor, type SubjectPermissions } from './permissions.js';

/** Why a connection was refused, as the server logs it and as metrics count it. */
export interface Denial {
  allow: false;
  code: CalloutReason;
  reason: string;
}

/**
 * Step 1 of a callout decision, pure: who the proven NATS key belongs to,
 * and whether that identity may connect at all. `bindingHolds` is the
 * result of verifying the record's key binding.
 */
export function decideIdentity(
  found: NatsKeyLookup,
  bindingHolds: (u: UserRecord) => boolean,
  now: number
): { allow: true; user: UserRecord } | Denial {
  if (found.kind === 'sign_key')
    return {
      allow: false,
      code: 'sign_key',
      reason: 'a sign key is never a NATS key: connect with the derived NATS key',
    };
  if (found.kind === 'unknown') return { allow: false, code: 'unknown_key', reason: 'unknown key' };
  const user = found.user;
  if (!bindingHolds(user))
    return {
      allow: false,
      code: 'unbound',
      reason: 'the key binding of this NATS key does not verify',
    };
  if (user.status !== 'active') return { allow: false, code: 'revoked', reason: 'key revoked' };
  // The credential's clock (whole seconds): a grant ending within this
  // second is over, since a JWT for it would be born expired (nats-server
  // 2.10 accepts such a JWT on a reconnect and then never expires it).
  if (!grantInForceForCredential(user.expires_at, now))
    return { allow: false, code: 'expired', reason: `grant expired at ${user.expires_at}` };
  return { allow: true, user };
}

/**
 * Step 2, pure: what an admitted identity gets. Only memberships in force
 * count, a guest reads wherever it is, and the credential expires no later
 * than the ttl, the user's grant or any membership it carries.
 */
export function decideGrants(
  user: UserRecord,
  memberships: readonly MemberRecord[],
  now: number,
  ttlSec: number
): { perms: SubjectPermissions; exp: number; rooms: number } {
  const live = memberships
    .filter((m) => grantInForceForCredential(m.expires_at, now))
    .map((m) => ({ ...m, role: effectiveRoomRole(user.role, m.role) }));
  return {
    perms: permissionsFor(user.sign_pub, live),
    exp: credentialExpiry(now, ttlSec, [user.expires_at, ...live.map((m) => m.expires_at)]),
    rooms: live.length,
  };
}
