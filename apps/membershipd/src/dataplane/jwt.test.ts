// The callout's synchronous JWT encoder against nats-jwt, the library it
// replaces on the hot path: for the same claims in the same second the two
// produce the same bytes (the signature too: Ed25519 is deterministic), and
// nats-jwt decodes and verifies what it makes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createAccount, createServer, createUser } from 'nkeys.js';
import { decode, encodeAuthorizationResponse, encodeUser } from 'nats-jwt';
import { fastIssuer } from './fastkeys.js';
import { encodeAuthorizationResponseJwt, encodeUserJwt, permissionsJson } from './jwt.js';
import { permissionsFor } from './permissions.js';

/** Runs `f` with Date.now() fixed at `at` (nats-jwt stamps `iat` from it). */
async function at<T>(now: number, f: () => Promise<T>): Promise<T> {
  const real = Date.now;
  Date.now = () => now;
  try {
    return await f();
  } finally {
    Date.now = real;
  }
}

const hex = (n: number) => n.toString(16).padStart(64, '0');

test('user JWT: byte for byte what nats-jwt encodeUser makes, from 0 to 1,000 rooms', async () => {
  const issuer = createAccount();
  const fast = fastIssuer(issuer);
  const now = 1_780_000_000_123;
  for (const rooms of [0, 1, 7, 1000]) {
    const perms = permissionsFor(
      hex(1),
      Array.from({ length: rooms }, (_, i) => ({
        room: hex(1000 + i).slice(-24),
        sign_pub: hex(1),
        role: i % 3 === 0 ? ('writer' as const) : ('reader' as const),
        subject: `team.room${i}.chat`,
        persist: i % 5 === 0,
        expires_at: null,
        added_at: '2026-01-01T00:00:00.000Z',
        added_by: hex(1),
      }))
    );
    const nkey = createUser().getPublicKey();
    const server = createUser().getPublicKey();
    const exp = Math.floor(now / 1000) + 3600;
    const theirs = await at(now, () =>
      encodeUser(nkey, server, issuer, { pub: perms.pub, sub: perms.sub }, { aud: 'APP', exp })
    );
    const ours = encodeUserJwt(
      {
        name: nkey,
        subject: server,
        audience: 'APP',
        exp,
        permissionsJson: permissionsJson(perms),
      },
      fast,
      now
    );
    assert.equal(ours, theirs, `${rooms} rooms`);
    const claims = decode<{ pub: { allow: string[] } }>(ours);
    assert.equal(claims.nats.pub?.allow.length, perms.pub.allow.length);
  }
});

test('authorization response: byte for byte what nats-jwt makes, an allow and a denial', async () => {
  const issuer = createAccount();
  const fast = fastIssuer(issuer);
  const user = createUser().getPublicKey();
  const server = createServer().getPublicKey();
  const now = 1_780_000_321_999;
  for (const answer of [
    { jwt: 'eyJ0eXAiOiJKV1QifQ.e30.c2ln' },
    { error: 'nkey signature over the server nonce does not verify' },
    // Quotes, a backslash and a control character escape as JSON.stringify does.
    { error: 'odd "reason" \\ with\ttab' },
  ]) {
    const theirs = await at(now, () =>
      encodeAuthorizationResponse(user, server, issuer, answer, {})
    );
    assert.equal(encodeAuthorizationResponseJwt(user, server, answer, fast, now), theirs);
    decode(theirs);
  }
});

test('a claim made in another second, or by another key, differs (the test can tell)', () => {
  const fast = fastIssuer(createAccount());
  const user = createUser().getPublicKey();
  const server = createServer().getPublicKey();
  const a = encodeAuthorizationResponseJwt(user, server, { error: 'x' }, fast, 1_000_000_000_000);
  assert.notEqual(
    encodeAuthorizationResponseJwt(user, server, { error: 'x' }, fast, 1_000_000_001_000),
    a
  );
  assert.notEqual(
    encodeAuthorizationResponseJwt(user, server, { error: 'x' }, fastIssuer(createAccount()), 1e12),
    a
  );
});
