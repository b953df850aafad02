import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import {
  BLOB_CHUNK,
  BlobCorruptError,
  BlobError,
  blobCiphertextSize,
  blobPlaintextSize,
  decodeBlobKey,
  decryptBlob,
  encodeBlobKey,
  encryptBlob,
  newBlobKey,
  parseBlobRef,
  type BlobCiphertext,
  type BlobData,
  type BlobOpenOptions,
} from './blob.js';
import { CryptoError } from './errors.js';

const MiB = 1024 * 1024;
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const isBlobCode = (code: string) => (e: unknown) => e instanceof BlobError && e.code === code;

async function collect(it: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const p of it) parts.push(p);
  return Buffer.concat(parts);
}

async function records(it: AsyncIterable<Uint8Array>): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for await (const p of it) out.push(Uint8Array.from(p));
  return out;
}

/** `bytes` in pieces of `size` (the last shorter). */
async function* inPieces(bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
}

async function seal(data: BlobData, chunk = BLOB_CHUNK, key?: Uint8Array) {
  const s = encryptBlob(data, { chunk, ...(key ? { key } : {}) });
  const ct = await collect(s.ciphertext);
  return { ...s, ct, sealed: await s.done };
}

/**
 * The format, written out again from the doc comment of blob.ts without its
 * code: one createCipheriv per chunk.
 */
function referenceSeal(key: Uint8Array, chunk: number, plain: Uint8Array): Buffer {
  const n = Math.max(1, Math.ceil(plain.length / chunk));
  const size = Buffer.alloc(4);
  size.writeUInt32BE(chunk);
  const aad = Buffer.concat([Buffer.from('sealbus-blob-v1', 'ascii'), size]);
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const nonce = Buffer.alloc(12);
    nonce.writeBigUInt64BE(BigInt(i), 0);
    nonce[11] = i === n - 1 ? 1 : 0;
    const part = plain.subarray(i * chunk, (i + 1) * chunk);
    const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
    c.setAAD(aad, { plaintextLength: part.length });
    out.push(c.update(part), c.final(), c.getAuthTag());
  }
  return Buffer.concat(out);
}

test('ciphertext size: size + 16 per chunk, one empty chunk for 0 bytes; and back', () => {
  assert.equal(blobCiphertextSize(0), 16);
  assert.equal(blobCiphertextSize(1), 17);
  assert.equal(blobCiphertextSize(65535), 65551);
  assert.equal(blobCiphertextSize(65536), 65552);
  assert.equal(blobCiphertextSize(65537), 65569);
  assert.equal(blobCiphertextSize(5 * MiB), 5 * MiB + 80 * 16);
  assert.equal(blobCiphertextSize(2049, 1024), 2049 + 48);
  for (const chunk of [1024, 4096]) {
    for (let size = 0; size < 5 * chunk; size += size < 2 * chunk + 20 ? 1 : 97) {
      assert.equal(blobPlaintextSize(blobCiphertextSize(size, chunk), chunk), size);
    }
  }
  // lengths no writer produces: under a tag, a final record under a tag, an empty final after data
  for (const stored of [0, 15, 1040 + 15, 1040 + 16, 2 * 1040 + 1])
    assert.throws(() => blobPlaintextSize(stored, 1024), isBlobCode('BLOB_CORRUPT'), `${stored}`);
  assert.throws(() => blobCiphertextSize(-1), isBlobCode('BAD_BLOB_REF'));
  assert.throws(() => blobCiphertextSize(1.5), isBlobCode('BAD_BLOB_REF'));
  assert.throws(() => blobCiphertextSize(10, 1000), isBlobCode('BAD_BLOB_REF'));
});

