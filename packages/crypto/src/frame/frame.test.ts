import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { generateIdentity } from '../identity.js';
import {
  FRAME_HEADER_BYTES,
  FrameSealer,
  frameSignatureValid,
  openFramePayload,
  parseFrame,
} from './codec.js';
import { FrameError } from './errors.js';
import { ReplayWindow } from './replay.js';

const ROOM = 'a1b2c3d4e5f6a1b2c3d4e5f6';
const alice = generateIdentity();
const key0 = new Uint8Array(randomBytes(32));
const key1 = new Uint8Array(randomBytes(32));
const msg = new TextEncoder().encode('hello, room');
const isCode = (code: string) => (e: unknown) => e instanceof FrameError && e.code === code;

test('encrypted + signed frame round trip; header fields as sent', () => {
  const s = new FrameSealer(ROOM, alice.signSeed);
  const bytes = s.seal(msg, { epoch: 3, key: key0, sign: true });
  const f = parseFrame(bytes);
  assert.deepEqual(
    { ...f.header, session: f.header.session.length },
    {
      version: 1,
      encrypted: true,
      signed: true,
      room: ROOM,
      epoch: 3,
      sender: alice.signPubHex,
      session: 32,
      seq: 1,
    }
  );
  assert.equal(frameSignatureValid(f), true);
  assert.deepEqual(openFramePayload(f, key0), msg);
  assert.ok(!Buffer.from(bytes).includes(Buffer.from(msg)), 'no plaintext on the wire');
  assert.equal(parseFrame(s.seal(msg, { epoch: 3, key: key0, sign: true })).header.seq, 2);
});

test('unencrypted rooms still carry the header and the signature', () => {
  const s = new FrameSealer(ROOM, alice.signSeed);
  const f = parseFrame(s.seal(msg, { epoch: 0, key: null, sign: true }));
  assert.equal(f.header.encrypted, false);
  assert.equal(frameSignatureValid(f), true);
  assert.deepEqual(openFramePayload(f, key0), msg);
  const unsigned = parseFrame(s.seal(msg, { epoch: 0, key: key0, sign: false }));
  assert.equal(unsigned.signature, null);
  assert.equal(frameSignatureValid(unsigned), false);
});

test('tampering: ciphertext and header fail to decrypt; signature catches everything', () => {
  const s = new FrameSealer(ROOM, alice.signSeed);
  const good = s.seal(msg, { epoch: 1, key: key0, sign: true });
  for (const [name, i] of [
    ['epoch', 17],
    ['sender', 20],
    ['seq', 72],
    ['ciphertext', FRAME_HEADER_BYTES + 2],
    ['tag', FRAME_HEADER_BYTES + msg.length + 3],
  ] as const) {
    const bad = Uint8Array.from(good);
    bad[i]! ^= 0x01;
    const f = parseFrame(bad);
    assert.equal(frameSignatureValid(f), false, `${name}: signature`);
    assert.throws(() => openFramePayload(f, key0), isCode('DECRYPT_FAILED'), `${name}: AEAD`);
  }
  const sigFlip = Uint8Array.from(good);
  sigFlip[sigFlip.length - 1]! ^= 1;
  assert.equal(frameSignatureValid(parseFrame(sigFlip)), false);
  assert.throws(
    () => openFramePayload(parseFrame(good), key1),
    isCode('DECRYPT_FAILED'),
    'another epoch key'
  );
});

test('a new session of the same sender gets a new key: restarting at seq 1 never reuses a nonce', () => {
  const a = parseFrame(
    new FrameSealer(ROOM, alice.signSeed).seal(msg, { epoch: 0, key: key0, sign: false })
  );
  const b = parseFrame(
    new FrameSealer(ROOM, alice.signSeed).seal(msg, { epoch: 0, key: key0, sign: false })
  );
  assert.equal(a.header.seq, b.header.seq);
  assert.notEqual(a.header.session, b.header.session);
  assert.notDeepEqual(a.payload, b.payload, 'same plaintext, same seq, different ciphertext');
});

test('malformed frames', () => {
  const good = new FrameSealer(ROOM, alice.signSeed).seal(msg, { epoch: 0, key: key0, sign: true });
  const cases: Array<[string, Uint8Array]> = [
    ['empty', new Uint8Array()],
    ['short', good.subarray(0, 40)],
    ['truncated', good.subarray(0, good.length - 1)],
    ['trailing byte', Uint8Array.from([...good, 0])],
    ['version 2', Uint8Array.from(good, (v, i) => (i === 0 ? 2 : v))],
    ['unknown flag', Uint8Array.from(good, (v, i) => (i === 1 ? v | 4 : v))],
    ['seq 0', Uint8Array.from(good, (v, i) => (i >= 66 && i < 74 ? 0 : v))],
  ];
  for (const [name, bytes] of cases)
    assert.throws(() => parseFrame(bytes), isCode('MALFORMED'), name);
  assert.throws(() => new FrameSealer('not-a-room', alice.signSeed), isCode('MALFORMED'));
});

test('replay window: replays, reordering inside the window, too old, gaps', () => {
  const w = new ReplayWindow();
  assert.deepEqual(w.check('s', 'x', 5), { ok: true, gap: null }, 'joining late is not loss');
  assert.deepEqual(w.check('s', 'x', 6), { ok: true, gap: null });
  assert.deepEqual(w.check('s', 'x', 6), { ok: false, reason: 'REPLAYED' });
  assert.deepEqual(w.check('s', 'x', 10), { ok: true, gap: { from: 7, to: 9 } });
  assert.deepEqual(w.check('s', 'x', 8), { ok: true, gap: null }, 'late but inside the window');
  assert.deepEqual(w.check('s', 'x', 8), { ok: false, reason: 'REPLAYED' });
  assert.deepEqual(w.check('s', 'y', 6), { ok: true, gap: null }, 'per session');
  assert.deepEqual(w.check('s', 'x', 5000), { ok: true, gap: { from: 11, to: 4999 } });
  assert.deepEqual(w.check('s', 'x', 9), { ok: false, reason: 'TOO_OLD' });
  assert.deepEqual(
    w.check('s', 'x', 4990),
    { ok: true, gap: null },
    'a skipped seq inside the window is still new'
  );
  assert.deepEqual(w.check('s', 'x', 4990), { ok: false, reason: 'REPLAYED' });
});

test('replay window: a sender flooding sessions evicts only its own, never another sender', () => {
  const w = new ReplayWindow({ maxSessionsPerSender: 64 });
  assert.deepEqual(w.check('victim', 'v1', 7), { ok: true, gap: null });
  // 100,000 tiny valid frames under fresh sessions (the attack).
  for (let i = 0; i < 100_000; i++) w.check('mallory', `m${i}`, 1);
  assert.deepEqual(w.check('victim', 'v1', 7), { ok: false, reason: 'REPLAYED' });
  // Mallory's own oldest sessions are the ones gone.
  assert.deepEqual(w.check('mallory', 'm0', 1), { ok: true, gap: null });
  assert.deepEqual(w.check('mallory', 'm99999', 1), { ok: false, reason: 'REPLAYED' });
});
