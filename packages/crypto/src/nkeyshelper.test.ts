import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import nacl from 'tweetnacl';
import { createCurve, fromCurveSeed, fromSeed } from 'nkeys.js';
import { getEd25519Helper } from 'nkeys.js/lib/helper.js';
import { fastEd25519Helper } from './nkeyshelper.js';
import { fromHex } from './bytes.js';
import { nkeySeedFromRaw } from './nkeys.js';

test('the fast helper is installed and agrees byte for byte with tweetnacl', () => {
  assert.equal(getEd25519Helper(), fastEd25519Helper);
  // RFC 8032 test 2 seed
  const seed = fromHex('4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb');
  const ours = fastEd25519Helper.fromSeed(seed);
  const theirs = nacl.sign.keyPair.fromSeed(seed);
  assert.deepEqual(ours.publicKey, theirs.publicKey);
  assert.deepEqual(ours.secretKey, theirs.secretKey);
  const msg = new TextEncoder().encode('server nonce');
  const sig = fastEd25519Helper.sign(msg, ours.secretKey);
  assert.deepEqual(
    sig,
    nacl.sign.detached(msg, theirs.secretKey),
    'Ed25519 is deterministic: identical signatures'
  );
  assert.equal(fastEd25519Helper.verify(msg, sig, ours.publicKey), true);
  assert.equal(
    fastEd25519Helper.verify(
      msg,
      sig.map((b, i) => (i === 0 ? b ^ 1 : b)),
      ours.publicKey
    ),
    false
  );
  const s = new Uint8Array(32).fill(9);
  assert.deepEqual(fastEd25519Helper.scalarBaseMultiply(s), nacl.scalarMult.base(s));
});

test('nkeys.js key pairs sign and xkey-seal through the helper, interoperable with tweetnacl boxes', () => {
  const kp = fromSeed(
    new TextEncoder().encode(nkeySeedFromRaw('account', new Uint8Array(32).fill(3)))
  );
  const data = new TextEncoder().encode('jwt payload');
  assert.equal(kp.verify(data, kp.sign(data)), true);
  const a = createCurve();
  const b = fromCurveSeed(
    new TextEncoder().encode(nkeySeedFromRaw('curve', new Uint8Array(32).fill(5)))
  );
  const sealed = a.seal(data, b.getPublicKey());
  assert.deepEqual(b.open(sealed, a.getPublicKey()), data);
  assert.equal(
    b.open(
      sealed.map((v, i) => (i === sealed.length - 1 ? v ^ 1 : v)),
      a.getPublicKey()
    ),
    null
  );
});

test('loading the package alone installs the helper (nkeys.js cannot overwrite it later)', () => {
  const mod = new URL('./mod.js', import.meta.url).href;
  const code = [
    `import { fastEd25519Helper } from ${JSON.stringify(mod)};`,
    `import { createUser } from 'nkeys.js';`,
    `import { getEd25519Helper } from 'nkeys.js/lib/helper.js';`,
    `createUser();`,
    `process.exit(getEd25519Helper() === fastEd25519Helper ? 0 : 3);`,
  ].join('\n');
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], {
    cwd: process.cwd(),
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
});
