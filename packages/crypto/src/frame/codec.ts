import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { assertBytes } from '../bytes.js';
import { ed25519Signer, ed25519Verify, type Ed25519Signer } from '../ed25519.js';
import { FrameError } from './errors.js';

/**
 * Room frame, version 1 (all integers big-endian):
 *
 *   0   1  version (1)
 *   1   1  flags: bit 0 encrypted, bit 1 signed
 *   2  12  room id
 *  14   4  epoch
 *  18  32  sender (Ed25519 public key)
 *  50  16  session (random per sender process)
 *  66   8  seq (1, 2, ... per session)
 *  74   4  payload length N
 *  78   N  payload: ChaCha20-Poly1305 ciphertext + 16-byte tag, or plaintext
 *  78+N 64 Ed25519 signature over bytes [0, 78+N), when signed
 *
 * The 78-byte header is the AEAD's associated data. The key of one sender's
 * session is HKDF-SHA256(epoch key, salt = room || epoch, info = label ||
 * sender || session) and the nonce is 0x00000000 || seq: a session never
 * reuses a seq, and a new process gets a new session, hence a new key, so a
 * (key, nonce) pair can never repeat — even if a sender restarts at seq 1.
 */
export const FRAME_VERSION = 1;
export const FRAME_HEADER_BYTES = 78;
export const FRAME_SIGNATURE_BYTES = 64;
export const FRAME_TAG_BYTES = 16;
export const FRAME_MAX_PAYLOAD =
  1024 * 1024 - FRAME_HEADER_BYTES - FRAME_SIGNATURE_BYTES - FRAME_TAG_BYTES;

const FLAG_ENCRYPTED = 1;
const FLAG_SIGNED = 2;
const HKDF_INFO = new TextEncoder().encode('sealbus/frame/v1');

export interface FrameHeader {
  version: number;
  encrypted: boolean;
  signed: boolean;
  /** Room id, 24 lowercase hex. */
  room: string;
  epoch: number;
  /** Sender's sign_pub, 64 lowercase hex. */
  sender: string;
  /** Session id, 32 lowercase hex. */
  session: string;
  seq: number;
}

/** A structurally valid frame; nothing verified yet. */
export interface ParsedFrame {
  header: FrameHeader;
  /** The header bytes (AEAD associated data). */
  aad: Uint8Array;
  payload: Uint8Array;
  /** Header + payload: what the signature covers. */
  signed: Uint8Array;
  signature: Uint8Array | null;
  senderKey: Uint8Array;
  sessionBytes: Uint8Array;
}

function roomBytes(room: string): Uint8Array {
  if (!/^[0-9a-f]{24}$/.test(room))
    throw new FrameError('MALFORMED', 'room id must be 24 hex characters');
  return new Uint8Array(Buffer.from(room, 'hex'));
}

/**
 * Per-session AEAD keys, cached: HKDF once per (epoch key, room, epoch,
 * sender, session). Looked up by the key array and checked against a copy
 * of its bytes, so an array that later holds another key never finds the
 * subkeys of the one it held before.
 */
const subkeys = new WeakMap<Uint8Array, { bytes: Buffer; byId: Map<string, Buffer> }>();
const SUBKEYS_PER_KEY = 10_000;

function sessionKey(epochKey: Uint8Array, aad: Buffer): Buffer {
  let perKey = subkeys.get(epochKey);
  if (!perKey || !perKey.bytes.equals(epochKey)) {
    perKey = { bytes: Buffer.from(epochKey), byId: new Map() };
    subkeys.set(epochKey, perKey);
  }
  // room(12) + epoch(4) + sender(32) + session(16) identify the session key
  // (one byte per char: a plain string, no copy of the bytes).
  const id = aad.toString('latin1', 2, 66);
  let k = perKey.byId.get(id);
  if (!k) {
    k = deriveSessionKey(perKey.bytes, aad);
    if (perKey.byId.size >= SUBKEYS_PER_KEY) perKey.byId.clear();
    perKey.byId.set(id, k);
  }
  return k;
}

function deriveSessionKey(epochKey: Uint8Array, aad: Uint8Array): Buffer {
  const salt = aad.subarray(2, 18);
  const info = Buffer.concat([HKDF_INFO, aad.subarray(18, 66)]);
  return Buffer.from(hkdfSync('sha256', epochKey, salt, info, 32));
}

