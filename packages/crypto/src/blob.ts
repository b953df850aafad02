import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createSecretKey,
  type KeyObject,
} from 'node:crypto';
import { assertBytes } from './bytes.js';

/**
 * Encrypted blob, version 1: a streaming chunked AEAD (the STREAM construction
 * of Hoang, Reyhanitabar, Rogaway and Vizár, with ChaCha20-Poly1305, RFC 8439).
 *
 * Parameters: a 32-byte key K, fresh and random per blob (never reused: the
 * nonces below repeat from one blob to the next), and a chunk size C, a power
 * of two from 1024 to 1048576 (65536 by default), recorded in the ref as `chunk`.
 *
 * The plaintext P (S bytes) is cut into n = max(1, ceil(S / C)) chunks
 * P_0 .. P_{n-1}: every chunk but the last has exactly C bytes, the last has
 * 1..C bytes, or 0 bytes when S = 0 (the only case with an empty chunk).
 * Chunk i is sealed as
 *
 *   nonce_i = uint64_be(i) || 00 00 00 || (i = n-1 ? 01 : 00)     12 bytes
 *   aad     = "sealbus-blob-v1" (15 ASCII bytes) || uint32_be(C)   19 bytes
 *   E_i, T_i = ChaCha20-Poly1305-Seal(K, nonce_i, aad, P_i)        |E_i| = |P_i|, |T_i| = 16
 *
 * and the stored ciphertext is E_0 || T_0 || E_1 || T_1 || ... || E_{n-1} || T_{n-1},
 * with no header: records are C + 16 bytes long except the last, so the
 * ciphertext is S + 16n bytes (16 for an empty blob) and S follows from the
 * stored length (`blobPlaintextSize`). The ref's `hash` is the lowercase hex
 * SHA-256 of exactly these bytes.
 *
 * A reader cuts the stream into (C + 16)-byte records; the record that ends
 * the stream is opened with the last flag 01, every other with 00. So chunks
 * cannot be reordered (index in the nonce), dropped or cut off at the end (the
 * record that now ends the stream was sealed with 00), extended (the former
 * last record is now opened with 00), or moved between blobs (another key). A
 * reader refuses a final record shorter than 16 bytes, and an empty final
 * record after other records (a writer never produces one).
 */
export const BLOB_LABEL = 'sealbus-blob-v1';
/** Default plaintext bytes per chunk. */
export const BLOB_CHUNK = 65536;
export const BLOB_CHUNK_MIN = 1024;
export const BLOB_CHUNK_MAX = 1048576;
export const BLOB_KEY_BYTES = 32;
export const BLOB_TAG_BYTES = 16;
/** Largest plaintext a ref may describe (256 TiB): far beyond any store, and safe integer math. */
export const BLOB_MAX_SIZE = 2 ** 48;
/** Longest `name` (UTF-8 bytes) and `type` (characters) a ref may carry. */
export const BLOB_NAME_MAX_BYTES = 255;
export const BLOB_TYPE_MAX_CHARS = 255;

/** Why blob code refused its input. Codes are stable API. */
export type BlobErrorCode =
  /** Ciphertext that does not open: bad tag, truncated, extended, reordered, wrong key, hash or size. */
  | 'BLOB_CORRUPT'
  /** A ref, or a ref field passed as an option (chunk, size, hash, key string), out of bounds. */
  | 'BAD_BLOB_REF'
  /** Input that is not bytes, a string, a ReadableStream or an AsyncIterable of bytes. */
  | 'BAD_BLOB_DATA'
  /** The ciphertext stream was abandoned before its end, so there is no hash to report. */
  | 'BLOB_INCOMPLETE';

export class BlobError extends Error {
  readonly code: BlobErrorCode;

