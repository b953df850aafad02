import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
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

// Frozen frames: any change to the wire format (or to how a key, nonce or
// header is derived) changes these bytes.
test('known-answer frames: fixed seed, session and key give frozen bytes', () => {
  const seed = new Uint8Array(32).map((_, i) => i + 1);
  const session = new Uint8Array(16).map((_, i) => 0xa0 + i);
  const key = new Uint8Array(32).map((_, i) => 0x40 + i);
  const s = new FrameSealer('0123456789abcdef01234567', seed, session);
  const text = new TextEncoder().encode('known answer');
  const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
  const head = '0123456789abcdef01234567';
  const sender = '79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664';
  const sess = 'a0a1a2a3a4a5a6a7a8a9aaabacadaeaf';
  assert.equal(
    hex(s.seal(text, { epoch: 7, key, sign: true })),
    `0103${head}00000007${sender}${sess}00000000000000010000001c` +
      'fc0de3c44f6625ac3277108387abf86a7a451368201fcb69cbf49dc1' +
      '7b9c3c85048a6485980f2367a62a8d92bda1846af059c2491e288c6dbb965806a3e7412d8518be9f6c781b103730527e84409caf38b0c8a3df81ab8600a7f60b'
  );
  assert.equal(
    hex(s.seal(text, { epoch: 7, key, sign: false })),
    `0101${head}00000007${sender}${sess}00000000000000020000001c` +
      'e7f7a24bc731524046ed577a1525e1837d61286ffc52735705b71de4'
  );
  assert.equal(
    hex(s.seal(text, { epoch: 0x01020304, key: null, sign: true })),
    `0102${head}01020304${sender}${sess}00000000000000030000000c6b6e6f776e20616e73776572` +
      'caa3a61f0dbc411c87dfc1e9e810f6a04c22e12e9688acdc7816d336b3dcb6563a79497e66146f0f4504b62158b797411476a5f4ce6e6709dae70b76a0c4f10d'
  );
  for (let i = 0; i < 2; i++) s.seal(text, { epoch: 7, key, sign: true });
  const big = s.seal(new Uint8Array(1024).fill(0x5a), { epoch: 8, key, sign: true });
  assert.equal(big.length, 1182);
  assert.equal(
    createHash('sha256').update(big).digest('hex'),
    '9c5ce9a4801fc621860811b15a6c2083545160a28a30a54d135a08487ae47858'
  );
});

// The format as its comment states it, built here without the codec: a seq
// above 2^32 must land in the header's and the nonce's high bytes.
test('a frame built from the format description opens, with a seq above 2^32', () => {
  const key = new Uint8Array(randomBytes(32));
  const session = randomBytes(16);
  const seq = 2 ** 40 + 5;
  const text = new TextEncoder().encode('by the book');
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  header[0] = 1;
  header[1] = 1;
  Buffer.from(ROOM, 'hex').copy(header, 2);
  header.writeUInt32BE(9, 14);
  Buffer.from(alice.signPubHex, 'hex').copy(header, 18);
  session.copy(header, 50);
  header.writeBigUInt64BE(BigInt(seq), 66);
  header.writeUInt32BE(text.length + 16, 74);
  const sub = Buffer.from(
    hkdfSync(
      'sha256',
      key,
      header.subarray(2, 18),
      Buffer.concat([Buffer.from('sealbus/frame/v1'), header.subarray(18, 66)]),
      32
    )
  );
  const nonce = Buffer.alloc(12);
  nonce.writeBigUInt64BE(BigInt(seq), 4);
  const c = createCipheriv('chacha20-poly1305', sub, nonce, { authTagLength: 16 });
  c.setAAD(header, { plaintextLength: text.length });
  const bytes = Buffer.concat([header, c.update(text), c.final(), c.getAuthTag()]);
  const f = parseFrame(new Uint8Array(bytes));
  assert.equal(f.header.seq, seq);
  assert.deepEqual(openFramePayload(f, key), text);
  // One past the largest safe integer is refused.
  bytes.writeBigUInt64BE(BigInt(Number.MAX_SAFE_INTEGER) + 1n, 66);
  assert.throws(() => parseFrame(new Uint8Array(bytes)), isCode('MALFORMED'));
  bytes.writeBigUInt64BE(BigInt(Number.MAX_SAFE_INTEGER), 66);
  assert.equal(parseFrame(new Uint8Array(bytes)).header.seq, Number.MAX_SAFE_INTEGER);
});

// Subkeys are cached per epoch key: the cache must follow the key's bytes,
// never only the object that held them.
test('a key cache never outlives a key: new epoch keys open only their own frames', () => {
  const s = new FrameSealer(ROOM, alice.signSeed);
  const k = Uint8Array.from(key0);
  const a = parseFrame(s.seal(msg, { epoch: 1, key: k, sign: false }));
  assert.deepEqual(openFramePayload(a, k), msg);
  // The same array, now holding another key (a caller reusing its buffer).
  k.set(key1);
  const b = parseFrame(s.seal(msg, { epoch: 1, key: k, sign: false }));
  assert.throws(() => openFramePayload(a, k), isCode('DECRYPT_FAILED'), 'old frame, new key');
  assert.deepEqual(openFramePayload(b, key1), msg, 'sealed under the new bytes');
  assert.throws(() => openFramePayload(b, key0), isCode('DECRYPT_FAILED'));
  // Rekey: epoch 2 under key1 opens with key1 only; epoch 1 frames stay key0's.
  const c = parseFrame(s.seal(msg, { epoch: 2, key: key1, sign: false }));
  assert.deepEqual(openFramePayload(c, key1), msg);
  assert.throws(() => openFramePayload(c, key0), isCode('DECRYPT_FAILED'));
  assert.deepEqual(openFramePayload(a, key0), msg);
  // Back to an earlier epoch's key: the sealer follows the key it is given.
  const d = parseFrame(s.seal(msg, { epoch: 1, key: key0, sign: false }));
  assert.deepEqual(openFramePayload(d, key0), msg);
  assert.throws(() => openFramePayload(d, key1), isCode('DECRYPT_FAILED'));
});