/** 0x00000000 || seq; the cipher copies its IV, so one buffer serves every frame. */
const nonce = Buffer.alloc(12);
function nonceFor(seq: number): Buffer {
  nonce.writeUInt32BE(Math.floor(seq / 0x1_0000_0000), 4);
  nonce.writeUInt32BE(seq >>> 0, 8);
  return nonce;
}

export interface SealOptions {
  epoch: number;
  /** The epoch's 32-byte room key; null for an unencrypted room. */
  key: Uint8Array | null;
  sign: boolean;
}

/**
 * Builds frames for one room from one sender process: owns the session id
 * and the sequence counter.
 *
 * @example
 * const sealer = new FrameSealer(roomId, identity.signSeed);
 * nc.publish(subject, sealer.seal(bytes, { epoch, key, sign: true }));
 */
export class FrameSealer {
  readonly room: string;
  readonly session: Uint8Array;
  #seq = 0;
  #roomBytes: Uint8Array;
  #signer: Ed25519Signer;
  /**
   * The header bytes [0, 66) of the last (flags, epoch) sealed under, and
   * the session key of the last epoch key (with a copy of that key's bytes):
   * a frame under the same epoch costs no header encoding and no HKDF.
   */
  #head: { flags: number; epoch: number; bytes: Buffer } | undefined;
  #sub: { epochKey: Buffer; epoch: number; key: Buffer } | undefined;

  constructor(
    room: string,
    signSeed: Uint8Array,
    session: Uint8Array = new Uint8Array(randomBytes(16))
  ) {
    this.room = room;
    this.#roomBytes = roomBytes(room);
    this.#signer = ed25519Signer(signSeed);
    this.session = assertBytes(session, 16, 'session');
  }

  /** The seq the next frame will carry. */
  get nextSeq(): number {
    return this.#seq + 1;
  }

  #header(flags: number, epoch: number): Buffer {
    const h = this.#head;
    if (h && h.flags === flags && h.epoch === epoch) return h.bytes;
    const bytes = Buffer.alloc(66);
    bytes[0] = FRAME_VERSION;
    bytes[1] = flags;
    bytes.set(this.#roomBytes, 2);
    bytes.writeUInt32BE(epoch, 14);
    bytes.set(this.#signer.publicKey, 18);
    bytes.set(this.session, 50);
    this.#head = { flags, epoch, bytes };
    return bytes;
  }

  #sessionKey(epochKey: Uint8Array, epoch: number, aad: Buffer): Buffer {
    const s = this.#sub;
    if (s && s.epoch === epoch && s.epochKey.equals(epochKey)) return s.key;
    const copy = Buffer.from(epochKey);
    const key = deriveSessionKey(copy, aad);
    this.#sub = { epochKey: copy, epoch, key };
    return key;
  }