test('known-answer vectors: fixed key and plaintext give frozen ciphertext', async () => {
  const key = Uint8Array.from({ length: 32 }, (_, i) => i);
  const vectors = [
    { chunk: 1024, plain: new Uint8Array(0), hex: '4ae8109451d471cc489dbfc82544495a' },
    {
      chunk: 65536,
      plain: new TextEncoder().encode('sealbus blob'),
      hex: '1a391db5537fcb5a4f1d114dee55f188cae04e9d633ce1d77c190246',
    },
  ];
  for (const v of vectors) {
    assert.equal(referenceSeal(key, v.chunk, v.plain).toString('hex'), v.hex);
    const s = await seal(v.plain, v.chunk, key);
    assert.equal(s.ct.toString('hex'), v.hex);
    assert.equal(s.sealed.hash, sha256(Buffer.from(v.hex, 'hex')));
    const opened = await collect(decryptBlob(Buffer.from(v.hex, 'hex'), { key, chunk: v.chunk }));
    assert.deepEqual(new Uint8Array(opened), v.plain);
  }
  // three chunks of 1024, 1024 and 1 byte: the three tags and the whole hash are frozen
  const plain = Uint8Array.from({ length: 2049 }, (_, i) => (i * 31 + 7) & 0xff);
  const expected = {
    hash: 'ed0f9284e02dde459a86849e611046482bbbd4713de70cff6792fad82f6f008b',
    tags: [
      '4f2947333fc17f2370ba005c59e4d24b',
      '678fd86488adc1526488eeea620089e6',
      '18cc9a06d952ef3664d831b5a61059b3',
    ],
  };
  const tagsOf = (ct: Buffer) =>
    [1024, 2064, 2081].map((off) => ct.subarray(off, off + 16).toString('hex'));
  const reference = referenceSeal(key, 1024, plain);
  assert.equal(sha256(reference), expected.hash);
  assert.deepEqual(tagsOf(reference), expected.tags);
  const s = await seal(plain, 1024, key);
  assert.equal(s.ct.length, 2097);
  assert.equal(s.sealed.hash, expected.hash);
  assert.deepEqual(tagsOf(s.ct), expected.tags);
  assert.deepEqual(s.sealed.ref, {
    hash: expected.hash,
    size: 2049,
    key: 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8',
    chunk: 1024,
  });
});

/** `bytes` in pieces cycling through 1, 7, 64 KiB - 1, 100 KiB and 13 bytes. */
async function* mixedPieces(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  const sizes = [1, 7, 65535, 100 * 1024, 13];
  for (let i = 0, k = 0; i < bytes.length; k++) {
    const n = sizes[k % sizes.length]!;
    yield bytes.subarray(i, i + n);
    i += n;
  }
}

// Byte-sized pieces of 5 MiB are left out: inside node:test every await is
// ~10x dearer than outside (about 10 µs, not 1), so 750,000 7-byte pieces
// would take a minute; the mixed feed crosses every boundary case instead.
test('round trips: 0 B, 1 B, 64 KiB - 1, 64 KiB, 64 KiB + 1, 5 MiB in odd piece sizes', async () => {
  for (const size of [0, 1, 65535, 65536, 65537, 5 * MiB]) {
    const plain = new Uint8Array(randomBytes(size));
    const small = size <= 65537;
    const feeds: [string, () => BlobData][] = [
      ['whole', () => plain],
      ['100 KiB pieces', () => inPieces(plain, 100 * 1024)],
      ['mixed pieces', () => mixedPieces(plain)],
    ];
    if (small)
      feeds.push(
        ['1-byte pieces', () => inPieces(plain, 1)],
        ['7-byte pieces', () => inPieces(plain, 7)]
      );
    let firstKey: Uint8Array | undefined;
    for (const [how, feed] of feeds) {
      const s = encryptBlob(feed());
      const recs = await records(s.ciphertext);
      const ct = Buffer.concat(recs);
      const sealed = await s.done;
      const what = `${size} B, ${how}`;
      // one record per chunk: full ones, then the final one
      const n = Math.max(1, Math.ceil(size / BLOB_CHUNK));
      assert.equal(recs.length, n, what);
      for (const r of recs.slice(0, -1)) assert.equal(r.length, BLOB_CHUNK + 16, what);
      assert.deepEqual(
        { size: sealed.size, stored: sealed.stored, hash: sealed.hash, chunk: s.chunk },
        { size, stored: blobCiphertextSize(size), hash: sha256(ct), chunk: BLOB_CHUNK },
        what
      );
      assert.equal(ct.length, sealed.stored, what);
      assert.notDeepEqual(s.key, firstKey, 'a fresh key per blob');
      firstKey = s.key;
      const ref = parseBlobRef(sealed.ref);
      const inputs = [ct, inPieces(ct, 100 * 1024 + 3), mixedPieces(ct)];
      if (small) inputs.push(inPieces(ct, 7));
      for (const input of inputs) {
        const opened = await collect(decryptBlob(input, ref));
        assert.equal(opened.length, size, what);
        assert.ok(opened.equals(plain), what);
      }
    }
  }
});