  constructor(code: BlobErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** Any ciphertext refused while decrypting; no plaintext of the refused chunk was returned. */
export class BlobCorruptError extends BlobError {
  declare readonly code: 'BLOB_CORRUPT';

  constructor(message: string) {
    super('BLOB_CORRUPT', message);
  }
}

/**
 * What a room message carries to let members fetch and open a blob. `key` is
 * the blob key, so the ref is as secret as the plaintext.
 */
export interface BlobRef {
  /** Lowercase hex SHA-256 of the stored ciphertext. */
  hash: string;
  /** Plaintext bytes. */
  size: number;
  /** base64url (no padding) of the 32-byte blob key. */
  key: string;
  /** Plaintext bytes per chunk. */
  chunk: number;
  /** Display name, at most 255 UTF-8 bytes, no control characters. */
  name?: string;
  /** Media type, e.g. `image/png` or `text/plain; charset=utf-8`. */
  type?: string;
}

/** Plaintext: bytes, a string (encoded as UTF-8), or a stream of bytes in pieces of any size. */
export type BlobData = Uint8Array | string | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>;
export type BlobCiphertext = Uint8Array | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>;

export interface BlobSealOptions {
  /**
   * Only for tests and known-answer vectors: a key must never encrypt two
   * blobs (the nonces repeat, which breaks ChaCha20-Poly1305 outright).
   * Default: a fresh `newBlobKey()`.
   */
  key?: Uint8Array | string;
  /** Plaintext bytes per chunk; default `BLOB_CHUNK`. */
  chunk?: number;
}

export interface SealedBlob {
  /** Lowercase hex SHA-256 of the whole ciphertext. */
  hash: string;
  /** Plaintext bytes. */
  size: number;
  /** Ciphertext bytes (`blobCiphertextSize(size, chunk)`). */
  stored: number;
  /** The ref to publish (no name or type; add them). */
  ref: BlobRef;
}

export interface SealedBlobStream {
  readonly key: Uint8Array;
  readonly chunk: number;
  /** The ciphertext, one record per piece; iterable once. */
  readonly ciphertext: AsyncIterable<Uint8Array>;
  /**
   * Settles when `ciphertext` has been read: to the hash and sizes at its end,
   * or rejected with the error that ended it (`BLOB_INCOMPLETE` if the reader
   * stopped early).
   */
  readonly done: Promise<SealedBlob>;
}

export interface BlobOpenOptions {
  /** The blob key, as bytes or as the ref's base64url string. */
  key: Uint8Array | string;
  chunk: number;
  /** When given, the ciphertext's SHA-256 must match (checked before the last chunk is returned). */
  hash?: string;
  /** When given, the plaintext must have exactly this many bytes. */
  size?: number;
}

const TAG = BLOB_TAG_BYTES;
const LABEL = Buffer.from(BLOB_LABEL, 'ascii');
const HASH_RE = /^[0-9a-f]{64}$/;
const KEY_RE = /^[A-Za-z0-9_-]{43}$/;
// RFC 6838 type/subtype, then optional `; name=value` parameters (token or quoted string).
const MIME_TOKEN = "[A-Za-z0-9!#$&^_.+'*`|~-]+";
const MIME_RE = new RegExp(
  `^${MIME_TOKEN}/${MIME_TOKEN}(?:[ \\t]*;[ \\t]*${MIME_TOKEN}=(?:${MIME_TOKEN}|"[^"\\\\\\x00-\\x1f\\x7f]*"))*$`
);
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;
const LONE_SURROGATE_RE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

const badRef = (message: string) => new BlobError('BAD_BLOB_REF', message);

/** A fresh random 32-byte blob key. */
export function newBlobKey(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(BLOB_KEY_BYTES));
}

/** The ref's form of a blob key: base64url without padding (43 characters). */
export function encodeBlobKey(key: Uint8Array): string {
  assertBytes(key, BLOB_KEY_BYTES, 'blob key');
  return Buffer.from(key.buffer, key.byteOffset, key.length).toString('base64url');
}

/** Strict inverse of `encodeBlobKey`: exactly 43 base64url characters, canonical. */
export function decodeBlobKey(text: string): Uint8Array {
  if (typeof text !== 'string' || !KEY_RE.test(text))
    throw badRef('key: expected 43 base64url characters (32 bytes)');
  const key = new Uint8Array(Buffer.from(text, 'base64url'));
  // The last character carries 2 spare bits; refuse any but the one spelling.
  if (encodeBlobKey(key) !== text) throw badRef('key: not canonical base64url');
  return key;
}

function checkChunk(chunk: unknown): number {
  if (
    typeof chunk !== 'number' ||
    !Number.isInteger(chunk) ||
    chunk < BLOB_CHUNK_MIN ||
    chunk > BLOB_CHUNK_MAX ||
    (chunk & (chunk - 1)) !== 0
  )
    throw badRef(`chunk: expected a power of two from ${BLOB_CHUNK_MIN} to ${BLOB_CHUNK_MAX}`);
  return chunk;
}

function checkSize(size: unknown): number {
  if (typeof size !== 'number' || !Number.isInteger(size) || size < 0 || size > BLOB_MAX_SIZE)
    throw badRef(`size: expected an integer from 0 to ${BLOB_MAX_SIZE}`);
  return size;
}

function checkHash(hash: unknown): string {
  if (typeof hash !== 'string' || !HASH_RE.test(hash))
    throw badRef('hash: expected 64 lowercase hex characters');
  return hash;
}

function keyBytes(key: unknown): Uint8Array {
  return typeof key === 'string'
    ? decodeBlobKey(key)
    : assertBytes(key, BLOB_KEY_BYTES, 'blob key');
}

/** Ciphertext bytes of a `size`-byte plaintext: `size` + 16 per chunk, at least one chunk. */
export function blobCiphertextSize(size: number, chunk: number = BLOB_CHUNK): number {
  checkSize(size);
  checkChunk(chunk);
  return size === 0 ? TAG : size + TAG * Math.ceil(size / chunk);
}

/** Plaintext bytes of a `stored`-byte ciphertext; `BLOB_CORRUPT` for a length no blob has. */
export function blobPlaintextSize(stored: number, chunk: number = BLOB_CHUNK): number {
  checkChunk(chunk);
  if (!Number.isSafeInteger(stored) || stored < TAG)
    throw new BlobCorruptError(`ciphertext of ${stored} bytes: shorter than one tag`);
  const records = Math.ceil(stored / (chunk + TAG));
  const last = stored - (records - 1) * (chunk + TAG);
  if (last < TAG || (last === TAG && records > 1))
    throw new BlobCorruptError(`ciphertext of ${stored} bytes: not a length chunk ${chunk} yields`);
  return checkSize(stored - TAG * records);
}

function chunkNonce(index: number, last: boolean): Buffer {
  const nonce = Buffer.alloc(12);
  nonce.writeUInt32BE(Math.floor(index / 2 ** 32), 0);
  nonce.writeUInt32BE(index >>> 0, 4);
  nonce[11] = last ? 1 : 0;
  return nonce;
}

function chunkAad(chunk: number): Buffer {
  const aad = Buffer.alloc(LABEL.length + 4);
  LABEL.copy(aad);
  aad.writeUInt32BE(chunk, LABEL.length);
  return aad;
}

function sealChunk(key: KeyObject, aad: Buffer, index: number, last: boolean, plain: Uint8Array) {
  const c = createCipheriv('chacha20-poly1305', key, chunkNonce(index, last), {
    authTagLength: TAG,
  });
  c.setAAD(aad, { plaintextLength: plain.length });
  const out = Buffer.allocUnsafe(plain.length + TAG);
  c.update(plain).copy(out);
  c.final();
  c.getAuthTag().copy(out, plain.length);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/** Opens one record; the plaintext leaves only after its tag verified. */
function openChunk(key: KeyObject, aad: Buffer, index: number, last: boolean, record: Uint8Array) {
  const n = record.length - TAG;
  const d = createDecipheriv('chacha20-poly1305', key, chunkNonce(index, last), {
    authTagLength: TAG,
  });
  d.setAAD(aad, { plaintextLength: n });
  d.setAuthTag(record.subarray(n));
  const plain = d.update(record.subarray(0, n));
  try {
    d.final();
  } catch {
    plain.fill(0);
    throw new BlobCorruptError(
      `chunk ${index}${last ? ' (end of stream)' : ''}: authentication failed ` +
        '(tampered, reordered, truncated, extended, or wrong key)'
    );
  }
  return new Uint8Array(plain.buffer, plain.byteOffset, plain.length);
}

const STRING_SLICE = 1 << 20;

/** Normalises every accepted input to an async sequence of byte pieces. */
async function* pieces(data: BlobData, what: string): AsyncGenerator<Uint8Array, void, undefined> {
  if (data instanceof Uint8Array) {
    yield data;
  } else if (typeof data === 'string') {
    for (let i = 0; i < data.length;) {
      let j = Math.min(i + STRING_SLICE, data.length);
      // Never split a surrogate pair between two slices.
      const c = data.charCodeAt(j - 1);
      if (j < data.length && c >= 0xd800 && c <= 0xdbff) j++;
      yield Buffer.from(data.slice(i, j), 'utf8');
      i = j;
    }
  } else if (isReadableStream(data)) {
    const reader = data.getReader();
    let ended = false;
    try {
      while (true) {
        const r = await reader.read();
        if (r.done) break;
        yield bytesPiece(r.value, what);
      }
      ended = true;
    } finally {
      if (!ended) await reader.cancel().catch(() => undefined);
      reader.releaseLock();
    }
  } else if (isAsyncIterable(data)) {
    for await (const p of data) yield bytesPiece(p, what);
  } else {
    throw new BlobError(
      'BAD_BLOB_DATA',
      `${what}: expected Uint8Array, string, ReadableStream or AsyncIterable`
    );
  }
}

function bytesPiece(p: unknown, what: string): Uint8Array {
  if (!(p instanceof Uint8Array))
    throw new BlobError('BAD_BLOB_DATA', `${what}: a piece is not a Uint8Array`);
  return p;
}

function isReadableStream(x: unknown): x is ReadableStream<Uint8Array> {
  return typeof (x as { getReader?: unknown } | null)?.getReader === 'function';
}

function isAsyncIterable(x: unknown): x is AsyncIterable<Uint8Array> {
  return (
    typeof (x as { [Symbol.asyncIterator]?: unknown } | null)?.[Symbol.asyncIterator] === 'function'
  );
}

function checkData(data: unknown, what: string): void {
  if (
    !(data instanceof Uint8Array) &&
    typeof data !== 'string' &&
    !isReadableStream(data) &&
    !isAsyncIterable(data)
  )
    throw new BlobError(
      'BAD_BLOB_DATA',
      `${what}: expected Uint8Array, string, ReadableStream or AsyncIterable`
    );
}

/**
 * Cuts a byte stream into records of exactly `size` bytes and one final
 * record of 0..size bytes (empty only for an empty stream). A full record is
 * held back until a following byte shows it is not the last. A record is a
 * view valid only until the next one is requested, and holds no reference to
 * an input piece once the next piece is requested (a producer may reuse its
 * buffer). Memory: two records.
 */
async function* records(
  source: AsyncIterable<Uint8Array>,
  size: number
): AsyncGenerator<{ bytes: Uint8Array; last: boolean }, void, undefined> {
  const buf = new Uint8Array(size);
  const hold = new Uint8Array(size);
  let fill = 0;
  let pending: Uint8Array | null = null; // a full record; then fill === 0
  for await (const piece of source) {
    let off = 0;
    while (off < piece.length) {
      if (pending) {
        yield { bytes: pending, last: false };
        pending = null;
      }
      if (fill === 0 && piece.length - off >= size) {
        pending = piece.subarray(off, off + size);
        off += size;
        continue;
      }
      const n = Math.min(size - fill, piece.length - off);
      buf.set(piece.subarray(off, off + n), fill);
      fill += n;
      off += n;
      if (fill === size) {
        pending = buf;
        fill = 0;
      }
    }
    if (pending && pending !== buf && pending !== hold) {
      hold.set(pending);
      pending = hold;
    }
  }
  yield pending ? { bytes: pending, last: true } : { bytes: buf.subarray(0, fill), last: true };
}

/**
 * Encrypts a blob as a stream, in constant memory (about two chunks): the
 * ciphertext is produced as it is read, and its SHA-256 computed on the way.
 * A `Uint8Array` input is read in place: do not modify it until `done`.
 *
 * @example
 * const { ciphertext, done } = encryptBlob(file.stream());
 * await objectStore.put({ name }, ReadableStream.from(ciphertext));
 * const { ref } = await done; // publish { ...ref, name: file.name, type: file.type }
 */
export function encryptBlob(data: BlobData, options: BlobSealOptions = {}): SealedBlobStream {
  checkData(data, 'data');
  const chunk = checkChunk(options.chunk ?? BLOB_CHUNK);
  const key = options.key === undefined ? newBlobKey() : Uint8Array.from(keyBytes(options.key));
  const secret = createSecretKey(key);
  const aad = chunkAad(chunk);

  let settle!: { resolve: (s: SealedBlob) => void; reject: (e: unknown) => void };
  const done = new Promise<SealedBlob>((resolve, reject) => (settle = { resolve, reject }));
  // The error also surfaces through `ciphertext`; a caller need not await `done`.
  done.catch(() => undefined);

  async function* produce(): AsyncGenerator<Uint8Array, void, undefined> {
    const hash = createHash('sha256');
    let index = 0;
    let size = 0;
    let stored = 0;
    let finished = false;
    try {
      for await (const { bytes, last } of records(pieces(data, 'data'), chunk)) {
        size += bytes.length;
        if (size > BLOB_MAX_SIZE)
          throw new BlobError('BAD_BLOB_DATA', `data: over ${BLOB_MAX_SIZE} bytes`);
        const out = sealChunk(secret, aad, index++, last, bytes);
        hash.update(out);
        stored += out.length;
        yield out;
      }
      finished = true;
      const digest = hash.digest('hex');
      settle.resolve({
        hash: digest,
        size,
        stored,
        ref: { hash: digest, size, key: encodeBlobKey(key), chunk },
      });
    } catch (e) {
      settle.reject(e);
      throw e;
    } finally {
      if (!finished)
        settle.reject(new BlobError('BLOB_INCOMPLETE', 'ciphertext: not read to the end'));
    }
  }

  let taken = false;
  const ciphertext: AsyncIterable<Uint8Array> = {
    [Symbol.asyncIterator]() {
      if (taken) throw new BlobError('BLOB_INCOMPLETE', 'ciphertext: can be read only once');
      taken = true;
      return produce();
    },
  };
  return { key, chunk, ciphertext, done };
}

/**
 * Decrypts a blob as a stream, in constant memory (about two chunks), and
 * yields each chunk's plaintext only after its tag verified. Anything wrong
 * — a bad tag, a truncated, extended or reordered stream, the wrong key or
 * chunk size, and, when given, a different size or hash — ends the stream
 * with `BlobCorruptError`. Plaintext already yielded was authentic: each
 * chunk's AEAD authenticates it and its position. The final chunk is held
 * back until the size and hash checks pass, so a stream that completes
 * without error is exactly the blob the ref names. The hash adds nothing to
 * the integrity of the chunks; it binds the ref to the stored object (the
 * server addresses blobs by it).
 *
 * Options are checked when called (`BAD_BLOB_REF`); the stream is read when
 * the result is iterated.
 *
 * @example
 * const ref = parseBlobRef(message.blob);
 * for await (const piece of decryptBlob(await objectStore.get(ref.hash), ref)) out.write(piece);
 */
export function decryptBlob(
  ciphertext: BlobCiphertext,
  options: BlobOpenOptions
): AsyncIterable<Uint8Array> {
  checkData(ciphertext, 'ciphertext');
  if (typeof ciphertext === 'string')
    throw new BlobError('BAD_BLOB_DATA', 'ciphertext: expected bytes, not a string');
  const secret = createSecretKey(keyBytes(options.key));
  const chunk = checkChunk(options.chunk);
  const expectHash = options.hash === undefined ? undefined : checkHash(options.hash);
  const expectSize = options.size === undefined ? undefined : checkSize(options.size);
  const expectStored = expectSize === undefined ? undefined : blobCiphertextSize(expectSize, chunk);
  const aad = chunkAad(chunk);

  return (async function* open(): AsyncGenerator<Uint8Array, void, undefined> {
    const hash = createHash('sha256');
    let stored = 0;
    async function* counted(): AsyncGenerator<Uint8Array, void, undefined> {
      for await (const p of pieces(ciphertext, 'ciphertext')) {
        stored += p.length;
        if (expectStored !== undefined && stored > expectStored)
          throw new BlobCorruptError(
            `ciphertext: longer than the ${expectStored} bytes of a ${expectSize}-byte blob`
          );
        hash.update(p);
        yield p;
      }
    }

    let index = 0;
    let size = 0;
    for await (const { bytes, last } of records(counted(), chunk + TAG)) {
      if (bytes.length < TAG)
        throw new BlobCorruptError(
          index === 0 && bytes.length === 0
            ? 'ciphertext: empty (no final chunk)'
            : `chunk ${index}: ${bytes.length} bytes, shorter than a tag (truncated)`
        );
      if (bytes.length === TAG && index > 0)
        throw new BlobCorruptError(`chunk ${index}: empty final chunk after data`);
      const plain = openChunk(secret, aad, index, last, bytes);
      size += plain.length;
      if (last) {
        if (expectSize !== undefined && size !== expectSize)
          throw new BlobCorruptError(`plaintext: ${size} bytes, the ref says ${expectSize}`);
        // Every chunk is already authenticated; this binds the ref to the stored object.
        if (expectHash !== undefined && hash.digest('hex') !== expectHash)
          throw new BlobCorruptError('ciphertext: SHA-256 differs from the ref hash');
      }
      index++;
      yield plain;
    }
  })();
}

function shortText(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length === 0)
    throw badRef(`${field}: expected a non-empty string`);
  if (CONTROL_RE.test(value) || LONE_SURROGATE_RE.test(value))
    throw badRef(`${field}: control characters or unpaired surrogates`);
  return value;
}

const REF_FIELDS = new Set(['hash', 'size', 'key', 'chunk', 'name', 'type']);

/**
 * Validates a ref received in a message (untrusted JSON) and returns a clean
 * copy: `BAD_BLOB_REF` naming the field for anything out of bounds, including
 * unknown fields (a misspelt `chunk` must not fall back to a default).
 *
 * @example
 * const ref = parseBlobRef(JSON.parse(text).blob);
 */
export function parseBlobRef(value: unknown): BlobRef {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw badRef('blob ref: expected an object');
  const v = value as Record<string, unknown>;
  for (const k of Object.keys(v)) if (!REF_FIELDS.has(k)) throw badRef(`${k}: unknown field`);
  const key = v.key;
  decodeBlobKey(key as string);
  const ref: BlobRef = {
    hash: checkHash(v.hash),
    size: checkSize(v.size),
    key: key as string,
    chunk: checkChunk(v.chunk),
  };
  if (v.name !== undefined) {
    const name = shortText(v.name, 'name');
    if (Buffer.byteLength(name, 'utf8') > BLOB_NAME_MAX_BYTES)
      throw badRef(`name: over ${BLOB_NAME_MAX_BYTES} UTF-8 bytes`);
    ref.name = name;
  }
  if (v.type !== undefined) {
    const type = shortText(v.type, 'type');
    if (type.length > BLOB_TYPE_MAX_CHARS || !MIME_RE.test(type))
      throw badRef('type: expected a media type such as image/png');
    ref.type = type;
  }
  return ref;
}
