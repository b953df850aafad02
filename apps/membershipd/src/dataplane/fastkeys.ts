import {
  createPrivateKey,
  createPublicKey,
  randomBytes,
  sign as edSign,
  verify as edVerify,
  type KeyObject,
} from 'node:crypto';
import { Prefix, type KeyPair } from 'nkeys.js';
// nkeys.js's own codec (base32 + CRC16), as @sealbus/crypto uses it.
import { Codec } from 'nkeys.js/lib/codec.js';
import nacl from 'tweetnacl';

/** DER prefix of a PKCS#8 Ed25519 private key; the 32-byte seed follows. */
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex');
/** nkeys.js's xkey message header ("xkv1"), then a 24-byte nonce, then the box. */
const XKV1 = new Uint8Array([120, 107, 118, 49]);
const NONCE = 24;
/** Peers (nats-servers) whose shared curve key is kept; a cluster has a few. */
const SHARED_KEYS = 64;

/**
 * The callout's account key with the same signatures, made by node:crypto
 * (OpenSSL; tweetnacl's pure-JS Ed25519 took most of a callout's time, and
 * nkeys.js recomputes the public key on every `getPublicKey()`, which
 * nats-jwt calls several times per token). Everything else is the pair's own.
 */
export function fastIssuer(kp: KeyPair): KeyPair {
  const { buf } = Codec.decodeSeed(kp.getSeed());
  const key: KeyObject = createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519, Buffer.from(buf)]),
    format: 'der',
    type: 'pkcs8',
  });
  const pub = kp.getPublicKey();
  return {
    getPublicKey: () => pub,
    getPrivateKey: () => kp.getPrivateKey(),
    getSeed: () => kp.getSeed(),
    sign: (input: Uint8Array) => new Uint8Array(edSign(null, input, key)),
    verify: (input: Uint8Array, sig: Uint8Array) => kp.verify(input, sig),
    clear: () => kp.clear(),
    seal: (input: Uint8Array, recipient: string, nonce?: Uint8Array) =>
      kp.seal(input, recipient, nonce),
    open: (message: Uint8Array, sender: string) => kp.open(message, sender),
  };
}

/**
 * The callout's curve key with the same `xkv1` boxes, its public key
 * computed once and the X25519 shared key with each peer kept (the box
 * itself is cheap; the scalar multiplication per message was not).
 */
export function fastCurve(kp: KeyPair): KeyPair {
  const secret = Codec.decodeSeed(kp.getSeed()).buf;
  const pub = kp.getPublicKey();
  const shared = new Map<string, Uint8Array>();
  const sharedWith = (peer: string): Uint8Array => {
    let k = shared.get(peer);
    if (!k) {
      const raw = Codec.decode(Prefix.Curve, new TextEncoder().encode(peer));
      k = nacl.box.before(raw, secret);
      if (shared.size >= SHARED_KEYS) shared.delete(shared.keys().next().value!);
      shared.set(peer, k);
    }
    return k;
  };
  return {
    getPublicKey: () => pub,
    getPrivateKey: () => kp.getPrivateKey(),
    getSeed: () => kp.getSeed(),
    sign: (input: Uint8Array) => kp.sign(input),
    verify: (input: Uint8Array, sig: Uint8Array) => kp.verify(input, sig),
    clear: () => {
      shared.clear();
      kp.clear();
    },
    seal(input: Uint8Array, recipient: string, nonce?: Uint8Array): Uint8Array {
      const n = nonce ?? new Uint8Array(randomBytes(NONCE));
      const box = nacl.box.after(input, n, sharedWith(recipient));
      const out = new Uint8Array(XKV1.length + NONCE + box.length);
      out.set(XKV1, 0);
      out.set(n, XKV1.length);
      out.set(box, XKV1.length + NONCE);
      return out;
    },
    open(message: Uint8Array, sender: string): Uint8Array | null {
      if (message.length <= XKV1.length + NONCE) return null;
      for (let i = 0; i < XKV1.length; i++) if (message[i] !== XKV1[i]) return null;
      const n = message.subarray(XKV1.length, XKV1.length + NONCE);
      return nacl.box.open.after(message.subarray(XKV1.length + NONCE), n, sharedWith(sender));
    },
  };
}

/** DER prefix of an SPKI Ed25519 public key; the 32-byte key follows. */
const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex');

const enc = new TextEncoder();

/** Public keys kept as KeyObjects (a connect's user key, the servers' keys). */
const KEY_OBJECTS = 4096;
const keyObjects = new Map<string, KeyObject | null>();

/** The node:crypto key of a public nkey of this kind (null: not one), kept for the next call. */
function publicKeyObject(kind: 'user' | 'server', nkey: string): KeyObject | null {
  const id = `${kind}:${nkey}`;
  let key = keyObjects.get(id);
  if (key !== undefined) {
    // Most recently used last: the oldest goes first when full.
    keyObjects.delete(id);
    keyObjects.set(id, key);
    return key;
  }
  try {
    const raw = Codec.decode(kind === 'user' ? Prefix.User : Prefix.Server, enc.encode(nkey));
    key =
      raw.length === 32
        ? createPublicKey({
            key: Buffer.concat([SPKI_ED25519, Buffer.from(raw)]),
            format: 'der',
            type: 'spki',
          })
        : null;
  } catch {
    key = null;
  }
  if (keyObjects.size >= KEY_OBJECTS) keyObjects.delete(keyObjects.keys().next().value!);
  keyObjects.set(id, key);
  return key;
}

/**
 * Whether `sig` is the Ed25519 signature of the public nkey (a user's `U…`,
 * or a server's `N…`) over `data`, checked by node:crypto (what nkeys.js
 * `fromPublic(nkey).verify` answers, 10-15x faster). False for a key of
 * another kind, a malformed key or signature; never a throw. The decoded
 * key is kept (a bounded map): a client reconnecting, and every request of
 * one server, skip the decoding.
 */
export function verifyNkey(
  kind: 'user' | 'server',
  nkey: string,
  data: Uint8Array,
  sig: Uint8Array
): boolean {
  try {
    if (sig.length !== 64) return false;
    const key = publicKeyObject(kind, nkey);
    return key !== null && edVerify(null, data, key, sig);
  } catch {
    return false;
  }
}