test('chunk sizes other than the default round-trip, with the chunk in the ref', async () => {
  const plain = new Uint8Array(randomBytes(3 * MiB + 5));
  for (const chunk of [1024, 4096, 1048576]) {
    const s = await seal(inPieces(plain, 65536 + 17), chunk);
    assert.equal(s.sealed.ref.chunk, chunk);
    assert.equal(s.ct.length, blobCiphertextSize(plain.length, chunk));
    assert.ok((await collect(decryptBlob(s.ct, s.sealed.ref))).equals(plain));
  }
});

test('string input is UTF-8, also across the 1 MiB encoding slices', async () => {
  const texts = [
    '',
    'hello, room',
    'ünïcødé 🙂 '.repeat(1000),
    // a surrogate pair straddling the 1 MiB slice boundary, and a lone surrogate
    'a'.repeat(MiB - 1) + '🙂' + 'b'.repeat(10),
    'x\uD800y',
  ];
  for (const text of texts) {
    const s = await seal(text);
    const opened = await collect(decryptBlob(s.ct, s.sealed.ref));
    assert.ok(opened.equals(Buffer.from(text, 'utf8')));
    assert.equal(s.sealed.size, Buffer.byteLength(text, 'utf8'));
  }
});

test('web ReadableStream input, plaintext and ciphertext', async () => {
  const plain = new Uint8Array(randomBytes(200_000));
  let pulls = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      const off = pulls++ * 30_001;
      if (off >= plain.length) controller.close();
      else controller.enqueue(plain.slice(off, off + 30_001));
    },
  });
  const s = await seal(stream);
  const opened = await collect(
    decryptBlob(ReadableStream.from(inPieces(s.ct, 4099)), s.sealed.ref)
  );
  assert.ok(opened.equals(plain));
});

/** `bytes` in pieces of `size`, all views of one buffer that is scribbled over after each. */
async function* reusing(bytes: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  const buf = new Uint8Array(size);
  for (let off = 0; off < bytes.length; off += size) {
    const n = Math.min(size, bytes.length - off);
    buf.set(bytes.subarray(off, off + n));
    yield buf.subarray(0, n);
    buf.fill(0xee); // the consumer must have copied what it keeps
  }
}

test('a producer that reuses its buffer between pieces still round-trips', async () => {
  const plain = new Uint8Array(randomBytes(300_000));
  for (const piece of [1000, 65536, 65536 * 2 + 5]) {
    const s = await seal(reusing(plain, piece));
    assert.ok((await collect(decryptBlob(s.ct, s.sealed.ref))).equals(plain), `${piece}`);
    const opened = await collect(decryptBlob(reusing(s.ct, piece), s.sealed.ref));
    assert.ok(opened.equals(plain), `ciphertext in ${piece}-byte reused pieces`);
  }
});

test('ciphertext is read once; stopping early cancels the source and fails done', async () => {
  let cancelled = false;
  let n = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.enqueue(new Uint8Array(65536).fill(n++));
    },
    cancel() {
      cancelled = true;
    },
  });
  const s = encryptBlob(stream);
  for await (const _record of s.ciphertext) break;
  assert.equal(cancelled, true);
  await assert.rejects(s.done, isBlobCode('BLOB_INCOMPLETE'));
  assert.throws(() => s.ciphertext[Symbol.asyncIterator](), isBlobCode('BLOB_INCOMPLETE'));
});

test('a failing source fails both the ciphertext stream and done', async () => {
  const boom = new Error('disk gone');
  async function* failing() {
    yield new Uint8Array(70_000);
    throw boom;
  }
  const s = encryptBlob(failing());
  await assert.rejects(collect(s.ciphertext), (e) => e === boom);
  await assert.rejects(s.done, (e) => e === boom);
});

