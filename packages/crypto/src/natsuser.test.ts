import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { fromSeed } from 'nkeys.js';
import { fromHex, toHex } from './bytes.js';
import { ed25519PublicFromSeed, ed25519Verify } from './ed25519.js';
import { CryptoError } from './errors.js';
import { generateIdentity, identityFromSecrets } from './identity.js';
import { NATS_USER_INFO, natsUserKey, natsUserSeed } from './natsuser.js';
import { publicFromUserNkey, userNkeyFromPublic } from './nkeys.js';

// RFC 8032 section 7.1 test 1 seed; RFC 7748 section 6.1 Alice's private key.
const SIGN_SEED = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60';
const KEX_PRIV = '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a';

/** RFC 5869 by hand (one HMAC block): extract with an all-zero salt, expand once. */
function hkdfSha256By5869(ikm: Uint8Array, info: string): string {
  const prk = createHmac('sha256', Buffer.alloc(32)).update(ikm).digest();
  return createHmac('sha256', prk)
    .update(Buffer.concat([Buffer.from(info, 'ascii'), Buffer.from([1])]))
    .digest('hex');
}

test('known answer: the NATS user seed is HKDF-SHA256(sign seed, "", "sealbus/nats-user/v1", 32)', () => {
  assert.equal(NATS_USER_INFO, 'sealbus/nats-user/v1');
  const seed = fromHex(SIGN_SEED);
  const expected = '871b1e55b8c95d433298cdcaa0b0319b269b1d062319c17dc815f738f180e007';
  assert.equal(hkdfSha256By5869(seed, 'sealbus/nats-user/v1'), expected, 'independent HKDF');
  assert.equal(toHex(natsUserSeed(seed)), expected);
  const id = identityFromSecrets(seed, fromHex(KEX_PRIV));
  assert.equal(id.natsPubHex, 'a098a6ae3e97d68c27d46e0fe0cb461cafd86ac7260fc73a07295bc7dd2112b6');
  assert.equal(toHex(ed25519PublicFromSeed(fromHex(expected))), id.natsPubHex);
  const nk = natsUserKey(id);
  assert.equal(nk.publicKey, 'UCQJRJVOH2L5NDBH2RXA7YGLIYOK7WDKY4TA7RZ2A4UVXR65EEJLNRY3');
  assert.equal(nk.seed, 'SUAIOGY6KW4MSXKDGKMM3SVAWAYZWJU3DUDCGGOBPXEBL5ZY6GAOAB4XBI');
  assert.equal(toHex(publicFromUserNkey(nk.publicKey)), id.natsPubHex);
});

test('the NATS key is never the sign key, and its signatures never verify under sign_pub', () => {
  for (let i = 0; i < 8; i++) {
    const id = generateIdentity();
    const nk = natsUserKey(id);
    assert.notEqual(id.natsPubHex, id.signPubHex);
    assert.notEqual(nk.publicKey, userNkeyFromPublic(id.signPub));
    // What nats.js would send for a server nonce.
    const nonce = new TextEncoder().encode(`nonce ${i}`);
    const sig = fromSeed(new TextEncoder().encode(nk.seed)).sign(nonce);
    assert.equal(ed25519Verify(id.natsPub, nonce, sig), true);
    assert.equal(ed25519Verify(id.signPub, nonce, sig), false);
  }
});

test('natsUserSeed refuses a seed of the wrong shape, naming it', () => {
  for (const bad of [new Uint8Array(31), new Uint8Array(33), 'x'.repeat(32) as unknown]) {
    assert.throws(
      () => natsUserSeed(bad as Uint8Array),
      (e: unknown) => e instanceof CryptoError && /sign seed/.test(e.message)
    );
  }
});
