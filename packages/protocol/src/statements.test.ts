import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  StatementError,
  canonicalStatement,
  checkTransition,
  inferChange,
  nextStatement,
  parseStatement,
  type RoomStatement,
} from './statements.js';

const A = 'a'.repeat(64);
const B = 'b'.repeat(64);
const C = 'c'.repeat(64);
const K1 = '1'.repeat(64);
const K2 = '2'.repeat(64);
const base = {
  room: '0123456789abcdef01234567',
  subject: 'team.chat',
  policy: { encrypt: true, persist: false, sign: true },
  owner: B,
  created: new Date('2026-12-02T12:00:00Z'),
};
const first = nextStatement(null, {
  ...base,
  epoch: 0,
  key_commitment: K1,
  members: [[B, 'owner']],
});
const H = '9'.repeat(64);
const after = (members: Array<[string, 'owner' | 'writer' | 'reader']>, epoch = 0, key = K1) =>
  nextStatement({ statement: first, hash: H }, { ...base, epoch, key_commitment: key, members });

test('canonical form: keys sorted, no spaces, members sorted; anything else refused', () => {
  const s = after([
    [C, 'writer'],
    [B, 'owner'],
    [A, 'reader'],
  ]);
  assert.deepEqual(
    s.members.map(([k]) => k),
    [A, B, C]
  );
  const text = canonicalStatement(s);
  assert.ok(text.startsWith('{"created":"2026-12-02T12:00:00.000Z","epoch":0,"key_commitment":'));
  assert.ok(!/\s/.test(text));
  assert.deepEqual(parseStatement(text), s);
  const refused = (t: string, why: RegExp) =>
    assert.throws(
      () => parseStatement(t),
      (e: unknown) => e instanceof StatementError && why.test(e.message),
      t
    );
  refused(text.replace('{"created"', '{ "created"'), /canonical/);
  refused(JSON.stringify({ ...s, extra: 1 }), /Unrecognized|extra/i);
  const swapped = { ...s, members: [s.members[1], s.members[0], s.members[2]] } as RoomStatement;
  refused(JSON.stringify(JSON.parse(canonicalStatement(swapped))), /sorted/);
  refused(canonicalStatement({ ...s, owner: A }), /owner/);
  refused(canonicalStatement({ ...s, key_commitment: null }), /key_commitment/);
  refused(canonicalStatement({ ...s, prev: null }), /prev/);
  refused(
    canonicalStatement({
      ...s,
      members: [
        [A, 'writer'],
        [A, 'writer'],
        [B, 'owner'],
      ],
    }),
    /sorted|once/
  );
  refused(canonicalStatement({ ...s, subject: 'has space' }), /subject/);
  refused('not json', /JSON/);
});

test('transitions: each change is exactly what it says', () => {
  const prev = { statement: first, hash: H };
  checkTransition(null, first, { kind: 'create' });
  const invite = after([
    [B, 'owner'],
    [A, 'writer'],
  ]);
  checkTransition(prev, invite, { kind: 'invite', sign_pub: A, role: 'writer' });
  assert.deepEqual(inferChange(first, invite), { kind: 'invite', sign_pub: A, role: 'writer' });
  const bad = (next: RoomStatement, change: Parameters<typeof checkTransition>[2], why: RegExp) =>
    assert.throws(() => checkTransition(prev, next, change), why);
  bad(invite, { kind: 'invite', sign_pub: A, role: 'reader' }, /does not add/);
  bad(invite, { kind: 'invite', sign_pub: C, role: 'writer' }, /does not add/);
  bad(
    after([
      [B, 'owner'],
      [A, 'writer'],
      [C, 'writer'],
    ]),
    { kind: 'invite', sign_pub: A, role: 'writer' },
    /exactly one/
  );
  bad({ ...invite, seq: 2 }, { kind: 'invite', sign_pub: A, role: 'writer' }, /seq/);
  bad({ ...invite, prev: K2 }, { kind: 'invite', sign_pub: A, role: 'writer' }, /prev/);
  bad(
    { ...invite, subject: 'other' },
    { kind: 'invite', sign_pub: A, role: 'writer' },
    /never change/
  );
  bad(
    { ...invite, policy: { ...base.policy, sign: false } },
    { kind: 'invite', sign_pub: A, role: 'writer' },
    /policy/
  );
  bad({ ...invite, epoch: 1 }, { kind: 'invite', sign_pub: A, role: 'writer' }, /only a rekey/);
  bad(
    { ...invite, key_commitment: K2 },
    { kind: 'invite', sign_pub: A, role: 'writer' },
    /only a rekey/
  );
  const rekey = after([[B, 'owner']], 1, K2);
  checkTransition(prev, rekey, { kind: 'rekey' });
  assert.deepEqual(inferChange(first, rekey), { kind: 'rekey' });
  bad(after([[B, 'owner']], 2, K2), { kind: 'rekey' }, /epoch to 1/);
  bad(after([[B, 'owner']], 1, K1), { kind: 'rekey' }, /new key/);
  bad(
    after(
      [
        [B, 'owner'],
        [A, 'writer'],
      ],
      1,
      K2
    ),
    { kind: 'rekey' },
    /cannot add/
  );
  bad(after([[B, 'owner']]), { kind: 'remove', sign_pub: B }, /owner cannot/);
  assert.throws(
    () => checkTransition(null, invite, { kind: 'invite', sign_pub: A, role: 'writer' }),
    /seq 0/
  );
});