test('bad arguments are refused when called, with typed errors', async () => {
  const key = newBlobKey();
  for (const chunk of [0, 512, 1000, 1536, 2 * MiB, 4096.5, '4096'])
    assert.throws(
      () => encryptBlob('x', { chunk: chunk as number }),
      isBlobCode('BAD_BLOB_REF'),
      `${chunk}`
    );
  assert.throws(
    () => encryptBlob('x', { key: new Uint8Array(31) }),
    (e: unknown) => e instanceof CryptoError && e.code === 'BAD_LENGTH'
  );
  assert.throws(() => encryptBlob('x', { key: 'short' }), isBlobCode('BAD_BLOB_REF'));
  for (const data of [null, undefined, 42, {}, [new Uint8Array(1)]])
    assert.throws(() => encryptBlob(data as unknown as BlobData), isBlobCode('BAD_BLOB_DATA'));
  assert.throws(
    () => decryptBlob('abc' as unknown as BlobCiphertext, { key, chunk: BLOB_CHUNK }),
    isBlobCode('BAD_BLOB_DATA')
  );
  const opts: BlobOpenOptions = { key, chunk: BLOB_CHUNK };
  const ct = new Uint8Array(16);
  assert.throws(() => decryptBlob(ct, { ...opts, chunk: 3000 }), isBlobCode('BAD_BLOB_REF'));
  assert.throws(
    () => decryptBlob(ct, { ...opts, hash: 'AB'.repeat(32) }),
    isBlobCode('BAD_BLOB_REF')
  );
  assert.throws(() => decryptBlob(ct, { ...opts, size: -1 }), isBlobCode('BAD_BLOB_REF'));
  assert.throws(() => decryptBlob(ct, { ...opts, key: new Uint8Array(16) }), CryptoError);
  async function* strings() {
    yield 'text' as unknown as Uint8Array;
  }
  await assert.rejects(collect(encryptBlob(strings()).ciphertext), isBlobCode('BAD_BLOB_DATA'));
});

// ---------------------------------------------------------------------------
// Tampering. The blob: chunk 1024, 4.5 chunks, so records 0..3 are full
// (1040 bytes) and record 4 (528 bytes) is the final one.

const CHUNK = 1024;
const REC = CHUNK + 16;
const tamperKey = newBlobKey();
const tamperPlain = new Uint8Array(randomBytes(4 * CHUNK + 512));
const plainChunk = (i: number) => tamperPlain.subarray(i * CHUNK, (i + 1) * CHUNK);
const sealed = await seal(tamperPlain, CHUNK, tamperKey);
const recs = [0, 1, 2, 3, 4].map((i) => sealed.ct.subarray(i * REC, (i + 1) * REC));
const cat = (...parts: Uint8Array[]) => Buffer.concat(parts);
const flip = (bytes: Uint8Array, at: number) => {
  const b = Buffer.from(bytes);
  b[at]! ^= 0x10;
  return b;
};
assert.equal(recs[4]!.length, 528);

/**
 * Decrypts `ct` (fed in 333-byte pieces unless `whole`) and expects
 * BLOB_CORRUPT after exactly `good` chunks, each the original plaintext: no
 * plaintext of the refused chunk, nor of any after it, came out.
 */
async function refused(
  ct: Uint8Array,
  good: number,
  opts: Partial<BlobOpenOptions> = {},
  whole = false
) {
  const yielded: Uint8Array[] = [];
  let error: unknown;
  try {
    const input = whole ? ct : inPieces(ct, 333);
    for await (const p of decryptBlob(input, { key: tamperKey, chunk: CHUNK, ...opts }))
      yielded.push(Uint8Array.from(p));
  } catch (e) {
    error = e;
  }
  assert.ok(
    error instanceof BlobCorruptError && error.code === 'BLOB_CORRUPT',
    `expected BLOB_CORRUPT, got ${String(error)}`
  );
  assert.equal(yielded.length, good, 'chunks yielded before the refusal');
  yielded.forEach((p, i) => assert.deepEqual(p, plainChunk(i), `chunk ${i} is the original`));
}

test('control: the untampered blob opens, with key, hash and size', async () => {
  const opened = await collect(decryptBlob(inPieces(sealed.ct, 333), sealed.sealed.ref));
  assert.ok(opened.equals(tamperPlain));
});

test('tamper: a flipped bit in the first, a middle, the last chunk or a tag', async () => {
  await refused(cat(flip(recs[0]!, 5), ...recs.slice(1)), 0);
  await refused(cat(recs[0]!, recs[1]!, flip(recs[2]!, 1000), recs[3]!, recs[4]!), 2);
  await refused(cat(...recs.slice(0, 4), flip(recs[4]!, 0)), 4);
  await refused(cat(recs[0]!, flip(recs[1]!, CHUNK + 3), ...recs.slice(2)), 1); // tag byte
  await refused(cat(...recs.slice(0, 4), flip(recs[4]!, 527)), 4); // last tag byte
});

test('tamper: two chunks swapped', async () => {
  await refused(cat(recs[0]!, recs[2]!, recs[1]!, recs[3]!, recs[4]!), 1);
});

