import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ROLES, USER_STATUSES, type MemberRecord, type UserRecord } from '@sealbus/protocol';
import { GrantsMemo, decideGrants, decideIdentity } from './decision.js';
import { permissionsJson } from './jwt.js';

const NOW = Date.parse('2027-01-01T00:00:10.500Z');
const at = (ms: number) => new Date(NOW + ms).toISOString();
const ME = 'ab'.repeat(32);
const user = (o: Partial<UserRecord> = {}): UserRecord => ({
  sign_pub: ME,
  kex_pub: 'cd'.repeat(32),
  nats_pub: 'ef'.repeat(32),
  binding: '01'.repeat(64),
  bound: true,
  handle: 'u',
  role: 'member',
  status: 'active',
  created_at: at(-86_400_000),
  revoked_at: null,
  expires_at: null,
  ...o,
});
const member = (room: string, role: MemberRecord['role'], o: Partial<MemberRecord> = {}) =>
  ({
    room,
    sign_pub: ME,
    role,
    subject: `s.${room}`,
    persist: false,
    added_at: at(-1000),
    added_by: ME,
    expires_at: null,
    ...o,
  }) as MemberRecord;

test('decideIdentity: every lookup outcome, binding, status and expiry', () => {
  const holds = () => true;
  assert.equal(decideIdentity({ kind: 'unknown' }, holds, NOW).allow, false);
  const sk = decideIdentity({ kind: 'sign_key', user: user() }, holds, NOW);
  assert.deepEqual([sk.allow, !sk.allow && sk.code], [false, 'sign_key']);
  const unbound = decideIdentity({ kind: 'user', user: user() }, () => false, NOW);
  assert.deepEqual([unbound.allow, !unbound.allow && unbound.code], [false, 'unbound']);
  const ends = [null, at(-1), at(+400), at(+1600)];
  for (const status of USER_STATUSES)
    for (const role of ROLES)
      for (const expires_at of ends) {
        const d = decideIdentity(
          { kind: 'user', user: user({ status, role, expires_at }) },
          holds,
          NOW
        );
        // A grant ending within the current second is over for a credential.
        const live = status === 'active' && (expires_at === null || expires_at === at(+1600));
        assert.equal(d.allow, live, JSON.stringify({ status, role, expires_at }));
        if (!d.allow) assert.equal(d.code, status !== 'active' ? 'revoked' : 'expired');
      }
});

test('decideGrants: only memberships in force, guests read, exp bounded by every grant', () => {
  const ms = [
    member('a'.repeat(24), 'owner'),
    member('b'.repeat(24), 'writer', { expires_at: at(-5) }),
    member('c'.repeat(24), 'writer', { expires_at: at(+400) }),
    member('d'.repeat(24), 'writer', { expires_at: at(+30_000) }),
    member('e'.repeat(24), 'reader'),
  ];
  const g = decideGrants(user(), ms, NOW, 600);
  assert.equal(g.rooms, 3, 'expired and ending-this-second memberships grant nothing');
  assert.deepEqual(g.perms.pub.allow, [
    's.' + 'a'.repeat(24),
    's.' + 'd'.repeat(24),
    `sealbus.reply.${'a'.repeat(24)}.*.*`,
    `sealbus.reply.${'d'.repeat(24)}.*.*`,
  ]);
  assert.equal(g.exp, Math.floor((NOW + 30_000) / 1000), 'exp never outlives a membership');
  const guest = decideGrants(user({ role: 'guest' }), ms, NOW, 600);
  assert.equal(guest.perms.pub.allow.length, 1, 'a guest publishes nowhere');
  assert.equal(guest.perms.pub.allow[0], '_SEALBUS_NO_PUBLISH');
  const shortUser = decideGrants(user({ expires_at: at(+5_000) }), [], NOW, 600);
  assert.equal(shortUser.exp, Math.floor((NOW + 5_000) / 1000));
  assert.equal(decideGrants(user(), [], NOW, 600).exp, Math.floor(NOW / 1000) + 600);
});

test('GrantsMemo: the same answer as decideGrants for one list asked over time, by another role, by another user', () => {
  // One frozen list, as the member cache hands it out while nothing changes.
  const list = Object.freeze([
    member('r1', 'writer'),
    member('r2', 'reader', { expires_at: at(+1_600) }),
    member('r3', 'owner', { expires_at: at(+5_200), persist: true }),
    member('r4', 'writer', { expires_at: at(-10) }),
  ]);
  const memo = new GrantsMemo();
  const fresh = (u: UserRecord, now: number) => {
    const g = decideGrants(u, list, now, 3600);
    return { permissionsJson: permissionsJson(g.perms), exp: g.exp, rooms: g.rooms };
  };
  let checked = 0;
  const users = [
    user(),
    user({ role: 'guest' }),
    user({ sign_pub: 'cd'.repeat(32) }),
    user({ expires_at: at(+3_000) }),
  ];
  // Past r2's and r3's expiry, then the clock stepped back, one user after
  // another and then interleaved: a remembered answer must never outlive
  // (or predate) the memberships it was built from.
  const times = [...Array.from({ length: 71 }, (_, i) => i * 100), 0, 1_500, 1_700];
  for (const u of users)
    for (const ms of times) {
      assert.deepEqual(memo.decide(u, list, NOW + ms, 3600), fresh(u, NOW + ms), `${ms} ms`);
      checked++;
    }
  for (const ms of times)
    for (const u of users) {
      assert.deepEqual(memo.decide(u, list, NOW + ms, 3600), fresh(u, NOW + ms), `${ms} ms`);
      checked++;
    }
  assert.equal(checked, 592);
  // The rooms in force really change along the way (the loop saw 2, 1 and 0 expiring).
  assert.equal(memo.decide(user(), list, NOW, 3600).rooms, 3);
  assert.equal(memo.decide(user(), list, NOW + 2_000, 3600).rooms, 2);
  assert.equal(memo.decide(user(), list, NOW + 6_000, 3600).rooms, 1);
});