  seal(payload: Uint8Array, o: SealOptions): Uint8Array {
    if (payload.length > FRAME_MAX_PAYLOAD)
      throw new FrameError('MALFORMED', `payload over ${FRAME_MAX_PAYLOAD} bytes`);
    if (!Number.isInteger(o.epoch) || o.epoch < 0 || o.epoch > 0xffffffff)
      throw new FrameError('MALFORMED', 'bad epoch');
    if (o.key) assertBytes(o.key, 32, 'room key');
    const seq = ++this.#seq;
    const bodyLen = payload.length + (o.key ? FRAME_TAG_BYTES : 0);
    const out = Buffer.allocUnsafe(
      FRAME_HEADER_BYTES + bodyLen + (o.sign ? FRAME_SIGNATURE_BYTES : 0)
    );
    out.set(this.#header((o.key ? FLAG_ENCRYPTED : 0) | (o.sign ? FLAG_SIGNED : 0), o.epoch), 0);
    out.writeUInt32BE(Math.floor(seq / 0x1_0000_0000), 66);
    out.writeUInt32BE(seq >>> 0, 70);
    out.writeUInt32BE(bodyLen, 74);
    const aad = out.subarray(0, FRAME_HEADER_BYTES);
    if (o.key) {
      const c = createCipheriv(
        'chacha20-poly1305',
        this.#sessionKey(o.key, o.epoch, aad),
        nonceFor(seq),
        { authTagLength: FRAME_TAG_BYTES }
      );
      c.setAAD(aad, { plaintextLength: payload.length });
      const n = c.update(payload).copy(out, FRAME_HEADER_BYTES);
      c.final();
      c.getAuthTag().copy(out, FRAME_HEADER_BYTES + n);
    } else {
      out.set(payload, FRAME_HEADER_BYTES);
    }
    if (o.sign) {
      const end = FRAME_HEADER_BYTES + bodyLen;
      out.set(this.#signer.sign(out.subarray(0, end)), end);
    }
    return new Uint8Array(out.buffer, out.byteOffset, out.length);
  }
}

/** Parses the structure of a frame; MALFORMED for anything that does not fit. */
export function parseFrame(bytes: Uint8Array): ParsedFrame {
  if (!(bytes instanceof Uint8Array) || bytes.length < FRAME_HEADER_BYTES) {
    throw new FrameError('MALFORMED', 'frame shorter than its header');
  }
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  if (b[0] !== FRAME_VERSION)
    throw new FrameError('MALFORMED', `unsupported frame version ${b[0]}`);
  const flags = b[1]!;
  if (flags & ~(FLAG_ENCRYPTED | FLAG_SIGNED))
    throw new FrameError('MALFORMED', 'unknown frame flags');
  const signed = (flags & FLAG_SIGNED) !== 0;
  const encrypted = (flags & FLAG_ENCRYPTED) !== 0;
  const bodyLen = b.readUInt32BE(74);
  const expected = FRAME_HEADER_BYTES + bodyLen + (signed ? FRAME_SIGNATURE_BYTES : 0);
  if (b.length !== expected)
    throw new FrameError('MALFORMED', `frame length ${b.length}, header says ${expected}`);
  if (encrypted && bodyLen < FRAME_TAG_BYTES)
    throw new FrameError('MALFORMED', 'ciphertext shorter than its tag');
  // A seq is 1 .. 2^53 - 1: the high word stays below 2^21.
  const seqHigh = b.readUInt32BE(66);
  const seq = seqHigh * 0x1_0000_0000 + b.readUInt32BE(70);
  if (seq < 1 || seqHigh > 0x1f_ffff) throw new FrameError('MALFORMED', 'seq out of range');
  const end = FRAME_HEADER_BYTES + bodyLen;
  return {
    header: {
      version: 1,
      encrypted,
      signed,
      room: b.toString('hex', 2, 14),
      epoch: b.readUInt32BE(14),
      sender: b.toString('hex', 18, 50),
      session: b.toString('hex', 50, 66),
      seq,
    },
    aad: bytes.subarray(0, FRAME_HEADER_BYTES),
    payload: bytes.subarray(FRAME_HEADER_BYTES, end),
    signed: bytes.subarray(0, end),
    signature: signed ? bytes.subarray(end) : null,
    senderKey: bytes.subarray(18, 50),
    sessionBytes: bytes.subarray(50, 66),
  };
}

/** Checks the sender's Ed25519 signature over header and payload. */
export function frameSignatureValid(f: ParsedFrame): boolean {
  return f.signature !== null && ed25519Verify(f.senderKey, f.signed, f.signature);
}

/** Decrypts an encrypted frame's payload with its epoch key; DECRYPT_FAILED on any tampering. */
export function openFramePayload(f: ParsedFrame, epochKey: Uint8Array): Uint8Array {
  if (!f.header.encrypted) return f.payload;
  assertBytes(epochKey, 32, 'room key');
  const p = f.payload;
  const aad = Buffer.from(f.aad.buffer, f.aad.byteOffset, f.aad.length);
  const ctLen = p.length - FRAME_TAG_BYTES;
  try {
    const d = createDecipheriv(
      'chacha20-poly1305',
      sessionKey(epochKey, aad),
      nonceFor(f.header.seq),
      {
        authTagLength: FRAME_TAG_BYTES,
      }
    );
    d.setAAD(aad, { plaintextLength: ctLen });
    d.setAuthTag(p.subarray(ctLen));
    const out = d.update(p.subarray(0, ctLen));
    // Throws unless the tag authenticates; only then is `out` handed out.
    d.final();
    return new Uint8Array(out.buffer, out.byteOffset, out.length);
  } catch {
    throw new FrameError('DECRYPT_FAILED', 'payload does not authenticate under this epoch key');
  }
}
