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
    `_INBOX_${ME.slice(0, 32)}.>`,
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
  assert.deepEqual(p.pub.allow, ['chat.a', 'chat.b', `sealbus.append.${'e'.repeat(24)}`]);
  assert.deepEqual(p.sub.allow, [
    `_INBOX_${ME.slice(0, 32)}.>`,
    'chat.a',
    'chat.b',
    'chat.c',
    `sealbus.events.${ME.slice(0, 32)}`,
  ]);
});

test('no grant ever lets the server publish for the user: no JetStream API, ack or flow-control subject', () => {
  const roles = ['owner', 'writer', 'reader'] as const;
  const all = roles.flatMap((r, i) => [
    m(String(i).repeat(24), `e.${r}`, r),
    m(String(i + 5).repeat(24), `p.${r}`, r, true),
  ]);
  const p = permissionsFor(ME, all);
  for (const s of [...p.pub.allow, ...p.sub.allow]) {
    assert.ok(!s.startsWith('$'), `${s} reaches a server API`);
    assert.ok(!s.includes('*') && (s.endsWith('.>') ? s.startsWith('_INBOX_') : true), s);
  }
  for (const r of roles)
    assert.ok(!p.pub.allow.includes(`p.${r}`) && !p.sub.allow.includes(`p.${r}`));
});
