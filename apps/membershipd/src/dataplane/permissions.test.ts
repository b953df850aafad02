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

test('writers publish and subscribe, readers only subscribe; persisted rooms add exactly their durable calls', () => {
  const p = permissionsFor(ME, [
    m('a'.repeat(24), 'chat.a', 'owner'),
    m('b'.repeat(24), 'chat.b', 'writer'),
    m('c'.repeat(24), 'chat.c', 'reader'),
    m('d'.repeat(24), 'log.d', 'reader', true),
  ]);
  const durable = `m_${ME.slice(0, 32)}`;
  const stream = `ROOM_${'d'.repeat(24)}`;
  assert.deepEqual(p.pub.allow, [
    `$JS.ACK.${stream}.${durable}.>`,
    `$JS.API.CONSUMER.INFO.${stream}.${durable}`,
    `$JS.API.CONSUMER.MSG.NEXT.${stream}.${durable}`,
    'chat.a',
    'chat.b',
  ]);
  assert.ok(p.sub.allow.includes('chat.c') && p.sub.allow.includes('log.d'));
  assert.ok(
    !p.pub.allow.includes('chat.c') && !p.pub.allow.includes('log.d'),
    'readers cannot publish'
  );
  assert.ok(
    !p.pub.allow.some((s) => s.includes('CREATE') || s.includes('DELETE') || s.includes('PURGE'))
  );
});
