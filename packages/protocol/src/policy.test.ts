import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  credentialExpiry,
  effectiveRoomRole,
  grantInForce,
  grantInForceForCredential,
  memberCanRead,
  memberCanWrite,
  memberIsOwner,
  membershipInForce,
  roomRolesAllowedFor,
  userIsActive,
  userIsActiveAdmin,
  userMayCreateRooms,
} from './policy.js';
import { MEMBER_ROLES } from './rooms.js';
import { ROLES, USER_STATUSES } from './users.js';

const NOW = Date.parse('2027-01-01T00:00:10.500Z');
const at = (ms: number) => new Date(NOW + ms).toISOString();
/** Grant ends: none, long past, just past, within this second, next second, far future. */
const ENDS = {
  never: null,
  past: at(-60_000),
  justPast: at(-1),
  thisSecond: at(+400), // ends at 10.900: after now, but within the current second
  nextSecond: at(+1_600),
  future: at(+3_600_000),
} as const;
const inForce: Record<keyof typeof ENDS, boolean> = {
  never: true,
  past: false,
  justPast: false,
  thisSecond: true,
  nextSecond: true,
  future: true,
};

test('grantInForce and its credential (whole-second) variant, every kind of end', () => {
  for (const [name, end] of Object.entries(ENDS) as Array<[keyof typeof ENDS, string | null]>) {
    assert.equal(grantInForce(end, NOW), inForce[name], name);
    // A credential cannot outlive the grant, and JWT times are whole seconds:
    // a grant ending within the current second is over for credentials.
    assert.equal(grantInForceForCredential(end, NOW), inForce[name] && name !== 'thisSecond', name);
  }
  assert.equal(grantInForce(undefined, NOW), true);
});

test('userIsActive / userIsActiveAdmin / userMayCreateRooms over every status, role and expiry', () => {
  let cases = 0;
  for (const status of USER_STATUSES)
    for (const role of ROLES)
      for (const [name, expires_at] of Object.entries(ENDS) as Array<
        [keyof typeof ENDS, string | null]
      >) {
        const u = { status, role, expires_at };
        const active = status === 'active' && inForce[name];
        assert.equal(userIsActive(u, NOW), active, JSON.stringify(u));
        assert.equal(userIsActiveAdmin(u, NOW), active && role === 'admin', JSON.stringify(u));
        assert.equal(userMayCreateRooms(u, NOW), active && role !== 'guest', JSON.stringify(u));
        cases++;
      }
  assert.equal(cases, USER_STATUSES.length * ROLES.length * Object.keys(ENDS).length);
  assert.equal(userIsActive(null, NOW), false);
  assert.equal(userIsActiveAdmin(undefined, NOW), false);
});

test('room rights over every user status/role/expiry × membership role/expiry', () => {
  let cases = 0;
  for (const status of USER_STATUSES)
    for (const role of ROLES)
      for (const [uName, uEnd] of Object.entries(ENDS) as Array<[keyof typeof ENDS, string | null]>)
        for (const mRole of MEMBER_ROLES)
          for (const [mName, mEnd] of Object.entries(ENDS) as Array<
            [keyof typeof ENDS, string | null]
          >) {
            const u = { status, role, expires_at: uEnd };
            const m = { role: mRole, expires_at: mEnd };
            const live = status === 'active' && inForce[uName] && inForce[mName];
            const eff = role === 'guest' ? 'reader' : mRole;
            const what = JSON.stringify({ u, m });
            assert.equal(membershipInForce(u, m, NOW), live, what);
            assert.equal(memberCanRead(u, m, NOW), live, what);
            assert.equal(memberCanWrite(u, m, NOW), live && eff !== 'reader', what);
            assert.equal(memberIsOwner(u, m, NOW), live && eff === 'owner', what);
            assert.equal(effectiveRoomRole(role, mRole), eff, what);
            cases++;
          }
  assert.ok(cases > 500, `${cases} cases`);
  for (const f of [membershipInForce, memberCanRead, memberCanWrite, memberIsOwner]) {
    assert.equal(f(null, { role: 'owner', expires_at: null }, NOW), false);
    assert.equal(f({ status: 'active', role: 'admin', expires_at: null }, null, NOW), false);
  }
});

test('a guest may only ever be given the reader role', () => {
  assert.deepEqual(roomRolesAllowedFor('guest'), ['reader']);
  for (const r of ['admin', 'member'] as const)
    assert.deepEqual([...roomRolesAllowedFor(r)].sort(), ['owner', 'reader', 'writer']);
});

test('credentialExpiry: never past the ttl or any grant, whole seconds, rounded down', () => {
  const nowSec = Math.floor(NOW / 1000);
  assert.equal(credentialExpiry(NOW, 3600, []), nowSec + 3600);
  assert.equal(credentialExpiry(NOW, 3600, [null, undefined]), nowSec + 3600);
  assert.equal(credentialExpiry(NOW, 3600, [ENDS.nextSecond]), nowSec + 2);
  assert.equal(credentialExpiry(NOW, 3600, [ENDS.future, ENDS.nextSecond]), nowSec + 2);
  assert.equal(credentialExpiry(NOW, 5, [ENDS.future]), nowSec + 5);
});
