import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fromHex } from './bytes.js';
import { CryptoError } from './errors.js';
import { generateIdentity, identityFromSecrets } from './identity.js';
import {
  PUBLIC_TOKEN_BYTES,
  encodePublicIdentity,
  parsePublicIdentity,
  publicIdentityOf,
} from './publicid.js';

const SIGN_SEED = '9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60';
const KEX_PRIV = '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a';
const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const isCode = (code: string) => (e: unknown) => e instanceof CryptoError && e.code === code;

test('known answer: sbid1. + base64url(sign_pub || kex_pub || nats_pub || binding)', () => {
  const id = identityFromSecrets(fromHex(SIGN_SEED), fromHex(KEX_PRIV));
  const token = encodePublicIdentity(id);
  assert.equal(
    token,
    'sbid1.11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURqFIPAJiTCnVHSLfdy0PvdaDb86DSY4GvTrpKmOqptOaqCYpq4-l9aMJ9RuD-DLRhyv2GrHJg_HOgcpW8fdIRK2kqJT8yceMngD4NlbIUK7SACG-KO4g-No1xu-QNlM0BcOF88wDTD6xUay9_7UGA-5ZM0vC6zDVMO2CvQveqJjCw'
  );
  const raw = Buffer.from(token.slice(6), 'base64url');
  assert.equal(raw.length, PUBLIC_TOKEN_BYTES);
  assert.equal(raw.subarray(0, 32).toString('hex'), id.signPubHex);
  assert.equal(raw.subarray(32, 64).toString('hex'), id.kexPubHex);
  assert.equal(raw.subarray(64, 96).toString('hex'), id.natsPubHex);
  const p = parsePublicIdentity(token);
  assert.equal(p.signPubHex, id.signPubHex);
  assert.equal(p.kexPubHex, id.kexPubHex);
  assert.equal(p.natsPubHex, id.natsPubHex);
  assert.equal(p.bindingHex, raw.subarray(96).toString('hex'));
});

test('round trip for fresh identities', () => {
  for (let i = 0; i < 16; i++) {
    const id = generateIdentity();
    const pub = publicIdentityOf(id);
    const back = parsePublicIdentity(encodePublicIdentity(pub));
    assert.deepEqual(
      [back.signPubHex, back.kexPubHex, back.natsPubHex, back.bindingHex],
      [id.signPubHex, id.kexPubHex, id.natsPubHex, pub.bindingHex]
    );
    assert.equal(encodePublicIdentity(back), encodePublicIdentity(id));
  }
});

test('any flipped bit of a token is refused with BAD_BINDING (the binding covers every key)', () => {
  const id = generateIdentity();
  const raw = Buffer.from(encodePublicIdentity(id).slice(6), 'base64url');
  for (const byte of [0, 31, 32, 63, 64, 95, 96, 159]) {
    const t = Buffer.from(raw);
    t[byte]! ^= 0x01;
    assert.throws(
      () => parsePublicIdentity('sbid1.' + t.toString('base64url')),
      isCode('BAD_BINDING'),
      `byte ${byte}`
    );
  }
  // Someone else's binding spliced onto these keys.
  const other = Buffer.from(encodePublicIdentity(generateIdentity()).slice(6), 'base64url');
  const spliced = Buffer.concat([raw.subarray(0, 96), other.subarray(96)]);
  assert.throws(
    () => parsePublicIdentity('sbid1.' + spliced.toString('base64url')),
    isCode('BAD_BINDING')
  );
});

test('malformed tokens are refused with BAD_TOKEN', () => {
  const good = encodePublicIdentity(generateIdentity());
  const body = good.slice(6);
  const cases: Array<[string, unknown]> = [
    ['not a string', 42],
    ['empty', ''],
    ['no prefix', body],
    ['other version', 'sbid2.' + body],
    ['upper-case prefix', 'SBID1.' + body],
    ['one char short', good.slice(0, -1)],
    ['one char long', good + 'A'],
    ['padding', good.slice(0, -2) + '=='],
    ['standard base64 alphabet', 'sbid1.' + Buffer.from(body, 'base64url').toString('base64')],
    ['whitespace', good.slice(0, 100) + ' ' + good.slice(101)],
    // 1280 bits in 214 characters: the last one's 4 low bits are unused and must be 0.
    ['non-canonical last char', good.slice(0, -1) + B64URL[B64URL.indexOf(good.at(-1)!) | 1]],
    ['hex instead of base64url', 'sbid1.' + 'ab'.repeat(107)],
  ];
  for (const [name, token] of cases) {
    assert.throws(() => parsePublicIdentity(token), isCode('BAD_TOKEN'), name);
  }
});
