import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fromSeed } from 'nkeys.js';
import { fromHex, toHex } from './bytes.js';
import { ed25519PublicFromSeed, ed25519Verify } from './ed25519.js';
import { publicFromUserNkey, userNkeyFromPublic, userNkeyFromSeed } from './nkeys.js';

test('userNkeyFromSeed encodes the Ed25519 key of a raw seed as a U… / SU… nkey', () => {
  const seed = fromHex('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60');
  const nk = userNkeyFromSeed(seed);
  assert.match(nk.publicKey, /^U[A-Z2-7]{55}$/);
  assert.match(nk.seed, /^SU[A-Z2-7]{56}$/);
  assert.equal(toHex(publicFromUserNkey(nk.publicKey)), toHex(ed25519PublicFromSeed(seed)));
  assert.equal(userNkeyFromPublic(ed25519PublicFromSeed(seed)), nk.publicKey);
  // nkeys.js signs with that very key.
  const kp = fromSeed(new TextEncoder().encode(nk.seed));
  const nonce = new TextEncoder().encode('server nonce');
  assert.equal(ed25519Verify(ed25519PublicFromSeed(seed), nonce, kp.sign(nonce)), true);
});

test('publicFromUserNkey refuses a non-user or corrupted key', () => {
  const { publicKey } = userNkeyFromSeed(new Uint8Array(32).fill(1));
  const corrupted = publicKey.slice(0, -1) + (publicKey.endsWith('A') ? 'B' : 'A');
  assert.throws(() => publicFromUserNkey(corrupted));
  assert.throws(() => publicFromUserNkey('A' + publicKey.slice(1)));
});