test('tamper: a chunk dropped', async () => {
  await refused(cat(recs[0]!, recs[1]!, recs[3]!, recs[4]!), 2);
});

test('tamper: truncated at a chunk boundary (the stream ends on a non-final chunk)', async () => {
  await refused(cat(...recs.slice(0, 4)), 3);
  await refused(cat(...recs.slice(0, 1)), 0);
});

test('tamper: truncated mid-chunk', async () => {
  await refused(sealed.ct.subarray(0, sealed.ct.length - 10), 4);
  await refused(sealed.ct.subarray(0, 2 * REC + 500), 2);
  await refused(sealed.ct.subarray(0, 2 * REC + 15), 2); // less than a tag left
  await refused(sealed.ct.subarray(0, 15), 0);
  await refused(new Uint8Array(0), 0); // nothing at all: no final chunk
});

test('tamper: bytes appended after the final chunk', async () => {
  await refused(cat(sealed.ct, new Uint8Array([0])), 4);
  await refused(cat(sealed.ct, randomBytes(100)), 4);
  await refused(cat(sealed.ct, recs[4]!), 4);
  // a blob whose final chunk is full: it is now read as a non-final chunk
  const full = await seal(tamperPlain.subarray(0, 4 * CHUNK), CHUNK, tamperKey);
  await refused(cat(full.ct, new Uint8Array(1)), 3);
  await refused(cat(full.ct, full.ct.subarray(3 * REC)), 3);
});

test('tamper: the final chunk moved to a different position', async () => {
  await refused(cat(recs[0]!, recs[1]!, recs[4]!), 2);
  await refused(cat(recs[4]!), 0);
});

test('tamper: an empty final chunk after data (well-formed tag, never written) is refused', async () => {
  // Forged with the key through the reference code path: what a buggy writer could produce.
  const aad = Buffer.concat([Buffer.from('sealbus-blob-v1'), Buffer.from([0, 0, 4, 0])]);
  const nonce = Buffer.alloc(12);
  nonce.writeBigUInt64BE(4n, 0);
  nonce[11] = 1;
  const c = createCipheriv('chacha20-poly1305', tamperKey, nonce, { authTagLength: 16 });
  c.setAAD(aad, { plaintextLength: 0 });
  c.final();
  // chunk 3 sealed as not final, so that the forged empty chunk 4 ends the stream
  const n3 = Buffer.alloc(12);
  n3.writeBigUInt64BE(3n, 0);
  const c3 = createCipheriv('chacha20-poly1305', tamperKey, n3, { authTagLength: 16 });
  c3.setAAD(aad, { plaintextLength: CHUNK });
  const rec3 = cat(c3.update(plainChunk(3)), c3.final(), c3.getAuthTag());
  await refused(cat(...recs.slice(0, 3), rec3, c.getAuthTag()), 4);
});

test('tamper: a chunk of another blob under the same key', async () => {
  // (A key never encrypts two blobs; this checks that the index is bound.)
  const otherPlain = new Uint8Array(randomBytes(tamperPlain.length));
  const other = await seal(otherPlain, CHUNK, tamperKey);
  const otherRec = (i: number) => other.ct.subarray(i * REC, (i + 1) * REC);
  await refused(cat(recs[0]!, otherRec(2), ...recs.slice(2)), 1); // its chunk 2 at position 1
  await refused(cat(...recs.slice(0, 3), otherRec(4)), 3); // its final chunk, early
  // At the same position it verifies: only the fresh key per blob rules this
  // out, and the ref's hash catches it.
  const spliced = cat(recs[0]!, otherRec(1), ...recs.slice(2));
  const opened = await collect(decryptBlob(spliced, { key: tamperKey, chunk: CHUNK }));
  assert.ok(opened.subarray(CHUNK, 2 * CHUNK).equals(otherPlain.subarray(CHUNK, 2 * CHUNK)));
  const yielded: Uint8Array[] = [];
  await assert.rejects(async () => {
    const opts = { key: tamperKey, chunk: CHUNK, hash: sealed.sealed.hash };
    for await (const p of decryptBlob(spliced, opts)) yielded.push(p);
  }, isBlobCode('BLOB_CORRUPT'));
  assert.equal(yielded.length, 4, 'the final chunk is held back until the hash matched');
});

