// The callout's fast key wrappers make exactly what nkeys.js makes: the same
// Ed25519 signatures, the same xkv1 boxes (byte for byte with a fixed
// nonce), opened both ways; tampering and foreign keys are refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createAccount, createCurve, createServer, createUser, fromPublic } from 'nkeys.js';
import { decode, encodeUser } from 'nats-jwt';
import { fastCurve, fastIssuer, verifyNkey } from './fastkeys.js';

test('fastIssuer: the same signatures as nkeys.js, and its public key', async () => {
  const kp = createAccount();
  const fast = fastIssuer(kp);
  assert.equal(fast.getPublicKey(), kp.getPublicKey());
  for (const n of [0, 1, 100, 200_000]) {
    const m = new Uint8Array(randomBytes(n));
    // Ed25519 is deterministic: equal bytes, not just a valid signature.
    assert.deepEqual(Buffer.from(fast.sign(m)), Buffer.from(kp.sign(m)), `${n} bytes`);
    assert.ok(fromPublic(kp.getPublicKey()).verify(m, fast.sign(m)));
  }
  // A user JWT signed through it decodes and verifies as nats-jwt's own.
  const user = createUser().getPublicKey();
  const jwt = await encodeUser(
    user,
    user,
    fast,
    { pub: { allow: ['a.b'], deny: [] } },
    { aud: 'APP' }
  );
  const claims = decode<{ pub: { allow: string[] } }>(jwt);
  assert.equal(claims.iss, kp.getPublicKey());
  assert.deepEqual(claims.nats.pub?.allow, ['a.b']);
  const [h, b, sig] = jwt.split('.');
  assert.ok(
    fromPublic(kp.getPublicKey()).verify(
      new TextEncoder().encode(`${h}.${b}`),
      new Uint8Array(Buffer.from(sig!, 'base64url'))
    )
  );
});

test('fastCurve: the same xkv1 boxes as nkeys.js (byte for byte), opened both ways; tampering and strangers refused', () => {
  const mine = createCurve();
  const server = createCurve();
  const fast = fastCurve(mine);
  assert.equal(fast.getPublicKey(), mine.getPublicKey());
  const nonce = new Uint8Array(randomBytes(24));
  for (const n of [0, 1, 5_000, 300_000]) {
    const m = new Uint8Array(randomBytes(n));
    assert.deepEqual(
      Buffer.from(fast.seal(m, server.getPublicKey(), nonce)),
      Buffer.from(mine.seal(m, server.getPublicKey(), nonce)),
      `${n} bytes`
    );
    // What the server seals to us, we open; what we seal, the server opens.
    const toUs = server.seal(m, mine.getPublicKey());
    assert.deepEqual(Buffer.from(fast.open(toUs, server.getPublicKey())!), Buffer.from(m));
    const toServer = fast.seal(m, server.getPublicKey());
    assert.deepEqual(Buffer.from(server.open(toServer, mine.getPublicKey())!), Buffer.from(m));
  }
  const sealed = server.seal(new TextEncoder().encode('hello'), mine.getPublicKey());
  const flipped = Uint8Array.from(sealed);
  flipped[flipped.length - 1]! ^= 1;
  assert.equal(fast.open(flipped, server.getPublicKey()), null, 'tampered');
  const stranger = createCurve();
  assert.equal(fast.open(sealed, stranger.getPublicKey()), null, 'another sender');
  const noHeader = Uint8Array.from(sealed);
  noHeader[0] = 0;
  assert.equal(fast.open(noHeader, server.getPublicKey()), null, 'not xkv1');
  assert.equal(fast.open(sealed.subarray(0, 20), server.getPublicKey()), null, 'too short');
  assert.throws(() => fast.seal(new Uint8Array(1), 'XNOTAKEY'), 'a malformed recipient');
});

test('verifyNkey answers as nkeys.js verify does: valid, tampered, another key, another kind, malformed', () => {
  const user = createUser();
  const server = createServer();
  const data = new Uint8Array(randomBytes(300));
  const us = user.sign(data);
  const ss = server.sign(data);
  assert.equal(verifyNkey('user', user.getPublicKey(), data, us), true);
  assert.equal(verifyNkey('server', server.getPublicKey(), data, ss), true);
  const tampered = Uint8Array.from(data);
  tampered[0]! ^= 1;
  assert.equal(verifyNkey('user', user.getPublicKey(), tampered, us), false);
  assert.equal(fromPublic(user.getPublicKey()).verify(tampered, us), false, 'nkeys.js agrees');
  assert.equal(verifyNkey('user', createUser().getPublicKey(), data, us), false, 'another key');
  assert.equal(
    verifyNkey('server', user.getPublicKey(), data, us),
    false,
    'a user key as a server'
  );
  assert.equal(
    verifyNkey('user', server.getPublicKey(), data, ss),
    false,
    'a server key as a user'
  );
  assert.equal(verifyNkey('user', 'UNOTAKEY', data, us), false, 'malformed key');
  assert.equal(verifyNkey('user', user.getPublicKey(), data, us.subarray(0, 63)), false, 'short');
  assert.equal(verifyNkey('user', user.getPublicKey(), data, new Uint8Array(64)), false, 'zeros');
});
