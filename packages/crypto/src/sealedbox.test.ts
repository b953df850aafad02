import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fromHex, toHex } from './bytes.js';
import { CryptoError } from './errors.js';
import { openSealed, SEAL_OVERHEAD, seal } from './sealedbox.js';
import { x25519GeneratePrivate, x25519PublicFromPrivate } from './x25519.js';

const keyPair = () => {
  const priv = x25519GeneratePrivate();
  return { priv, pub: x25519PublicFromPrivate(priv) };
};

// Produced by libsodium 1.0.18's crypto_box_seal (Debian bookworm's
// libsodium23) for a recipient from crypto_box_seed_keypair(seed = 00..1f).
const LIBSODIUM = {
  priv: '3d94eea49c580aef816935762be049559d6d1440dede12e6a125f1841fff8e6f',
  pub: '4701d08488451f545a409fb58ae3e58581ca40ac3f7f114698cd71deac73ca01',
  message: 'sealbus libsodium interop vector',
  sealed:
    'f2d53f9307c9f2b131f65cece143285993de1f97ec0db254c2fd6451fde84a07e91c7d3253b6450a6eb890c9d93843fc33828f15a28c529e74971c3de610e39202d7c3f0e5190fa7e6b78a7d9d810919',
};

test('opens a box sealed by libsodium crypto_box_seal', () => {
  const priv = fromHex(LIBSODIUM.priv);
  const pub = x25519PublicFromPrivate(priv);
  assert.equal(toHex(pub), LIBSODIUM.pub);
  const opened = openSealed(fromHex(LIBSODIUM.sealed), pub, priv);
  assert.equal(Buffer.from(opened).toString('utf8'), LIBSODIUM.message);
});

test('sealed box round trip, fresh ephemeral key every time', () => {
  const r = keyPair();
  for (const size of [0, 1, 32, 1000]) {
    const msg = crypto.getRandomValues(new Uint8Array(size));
    const a = seal(msg, r.pub);
    const b = seal(msg, r.pub);
    assert.equal(a.length, size + SEAL_OVERHEAD);
    assert.notDeepEqual(a, b);
    assert.deepEqual(openSealed(a, r.pub, r.priv), msg);
    assert.deepEqual(openSealed(b, r.pub, r.priv), msg);
  }
});

test('opening with the wrong key fails', () => {
  const r = keyPair();
  const other = keyPair();
  const box = seal(new Uint8Array(32).fill(7), r.pub);
  assert.throws(
    () => openSealed(box, other.pub, other.priv),
    (e: unknown) => e instanceof CryptoError && e.code === 'OPEN_FAILED'
  );
  // right private key but the wrong public key in the nonce derivation
  assert.throws(() => openSealed(box, other.pub, r.priv), { code: 'OPEN_FAILED' });
});

test('any tampered byte makes the box unopenable', () => {
  const r = keyPair();
  const box = seal(new TextEncoder().encode('room key'), r.pub);
  for (const i of [0, 31, 32, 47, box.length - 1]) {
    const bad = Uint8Array.from(box);
    bad[i]! ^= 1;
    assert.throws(() => openSealed(bad, r.pub, r.priv), { code: 'OPEN_FAILED' }, `byte ${i}`);
  }
});

test('malformed inputs are refused with codes', () => {
  const r = keyPair();
  assert.throws(() => openSealed(new Uint8Array(SEAL_OVERHEAD - 1), r.pub, r.priv), {
    code: 'BAD_LENGTH',
  });
  assert.throws(() => seal(new Uint8Array(1), new Uint8Array(31)), { code: 'BAD_LENGTH' });
  assert.throws(() => openSealed(new Uint8Array(64), r.pub, new Uint8Array(3)), {
    code: 'BAD_LENGTH',
  });
});