test('tamper: wrong key, wrong chunk size', async () => {
  await refused(sealed.ct, 0, { key: newBlobKey() });
  await refused(sealed.ct, 0, { key: encodeBlobKey(newBlobKey()) });
  await refused(sealed.ct, 0, { chunk: 2048 });
  await refused(sealed.ct, 0, { chunk: 4096 });
  // the chunk size is authenticated too: same bytes, a chunk of 1 MiB
  const big = await seal(tamperPlain.subarray(0, 100), CHUNK, tamperKey);
  await assert.rejects(
    collect(decryptBlob(big.ct, { key: tamperKey, chunk: 1048576 })),
    isBlobCode('BLOB_CORRUPT')
  );
});

test('tamper: wrong hash refuses before the final chunk is returned', async () => {
  const wrong = sha256(new Uint8Array([1]));
  await refused(sealed.ct, 4, { hash: wrong });
  const empty = await seal(new Uint8Array(0), CHUNK, tamperKey);
  await assert.rejects(
    collect(decryptBlob(empty.ct, { key: tamperKey, chunk: CHUNK, hash: wrong })),
    isBlobCode('BLOB_CORRUPT')
  );
});

test('tamper: wrong size (longer stream refused as it arrives, shorter at its end)', async () => {
  await refused(sealed.ct, 0, { size: 2048 }, true);
  await refused(sealed.ct, 4, { size: tamperPlain.length + 1 });
  await refused(sealed.ct, 0, { size: tamperPlain.length - 1 }, true);
  await refused(sealed.ct, 4, { size: tamperPlain.length - 1 }); // in pieces: at the last one
  await refused(sealed.ct, 0, { size: 0 }, true);
});

test('tamper: the empty blob', async () => {
  const empty = await seal(new Uint8Array(0), CHUNK, tamperKey);
  assert.equal(empty.ct.length, 16);
  assert.equal((await collect(decryptBlob(empty.ct, empty.sealed.ref))).length, 0);
  for (const bad of [flip(empty.ct, 0), flip(empty.ct, 15), empty.ct.subarray(0, 15)])
    await assert.rejects(
      collect(decryptBlob(bad, { key: tamperKey, chunk: CHUNK })),
      isBlobCode('BLOB_CORRUPT')
    );
});

// ---------------------------------------------------------------------------

test('parseBlobRef: accepts a well-formed ref, returns a clean copy', async () => {
  const s = await seal('hello');
  const ref = { ...s.sealed.ref, name: 'Quarterly report — final.pdf', type: 'application/pdf' };
  assert.deepEqual(parseBlobRef(JSON.parse(JSON.stringify(ref))), ref);
  assert.deepEqual(decodeBlobKey(ref.key), s.key);
  assert.deepEqual(parseBlobRef({ ...ref, name: undefined, type: undefined }), s.sealed.ref);
  for (const type of [
    'image/png',
    'text/plain; charset=utf-8',
    'a/b;x="q v"',
    'application/vnd.x+json',
  ])
    assert.equal(parseBlobRef({ ...ref, type }).type, type);
  assert.equal(parseBlobRef({ ...ref, name: 'é'.repeat(127) }).name!.length, 127);
  assert.equal(parseBlobRef({ ...ref, size: 2 ** 48, chunk: 1048576 }).size, 2 ** 48);
});

