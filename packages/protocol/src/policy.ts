/**
 * The rules, in one place: who is active, what each role may do, when a
 * membership is in force, how long a data-plane credential may live. Pure
 * functions over records and a clock, shared by the HTTP control plane, the
 * CLI, the store and the auth callout, so no two of them can disagree.
 */
import type { MemberRecord, MemberRole } from './rooms.js';
import type { Role, UserRecord } from './users.js';

type UserFacts = Pick<UserRecord, 'status' | 'expires_at'>;
type MemberFacts = Pick<MemberRecord, 'role' | 'expires_at'>;

/** True while a grant with this `expires_at` is in force at `now` (ms). */
export function grantInForce(expiresAt: string | null | undefined, now: number): boolean {
  return expiresAt == null || Date.parse(expiresAt) > now;
}

/**
 * The same at whole-second resolution, for credentials whose times are whole
 * seconds (JWT `exp`, rounded down): a grant ending within the current second
 * counts as ended, since a credential for it would be born expired.
 */
export function grantInForceForCredential(
  expiresAt: string | null | undefined,
  now: number
): boolean {
  if (!grantInForce(expiresAt, now)) return false;
  return expiresAt == null || Math.floor(Date.parse(expiresAt) / 1000) > Math.floor(now / 1000);
}

/** An identity may act at all: registered, not revoked, not expired. */
export function userIsActive(u: UserFacts | null | undefined, now: number): boolean {
  return !!u && u.status === 'active' && grantInForce(u.expires_at, now);
}

/** Passes an admin check: an active user whose role is admin (a guest never is). */
export function userIsActiveAdmin(
  u: (UserFacts & Pick<UserRecord, 'role'>) | null | undefined,
  now: number
): boolean {
  return userIsActive(u, now) && u!.role === 'admin';
}

/** Guests cannot create rooms; every other active role can. */
export function userMayCreateRooms(u: UserFacts & Pick<UserRecord, 'role'>, now: number): boolean {
  return userIsActive(u, now) && u.role !== 'guest';
}

/** The roles a user of this role may be given in a room (a guest only ever reads). */
export function roomRolesAllowedFor(role: Role): readonly MemberRole[] {
  return role === 'guest' ? ['reader'] : ['owner', 'writer', 'reader'];
}

/**
 * The role a membership really confers: a guest is a reader wherever it
 * is, whatever a record says.
 */
export function effectiveRoomRole(userRole: Role, memberRole: MemberRole): MemberRole {
  return userRole === 'guest' ? 'reader' : memberRole;
}

/** A membership that grants anything now: an active user and an unexpired membership. */
export function membershipInForce(
  u: UserFacts | null | undefined,
  m: MemberFacts | null | undefined,
  now: number
): boolean {
  return userIsActive(u, now) && !!m && grantInForce(m.expires_at, now);
}

/** May publish into the room now: a membership in force whose effective role writes. */
export function memberCanWrite(
  u: (UserFacts & Pick<UserRecord, 'role'>) | null | undefined,
  m: MemberFacts | null | undefined,
  now: number
): boolean {
  if (!membershipInForce(u, m, now)) return false;
  const role = effectiveRoomRole(u!.role, m!.role);
  return role === 'owner' || role === 'writer';
}

/** May read the room now (every role in force reads). */
export function memberCanRead(
  u: UserFacts | null | undefined,
  m: MemberFacts | null | undefined,
  now: number
): boolean {
  return membershipInForce(u, m, now);
}

/** May change the room (invite, remove, rekey, delete): the owner, in force, not a guest. */
export function memberIsOwner(
  u: (UserFacts & Pick<UserRecord, 'role'>) | null | undefined,
  m: MemberFacts | null | undefined,
  now: number
): boolean {
  return membershipInForce(u, m, now) && effectiveRoomRole(u!.role, m!.role) === 'owner';
}

/**
 * When a data-plane credential (user JWT) issued now must expire, in whole
 * seconds: never later than the ttl, the user's own grant or any of the
 * memberships it carries.
 */
export function credentialExpiry(
  now: number,
  ttlSec: number,
  grants: ReadonlyArray<string | null | undefined>
): number {
  let exp = Math.floor(now / 1000) + ttlSec;
  for (const at of grants) if (at) exp = Math.min(exp, Math.floor(Date.parse(at) / 1000));
  return exp;
}
