import {
  credentialExpiry,
  effectiveRoomRole,
  grantInForceForCredential,
  type MemberRecord,
  type Role,
  type UserRecord,
} from '@sealbus/protocol';
import type { NatsKeyLookup } from '@sealbus/store';
import type { CalloutReason } from '../metrics.js';
import { permissionsJson } from './jwt.js';
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

/** What a user JWT carries from a decision: its permissions as JSON, its expiry, the room count. */
export interface DecidedGrants {
  permissionsJson: string;
  exp: number;
  rooms: number;
}

interface Remembered {
  signPub: string;
  role: Role;
  /** Decided at (ms): a clock stepped back before it decides again. */
  from: number;
  /** Until then (ms) the memberships in force are the ones decided (the first expiry among them). */
  until: number;
  permissionsJson: string;
  rooms: number;
  /** The earliest expiry among the memberships in force, if any (caps `exp`). */
  firstExpiry: string | null;
}

/**
 * {@link decideGrants} remembered per membership list: the member cache
 * answers a user's memberships with the same (frozen) array until one of
 * them changes, so a reconnect, or a reconnect storm, builds the
 * permissions of a user in 1,000 rooms once, not once per connection. A
 * remembered answer counts only for the same user and role, from the time
 * it was decided until the first membership in force would expire (then
 * the set changes: it is decided again). Lists that are not the cache's (scans) are decided every
 * time; the map holds them weakly.
 */
export class GrantsMemo {
  readonly #memo = new WeakMap<readonly MemberRecord[], Remembered>();

  decide(
    user: UserRecord,
    memberships: readonly MemberRecord[],
    now: number,
    ttlSec: number
  ): DecidedGrants {
    let r = this.#memo.get(memberships);
    if (
      !r ||
      r.signPub !== user.sign_pub ||
      r.role !== user.role ||
      now < r.from ||
      now >= r.until
    ) {
      const g = decideGrants(user, memberships, now, ttlSec);
      let until = Infinity;
      let firstExpiry: string | null = null;
      for (const m of memberships) {
        if (!m.expires_at || !grantInForceForCredential(m.expires_at, now)) continue;
        // grantInForceForCredential compares whole seconds: the membership
        // stops counting at the start of its expiry's second.
        const end = Math.floor(Date.parse(m.expires_at) / 1000) * 1000;
        if (end < until) {
          until = end;
          firstExpiry = m.expires_at;
        }
      }
      r = {
        signPub: user.sign_pub,
        role: user.role,
        from: now,
        until,
        permissionsJson: permissionsJson(g.perms),
        rooms: g.rooms,
        firstExpiry,
      };
      this.#memo.set(memberships, r);
    }
    return {
      permissionsJson: r.permissionsJson,
      exp: credentialExpiry(now, ttlSec, [user.expires_at, r.firstExpiry]),
      rooms: r.rooms,
    };
  }
}
