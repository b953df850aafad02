import {
  createPrivateKey,
  createPublicKey,
  randomBytes,
  sign as nodeSign,
  type KeyObject,
} from 'node:crypto';
import nacl from 'tweetnacl';
// nkeys.js installs its tweetnacl helper when its index loads: load it first,
// or it would overwrite ours afterwards.
import 'nkeys.js';
import { setEd25519Helper } from 'nkeys.js/lib/helper.js';
import { x25519 } from '@noble/curves/ed25519.js';
import { toHex } from './bytes.js';
import { ed25519Verify } from './ed25519.js';

const b64url = (b: Uint8Array) => Buffer.from(b).toString('base64url');

/** Bounded memo: entries are cheap to recompute, unbounded growth is not acceptable. */
function memo<V>(max: number): (key: string, make: () => V) => V {
  const m = new Map<string, V>();
  return (key, make) => {
    let v = m.get(key);
    if (v === undefined) {
      if (m.size >= max) m.delete(m.keys().next().value!);
      m.set(key, (v = make()));
    }
    return v;
  };
}

const signingKeys = memo<KeyObject>(256);
const boxKeys = memo<Uint8Array>(1024);
const seedPairs = memo<{ publicKey: Uint8Array; secretKey: Uint8Array }>(256);

// PKCS#8 prefix of an Ed25519 private key (RFC 8410): the seed follows.
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex');

/** The public key of a seed through node:crypto (pure-JS derivation costs ~10 ms here). */
function publicFromSeed(seed: Uint8Array): Uint8Array {
  const priv = createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519, seed]),
    format: 'der',
    type: 'pkcs8',
  });
  const jwk = createPublicKey(priv).export({ format: 'jwk' });
  return new Uint8Array(Buffer.from(jwk.x!, 'base64url'));
}

/**
 * nkeys.js (used by the NATS client for connect signatures and by the auth
 * callout for nkey checks and xkey encryption) defaults to tweetnacl, whose
 * Ed25519 derives the key pair again on every signature: ~40 ms per call on
 * this machine, which made every NATS connect and callout answer slow. This
 * helper keeps the same algorithms and byte formats but signs and verifies
 * with node:crypto (cached KeyObjects) and precomputes each box's shared key
 * once per (peer, key) pair. Installed once, when this package is loaded.
 */
export const fastEd25519Helper = Object.freeze({
  fromSeed(seed: Uint8Array) {
    // nkeys.js calls this on every sign(), getPublicKey() and verify()
    const pair = seedPairs(toHex(seed), () => {
      const publicKey = publicFromSeed(seed);
      const secretKey = new Uint8Array(64);
      secretKey.set(seed, 0);
      secretKey.set(publicKey, 32);
      return { publicKey, secretKey };
    });
    return { publicKey: pair.publicKey.slice(), secretKey: pair.secretKey.slice() };
  },
  sign(data: Uint8Array, secretKey: Uint8Array): Uint8Array {
    const key = signingKeys(toHex(secretKey), () =>
      createPrivateKey({
        key: {
          kty: 'OKP',
          crv: 'Ed25519',
          d: b64url(secretKey.subarray(0, 32)),
          x: b64url(secretKey.subarray(32, 64)),
        },
        format: 'jwk',
      })
    );
    return new Uint8Array(nodeSign(null, data, key));
  },
  verify(data: Uint8Array, sig: Uint8Array, pub: Uint8Array): boolean {
    try {
      return ed25519Verify(pub, data, sig);
    } catch {
      return false;
    }
  },
  randomBytes(len: number): Uint8Array {
    return new Uint8Array(randomBytes(len));
  },
  scalarBaseMultiply(n: Uint8Array): Uint8Array {
    return x25519.getPublicKey(n);
  },
  seal(data: Uint8Array, nonce: Uint8Array, pub: Uint8Array, key: Uint8Array): Uint8Array {
    const shared = boxKeys(toHex(pub) + toHex(key), () => nacl.box.before(pub, key));
    return nacl.box.after(data, nonce, shared);
  },
  open(data: Uint8Array, nonce: Uint8Array, pub: Uint8Array, key: Uint8Array): Uint8Array {
    const shared = boxKeys(toHex(pub) + toHex(key), () => nacl.box.before(pub, key));
    // nkeys.js expects null (not an exception) for a box that does not open
    return nacl.box.open.after(data, nonce, shared) as Uint8Array;
  },
});

setEd25519Helper(fastEd25519Helper);
