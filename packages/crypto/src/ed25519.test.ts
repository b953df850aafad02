import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ed25519 } from '@noble/curves/ed25519.js';
import { fromHex, toHex } from './bytes.js';
import { ed25519PublicFromSeed, ed25519Sign, ed25519Signer, ed25519Verify } from './ed25519.js';
import { CryptoError } from './errors.js';

// RFC 8032 section 7.1, TEST 1-3 (secret key = 32-byte seed).
const RFC8032 = [
  {
    name: 'TEST 1 (empty message)',
    seed: '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60',
    pub: 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a',
    msg: '',
    sig: 'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
  },
  {
    name: 'TEST 2 (one byte)',
    seed: '4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb',
    pub: '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c',
    msg: '72',
    sig: '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
  },
  {
    name: 'TEST 3 (two bytes)',
    seed: 'c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7',
    pub: 'fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025',
    msg: 'af82',
    sig: '6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a',
  },
];

for (const v of RFC8032) {
  test(`RFC 8032 ${v.name}: derive, sign, verify`, () => {
    const seed = fromHex(v.seed);
    const msg = fromHex(v.msg);
    assert.equal(toHex(ed25519PublicFromSeed(seed)), v.pub);
    assert.equal(toHex(ed25519Sign(seed, msg)), v.sig);
    assert.equal(toHex(ed25519Signer(seed).sign(msg)), v.sig);
    assert.equal(ed25519Verify(fromHex(v.pub), msg, fromHex(v.sig)), true);
  });
}

test('verify rejects a flipped bit in message, signature or key', () => {
  const v = RFC8032[2]!;
  const pub = fromHex(v.pub);
  const msg = fromHex(v.msg);
  const sig = fromHex(v.sig);
  const badMsg = Uint8Array.from(msg);
  badMsg[0]! ^= 1;
  assert.equal(ed25519Verify(pub, badMsg, sig), false);
  for (const i of [0, 31, 32, 63]) {
    const badSig = Uint8Array.from(sig);
    badSig[i]! ^= 0x10;
    assert.equal(ed25519Verify(pub, msg, badSig), false, `sig byte ${i}`);
  }
  assert.equal(ed25519Verify(fromHex(RFC8032[0]!.pub), msg, sig), false);
  assert.equal(ed25519Verify(pub, msg, sig.subarray(0, 63)), false);
});

test('node:crypto signatures agree with noble for random keys and messages', () => {
  for (let i = 0; i < 20; i++) {
    const seed = ed25519.utils.randomSecretKey();
    const msg = crypto.getRandomValues(new Uint8Array(i * 7));
    const sig = ed25519Sign(seed, msg);
    assert.deepEqual(sig, ed25519.sign(msg, seed));
    assert.equal(ed25519.verify(sig, msg, ed25519PublicFromSeed(seed)), true);
    assert.equal(ed25519Verify(ed25519PublicFromSeed(seed), msg, sig), true);
  }
});

test('invalid inputs are CryptoErrors with a code naming the argument', () => {
  const cases: Array<[string, () => unknown, string]> = [
    ['short seed', () => ed25519PublicFromSeed(new Uint8Array(31)), 'BAD_LENGTH'],
    ['long seed', () => ed25519PublicFromSeed(new Uint8Array(33)), 'BAD_LENGTH'],
    ['string seed', () => ed25519PublicFromSeed('00' as unknown as Uint8Array), 'BAD_KEY'],
    [
      'short public key',
      () => ed25519Verify(new Uint8Array(31), new Uint8Array(), new Uint8Array(64)),
      'BAD_LENGTH',
    ],
  ];
  for (const [name, fn, code] of cases) {
    assert.throws(fn, (err: unknown) => err instanceof CryptoError && err.code === code, name);
  }
});
