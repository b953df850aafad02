import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MemberRecord } from '@sealbus/protocol';
import { NO_PUBLISH, permissionsFor } from './permissions.js';

const ME = 'ab'.repeat(32);
const m = (
  room: string,
  subject: string,
  role: MemberRecord['role'],
  persist = false
): MemberRecord => ({
  room,
  sign_pub: ME,
  role,
  subject,
  persist,
  added_at: '2026-11-23T00:00:00.000Z',
  added_by: ME,
  expires_at: null,
});

test('member of no room: inbox and events only, and never an empty allow list', () => {
  const p = permissionsFor(ME, []);
  assert.deepEqual(p.pub.allow, [NO_PUBLISH]);
  assert.deepEqual(p.sub.allow, [
    `_INBOX_${ME.slice(0, 32)}.append.*`,
    `_INBOX_${ME.slice(0, 32)}.r.>`,
    `sealbus.events.${ME.slice(0, 32)}`,
  ]);
});

test('ephemeral rooms: writers publish and subscribe, readers subscribe; persisted rooms: writers append, nobody touches the subject', () => {
  const p = permissionsFor(ME, [
    m('a'.repeat(24), 'chat.a', 'owner'),
    m('b'.repeat(24), 'chat.b', 'writer'),
    m('c'.repeat(24), 'chat.c', 'reader'),
    m('d'.repeat(24), 'log.d', 'reader', true),
    m('e'.repeat(24), 'log.e', 'writer', true),
  ]);
  assert.deepEqual(p.pub.allow, [
    'chat.a',
    'chat.b',
    `sealbus.append.${'e'.repeat(24)}`,
    `sealbus.reply.${'a'.repeat(24)}.*.*`,
    `sealbus.reply.${'b'.repeat(24)}.*.*`,
  ]);
  assert.deepEqual(p.sub.allow, [
    `_INBOX_${ME.slice(0, 32)}.append.*`,
    `_INBOX_${ME.slice(0, 32)}.r.>`,
    `_INBOX_${ME.slice(0, 32)}.room.${'d'.repeat(24)}`,
    `_INBOX_${ME.slice(0, 32)}.room.${'e'.repeat(24)}`,
    'chat.a',
    'chat.b',
    'chat.c',
    `sealbus.events.${ME.slice(0, 32)}`,
    `sealbus.reply.${'a'.repeat(24)}.${ME.slice(0, 32)}.*`,
    `sealbus.reply.${'b'.repeat(24)}.${ME.slice(0, 32)}.*`,
  ]);
});

test('answers to requests: writers of an ephemeral room publish under the room and read their own there, and no response permission', () => {
  const p = permissionsFor(ME, [
    m('b'.repeat(24), 'chat.b', 'writer'),
    m('c'.repeat(24), 'chat.c', 'reader'),
    m('e'.repeat(24), 'log.e', 'writer', true),
  ]);
  assert.deepEqual(
    p.pub.allow.filter((s) => s.startsWith('sealbus.reply.')),
    [`sealbus.reply.${'b'.repeat(24)}.*.*`]
  );
  assert.deepEqual(
    p.sub.allow.filter((s) => s.startsWith('sealbus.reply.')),
    [`sealbus.reply.${'b'.repeat(24)}.${ME.slice(0, 32)}.*`]
  );
  // No room wildcard: answers from a room the user is not a writer of never reach it.
  assert.equal(serverAdmits(p.sub.allow, `sealbus.reply.*.${ME.slice(0, 32)}.*`), false);
  assert.equal(
    serverAdmits(p.sub.allow, `sealbus.reply.${'c'.repeat(24)}.${ME.slice(0, 32)}.*`),
    false
  );
  assert.equal('resp' in p, false);
});

test('no grant ever lets the server publish for the user: no JetStream API, ack or flow-control subject', () => {
  const roles = ['owner', 'writer', 'reader'] as const;
  const all = roles.flatMap((r, i) => [
    m(String(i).repeat(24), `e.${r}`, r),
    m(String(i + 5).repeat(24), `p.${r}`, r, true),
  ]);
  const p = permissionsFor(ME, all);
  // Wildcards only under the user's own inbox, and in the answer namespace
  // (no stream captures it: no room subject starts with `sealbus`): its own
  // answers to read, answers in the ephemeral rooms it writes to publish.
  const answerGrants = new Set(
    roles
      .filter((r) => r !== 'reader')
      .flatMap((_, i) => [
        `sealbus.reply.${String(i).repeat(24)}.*.*`,
        `sealbus.reply.${String(i).repeat(24)}.${ME.slice(0, 32)}.*`,
      ])
  );
  for (const s of [...p.pub.allow, ...p.sub.allow]) {
    assert.ok(!s.startsWith('$'), `${s} reaches a server API`);
    assert.ok(
      !s.includes('*') && !s.includes('>')
        ? true
        : s.startsWith(`_INBOX_${ME.slice(0, 32)}.`) || answerGrants.has(s),
      s
    );
  }
  for (const api of ['$JS.API.STREAM.DELETE.X', '$JS.ACK.X.Y.1.1.1.1.1', 'sealbus.append.x'])
    assert.equal(serverAdmits(p.pub.allow, api), false, api);
  for (const r of roles)
    assert.ok(!p.pub.allow.includes(`p.${r}`) && !p.sub.allow.includes(`p.${r}`));
});

/**
 * nats-server's subscribe check: a subscription subject, wildcards taken as
 * literal tokens, must match an allowed pattern.
 */
function serverAdmits(grants: readonly string[], subscription: string): boolean {
  const s = subscription.split('.');
  return grants.some((g) => {
    const p = g.split('.');
    if (p.at(-1) === '>')
      return s.length >= p.length && p.slice(0, -1).every((t, i) => t === '*' || t === s[i]);
    return p.length === s.length && p.every((t, i) => t === '*' || t === s[i]);
  });
}

test('a persisted room is read only while a membership grants its delivery subject', () => {
  const room = 'f'.repeat(24);
  const inbox = `_INBOX_${ME.slice(0, 32)}`;
  const deliver = `${inbox}.room.${room}`;
  assert.ok(
    serverAdmits(permissionsFor(ME, [m(room, 'log.f', 'reader', true)]).sub.allow, deliver)
  );
  const none = permissionsFor(ME, [m('a'.repeat(24), 'log.a', 'owner', true)]).sub.allow;
  // No subscription the remaining grants admit receives that room's deliveries.
  for (const sub of [
    deliver,
    `${inbox}.>`,
    `${inbox}.*.${room}`,
    `${inbox}.room.*`,
    `${inbox}.room.>`,
    `${inbox}.*.*`,
    `${inbox}.*`,
    '>',
  ])
    assert.ok(!serverAdmits(none, sub), `${sub} is admitted`);
  // What the SDK needs still is.
  for (const sub of [`${inbox}.r.abc`, `${inbox}.r.abc.*`, `${inbox}.append.*`])
    assert.ok(serverAdmits(none, sub), `${sub} is refused`);
});
