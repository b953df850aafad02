import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fromHex, toHex } from './bytes.js';
import { ed25519Sign } from './ed25519.js';
import { CryptoError } from './errors.js';
import { generateIdentity, identityFromSecrets } from './identity.js';
import {
  KEY_BINDING_LABEL,
  keyBindingMessage,
  signKeyBinding,
  verifyKeyBinding,
} from './binding.js';

const SIGN_SEED = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60';
const KEX_PRIV = '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a';
const flip = (b: Uint8Array, i = 0) => b.map((v, j) => (j === i ? v ^ 1 : v));

test('known answer: binding = Ed25519(sign seed, label || sign_pub || kex_pub || nats_pub)', () => {
  const id = identityFromSecrets(fromHex(SIGN_SEED), fromHex(KEX_PRIV));
  assert.equal(KEY_BINDING_LABEL, 'sealbus-key-binding-v1');
  const message = Buffer.concat([
    Buffer.from('sealbus-key-binding-v1', 'ascii'),
    id.signPub,
    id.kexPub,
    id.natsPub,
  ]);
  assert.equal(message.length, 22 + 96);
  assert.deepEqual(Buffer.from(keyBindingMessage(id)), message);
  const binding = signKeyBinding(id);
  // Ed25519 is deterministic: the same bytes in every implementation.
  assert.equal(
    toHex(binding),
    '92a253f3271e327803e0d95b2142bb480086f8a3b883e368d71bbe40d94cd0170e17cf300d30fac546b2f7fed4180fb964cd2f0bacc354c3b60af42f7aa2630b'
  );
  assert.equal(toHex(ed25519Sign(id.signSeed, new Uint8Array(message))), toHex(binding));
  assert.equal(verifyKeyBinding(id, binding), true);
});

test('a binding does not verify for any other key, a tampered signature or another signer', () => {
  const id = generateIdentity();
  const other = generateIdentity();
  const binding = signKeyBinding(id);
  const cases: Array<[string, Parameters<typeof verifyKeyBinding>]> = [
    ['other kex_pub', [{ ...id, kexPub: other.kexPub }, binding]],
    ['other nats_pub', [{ ...id, natsPub: other.natsPub }, binding]],
    ['other sign_pub', [{ ...id, signPub: other.signPub }, binding]],
    ['sign_pub as nats_pub', [{ ...id, natsPub: id.signPub }, binding]],
    ['tampered binding', [id, flip(binding, 10)]],
    ['signed by another key', [id, signKeyBinding({ ...id, signSeed: other.signSeed })]],
    ['short binding', [id, binding.slice(0, 63)]],
    ['long binding', [id, new Uint8Array([...binding, 0])]],
    ['all-zero binding', [id, new Uint8Array(64)]],
    ['not a point as sign_pub', [{ ...id, signPub: new Uint8Array(32).fill(0xff) }, binding]],
  ];
  for (const [name, args] of cases) assert.equal(verifyKeyBinding(...args), false, name);
});

test('keys of the wrong shape are a CryptoError naming the argument', () => {
  const id = generateIdentity();
  const cases: Array<[string, object]> = [
    ['sign_pub', { ...id, signPub: new Uint8Array(31) }],
    ['kex_pub', { ...id, kexPub: new Uint8Array(33) }],
    ['nats_pub', { ...id, natsPub: 'ab'.repeat(32) }],
  ];
  for (const [name, keys] of cases) {
    assert.throws(
      () => verifyKeyBinding(keys as typeof id, new Uint8Array(64)),
      (e: unknown) => e instanceof CryptoError && e.message.startsWith(name),
      name
    );
    assert.throws(() => signKeyBinding(keys as typeof id), CryptoError, name);
  }
});
