import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ValidationError } from './errors.js';
import { parseKeyHex, parseSignPubHex } from './keys.js';
import { grantActive, newUserSchema, parseOrThrow, userActive, userRecordSchema } from './users.js';

const KEY = 'ab'.repeat(32);

test('sign_pub is normalised to lowercase', () => {
  assert.equal(parseSignPubHex(KEY.toUpperCase()), KEY);
});

test('bad keys are ValidationErrors naming the field', () => {
  const table: Array<[string, unknown]> = [
    ['empty', ''],
    ['63 chars', KEY.slice(1)],
    ['65 chars', KEY + 'a'],
    ['128 chars (a 64-byte key)', KEY + KEY],
    ['non-hex', 'g' + KEY.slice(1)],
    ['spaces', ' ' + KEY.slice(1)],
    ['number', 42],
    ['null', null],
  ];
  for (const [name, input] of table) {
    assert.throws(
      () => parseKeyHex(input, 'kex_pub'),
      (e: unknown) => e instanceof ValidationError && e.field === 'kex_pub' && e.code === 'INVALID',
      name
    );
  }
});

test('new user schema validates role and handle and normalises keys', () => {
  const ok = parseOrThrow(newUserSchema, {
    sign_pub: KEY.toUpperCase(),
    handle: 'alice',
    role: 'admin',
  });
  assert.equal(ok.sign_pub, KEY);
  const bad: Array<[unknown, string]> = [
    [{ sign_pub: KEY, handle: 'alice', role: 'root' }, 'role'],
    [{ sign_pub: KEY, handle: '', role: 'member' }, 'handle'],
    [{ sign_pub: KEY, handle: 'a b', role: 'member' }, 'handle'],
    [{ sign_pub: KEY, handle: 'x'.repeat(65), role: 'member' }, 'handle'],
    [{ sign_pub: 'zz', handle: 'alice', role: 'member' }, 'sign_pub'],
    [{ sign_pub: KEY, kex_pub: 'abc', handle: 'alice', role: 'member' }, 'kex_pub'],
    [{ handle: 'alice', role: 'member' }, 'sign_pub'],
  ];
  for (const [input, field] of bad) {
    assert.throws(
      () => parseOrThrow(newUserSchema, input),
      (e: unknown) => e instanceof ValidationError && e.field === field,
      field
    );
  }
});

test('grants: active until expires_at, and revoked never active', () => {
  const now = Date.parse('2026-11-24T00:00:00Z');
  assert.equal(grantActive(null, now), true);
  assert.equal(grantActive('2026-11-24T00:00:01Z', now), true);
  assert.equal(grantActive('2026-11-24T00:00:00Z', now), false);
  const u = { status: 'active' as const, expires_at: '2026-11-25T00:00:00Z' };
  assert.equal(userActive(u, now), true);
  assert.equal(userActive({ ...u, status: 'revoked' }, now), false);
  assert.equal(userActive(u, Date.parse('2026-11-26T00:00:00Z')), false);
});

test('user record schema round-trips a stored row', () => {
  const row = {
    sign_pub: KEY,
    kex_pub: null,
    handle: 'bob',
    role: 'member',
    status: 'revoked',
    created_at: '2026-11-23T10:00:00.000Z',
    revoked_at: '2026-11-23T11:00:00.000Z',
  };
  const unbound = { nats_pub: null, binding: null, bound: false };
  // Rows written before grants could expire read as "never expires", and
  // rows written before key bindings as unbound.
  assert.deepEqual(parseOrThrow(userRecordSchema, row), { ...row, ...unbound, expires_at: null });
  const expiring = { ...row, ...unbound, expires_at: '2027-01-01T00:00:00.000Z' };
  assert.deepEqual(parseOrThrow(userRecordSchema, expiring), expiring);
  const bound = {
    ...expiring,
    kex_pub: KEY,
    nats_pub: KEY,
    binding: 'AB'.repeat(64),
    bound: true,
  };
  assert.deepEqual(parseOrThrow(userRecordSchema, bound), { ...bound, binding: 'ab'.repeat(64) });
  // `bound` must agree with the keys it claims.
  assert.throws(() => parseOrThrow(userRecordSchema, { ...bound, binding: null }), ValidationError);
  assert.throws(() => parseOrThrow(userRecordSchema, { ...bound, bound: false }), ValidationError);
  assert.throws(
    () => parseOrThrow(userRecordSchema, { ...bound, binding: 'ab'.repeat(63) }),
    ValidationError
  );
  assert.throws(
    () => parseOrThrow(userRecordSchema, { ...row, status: 'deleted' }),
    ValidationError
  );
  assert.throws(() => parseOrThrow(userRecordSchema, { ...row, role: 'owner' }), ValidationError);
});

test('new user: a token, or sign_pub with optional keys; never both, a binding only with its keys', () => {
  const token = 'sbid1.' + 'A'.repeat(214);
  const base = { handle: 'h', role: 'member' as const };
  assert.equal(parseOrThrow(newUserSchema, { ...base, public: token }).public, token);
  assert.equal(parseOrThrow(newUserSchema, { ...base, sign_pub: KEY }).sign_pub, KEY);
  const bad: Array<[string, Record<string, unknown>]> = [
    ['sign_pub', {}],
    ['sign_pub', { public: token, sign_pub: KEY }],
    ['binding', { sign_pub: KEY, kex_pub: KEY, nats_pub: KEY }],
    ['nats_pub', { sign_pub: KEY, kex_pub: KEY, binding: 'ab'.repeat(64) }],
    ['kex_pub', { sign_pub: KEY, nats_pub: KEY, binding: 'ab'.repeat(64) }],
  ];
  for (const [field, extra] of bad) {
    assert.throws(
      () => parseOrThrow(newUserSchema, { ...base, ...extra }),
      (e: unknown) => e instanceof ValidationError && e.field === field,
      JSON.stringify(extra)
    );
  }
});
