import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fromHex, toHex } from './bytes.js';
import { CryptoError } from './errors.js';
import { x25519PublicFromPrivate, x25519SharedSecret } from './x25519.js';

// RFC 7748 section 5.2: single scalar multiplications.
const SCALAR_MULT = [
  {
    k: 'a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4',
    u: 'e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c',
    out: 'c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552',
  },
  {
    k: '4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d',
    u: 'e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493',
    out: '95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957',
  },
];

test('RFC 7748 5.2 scalar multiplication vectors', () => {
  for (const v of SCALAR_MULT) {
    assert.equal(toHex(x25519SharedSecret(fromHex(v.k), fromHex(v.u))), v.out);
  }
});

test('RFC 7748 6.1 Diffie-Hellman: Alice and Bob', () => {
  const alicePriv = fromHex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
  const bobPriv = fromHex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
  const alicePub = x25519PublicFromPrivate(alicePriv);
  const bobPub = x25519PublicFromPrivate(bobPriv);
  assert.equal(toHex(alicePub), '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
  assert.equal(toHex(bobPub), 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
  const shared = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';
  assert.equal(toHex(x25519SharedSecret(alicePriv, bobPub)), shared);
  assert.equal(toHex(x25519SharedSecret(bobPriv, alicePub)), shared);
});

test('x25519 rejects keys of the wrong length', () => {
  for (const [priv, pub] of [
    [new Uint8Array(31), new Uint8Array(32)],
    [new Uint8Array(32), new Uint8Array(33)],
  ] as const) {
    assert.throws(
      () => x25519SharedSecret(priv, pub),
      (e: unknown) => e instanceof CryptoError && e.code === 'BAD_LENGTH'
    );
  }
  assert.throws(() => x25519PublicFromPrivate(new Uint8Array(16)), { code: 'BAD_LENGTH' });
});
