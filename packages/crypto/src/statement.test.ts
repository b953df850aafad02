import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { ed25519 } from '@noble/curves/ed25519.js';
import { ed25519PublicFromSeed } from './ed25519.js';
import { toHex } from './bytes.js';
import {
  ROOM_STATEMENT_LABEL,
  fingerprint,
  keyCommitment,
  roomStatementHash,
  roomStatementMessage,
  signRoomStatement,
  verifyRoomStatement,
} from './statement.js';

// Known-answer vectors (docs/SECURITY.md, "Room statements"). The owner's
// seed is 32 bytes of 0x01; the member's 32 bytes of 0x02.
const OWNER_SEED = new Uint8Array(32).fill(1);
const OWNER = '8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c';
const MEMBER = '8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394';
const KEY = new Uint8Array(32).fill(0x42);
const COMMITMENT = 'db5488b9ace1cfd180cae3183a68d1c1223a179d1d7689829293ae4701970ff5';
const STATEMENT =
  '{"created":"2026-12-02T12:00:00.000Z","epoch":1,' +
  `"key_commitment":"${COMMITMENT}",` +
  `"members":[["${MEMBER}","writer"],["${OWNER}","owner"]],` +
  `"owner":"${OWNER}","policy":{"encrypt":true,"persist":false,"sign":true},` +
  '"prev":"0000000000000000000000000000000000000000000000000000000000000000",' +
  '"room":"0123456789abcdef01234567","seq":1,"subject":"team.chat"}';
const SIG =
  '0c4ddfb9734add19bc88911bc0cee18362b13a0fd06c6a221e53be37896bd683' +
  '786d30e641270c29b74f55f875a59c3afaee1cfa5f852fd0b31484fcadd2330a';
const HASH = '16b50355bafa444f83f0045fb9e9fc8e2fda905ab2ee19deb4bc0d925511785a';

test('statement vectors: keys, commitment, signature, hash', () => {
  assert.equal(toHex(ed25519PublicFromSeed(OWNER_SEED)), OWNER);
  assert.equal(toHex(ed25519PublicFromSeed(new Uint8Array(32).fill(2))), MEMBER);
  assert.equal(keyCommitment(KEY), COMMITMENT);
  assert.equal(signRoomStatement(OWNER_SEED, STATEMENT), SIG);
  assert.equal(roomStatementHash(STATEMENT), HASH);
  // An independent Ed25519 (noble) over label || JSON agrees.
  const msg = new Uint8Array(
    Buffer.concat([Buffer.from(ROOM_STATEMENT_LABEL, 'ascii'), Buffer.from(STATEMENT, 'utf8')])
  );
  assert.deepEqual(roomStatementMessage(STATEMENT), msg);
  assert.ok(ed25519.verify(Buffer.from(SIG, 'hex'), msg, Buffer.from(OWNER, 'hex')));
  assert.equal(createHash('sha256').update(STATEMENT).digest('hex'), HASH);
});

test('a statement verifies under its owner only, and not once changed', () => {
  assert.equal(verifyRoomStatement(OWNER, STATEMENT, SIG), true);
  assert.equal(verifyRoomStatement(MEMBER, STATEMENT, SIG), false, 'another key');
  assert.equal(verifyRoomStatement(OWNER, STATEMENT.replace('writer', 'reader'), SIG), false);
  assert.equal(verifyRoomStatement(OWNER, STATEMENT + ' ', SIG), false, 'not byte-exact');
  // The label is part of what is signed: the same JSON signed bare does not verify.
  const bare = toHex(ed25519.sign(Buffer.from(STATEMENT), OWNER_SEED));
  assert.equal(verifyRoomStatement(OWNER, STATEMENT, bare), false);
  for (const junk of ['', 'zz', '00'.repeat(63), SIG.toUpperCase().slice(2)])
    assert.equal(verifyRoomStatement(OWNER, STATEMENT, junk), false, junk);
  assert.equal(verifyRoomStatement('nothex', STATEMENT, SIG), false);
});

test('fingerprint vectors: 60 digits in 12 groups of 5', () => {
  // Computed independently (Python hashlib) from the documented derivation.
  assert.equal(
    fingerprint(new Uint8Array([...Array(32).keys()])),
    '74784 59387 86088 22460 62765 58467 53612 34453 50252 68995 91037 72892'
  );
  const fp = fingerprint(OWNER);
  assert.match(fp, /^(\d{5} ){11}\d{5}$/);
  assert.equal(fingerprint(Buffer.from(OWNER, 'hex')), fp, 'hex and bytes agree');
  assert.notEqual(fingerprint(MEMBER), fp);
  assert.throws(() => fingerprint('abcd'));
});