test('parseBlobRef: refuses anything out of bounds with BAD_BLOB_REF', async () => {
  const s = await seal('hello');
  const ok = s.sealed.ref;
  const key31 = Buffer.alloc(31).toString('base64url');
  const bad: [string, unknown][] = [
    ['null', null],
    ['array', [ok]],
    ['string', JSON.stringify(ok)],
    ['unknown field', { ...ok, chunks: 1024 }],
    ['no hash', { ...ok, hash: undefined }],
    ['short hash', { ...ok, hash: ok.hash.slice(2) }],
    ['uppercase hash', { ...ok, hash: ok.hash.toUpperCase() }],
    ['non-hex hash', { ...ok, hash: 'g'.repeat(64) }],
    ['negative size', { ...ok, size: -1 }],
    ['fractional size', { ...ok, size: 1.5 }],
    ['huge size', { ...ok, size: 2 ** 48 + 1 }],
    ['string size', { ...ok, size: '5' }],
    ['NaN size', { ...ok, size: NaN }],
    ['no key', { ...ok, key: undefined }],
    ['31-byte key', { ...ok, key: key31 }],
    ['33-byte key', { ...ok, key: Buffer.alloc(33).toString('base64url') }],
    ['padded key', { ...ok, key: ok.key + '=' }],
    ['base64 (not url) key', { ...ok, key: '+'.repeat(42) + 'A' }],
    ['non-canonical key', { ...ok, key: ok.key.slice(0, 42) + 'B' }],
    ['bytes key', { ...ok, key: s.key }],
    ['chunk 0', { ...ok, chunk: 0 }],
    ['chunk 512', { ...ok, chunk: 512 }],
    ['chunk 2 MiB', { ...ok, chunk: 2 * MiB }],
    ['chunk not a power of two', { ...ok, chunk: 65535 }],
    ['chunk string', { ...ok, chunk: '65536' }],
    ['empty name', { ...ok, name: '' }],
    ['long name', { ...ok, name: 'é'.repeat(128) }],
    ['name with newline', { ...ok, name: 'a\nb' }],
    ['name with NUL', { ...ok, name: 'a\u0000b' }],
    ['name with lone surrogate', { ...ok, name: 'a\uD800' }],
    ['number name', { ...ok, name: 5 }],
    ['type without subtype', { ...ok, type: 'image' }],
    ['type with spaces', { ...ok, type: 'image/ png' }],
    ['type with CRLF', { ...ok, type: 'text/plain\r\nX: y' }],
    ['long type', { ...ok, type: 'a/' + 'b'.repeat(300) }],
  ];
  for (const [what, value] of bad)
    assert.throws(() => parseBlobRef(value), isBlobCode('BAD_BLOB_REF'), what);
});

// ---------------------------------------------------------------------------

test(
  'a 200 MiB blob streams through encrypt and decrypt in constant memory',
  { timeout: 300_000 },
  async () => {
    const total = 200 * MiB;
    const piece = 100 * 1024 + 3;
    const block = randomBytes(MiB + piece);
    const inHash = createHash('sha256');
    let rssMax = 0;
    const rss0 = process.memoryUsage().rss;
    // Generated lazily into one reused buffer: never more than a piece exists.
    async function* generate() {
      const buf = Buffer.alloc(piece);
      let n = 0;
      for (let off = 0; off < total; off += piece, n++) {
        const len = Math.min(piece, total - off);
        block.copy(buf, 0, (n * 7919) % MiB, ((n * 7919) % MiB) + len);
        buf.writeUInt32BE(n, 0);
        const view = buf.subarray(0, len);
        inHash.update(view);
        if (n % 64 === 0) rssMax = Math.max(rssMax, process.memoryUsage().rss);
        yield view;
      }
    }
    const t0 = performance.now();
    const s = encryptBlob(generate());
    const outHash = createHash('sha256');
    let size = 0;
    for await (const p of decryptBlob(s.ciphertext, { key: s.key, chunk: s.chunk })) {
      outHash.update(p);
      size += p.length;
    }
    const seconds = (performance.now() - t0) / 1000;
    const sealedInfo = await s.done;
    rssMax = Math.max(rssMax, process.memoryUsage().rss);
    const growth = (rssMax - rss0) / MiB;
    console.log(
      `# blob 200 MiB streamed encrypt+decrypt: ${(200 / seconds).toFixed(0)} MiB/s, ` +
        `rss growth ${growth.toFixed(1)} MiB`
    );
    assert.equal(size, total);
    assert.equal(sealedInfo.size, total);
    assert.equal(sealedInfo.stored, blobCiphertextSize(total));
    assert.equal(outHash.digest('hex'), inHash.digest('hex'));
    assert.ok(growth < 64, `rss grew by ${growth.toFixed(1)} MiB`);
  }
);

test('benchmark: encrypt and decrypt 64 MiB (figures only)', { timeout: 120_000 }, async () => {
  const plain = randomBytes(64 * MiB);
  const t0 = performance.now();
  const s = encryptBlob(plain);
  const ct: Uint8Array[] = [];
  for await (const r of s.ciphertext) ct.push(r);
  const { ref } = await s.done;
  const t1 = performance.now();
  let size = 0;
  async function* stored() {
    yield* ct;
  }
  for await (const p of decryptBlob(stored(), ref)) size += p.length;
  const t2 = performance.now();
  assert.equal(size, plain.length);
  const rate = (ms: number) => (64 / (ms / 1000)).toFixed(0);
  console.log(
    `# blob encrypt ${rate(t1 - t0)} MiB/s, decrypt ${rate(t2 - t1)} MiB/s (64 MiB, hash and size checked)`
  );
});
