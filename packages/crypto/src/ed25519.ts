import {
  createPrivateKey,
  createPublicKey,
  sign as nodeSign,
  verify as nodeVerify,
  randomBytes,
  type KeyObject,
} from 'node:crypto';
import { ed25519 } from '@noble/curves/ed25519.js';
import { assertBytes, toHex } from './bytes.js';
import { CryptoError } from './errors.js';

export const ED25519_SEED_BYTES = 32;
export const ED25519_PUBLIC_BYTES = 32;
export const ED25519_SIGNATURE_BYTES = 64;

const b64url = (b: Uint8Array) => Buffer.from(b).toString('base64url');

/** Derives the Ed25519 public key of a 32-byte seed (RFC 8032 section 5.1.5). */
export function ed25519PublicFromSeed(seed: Uint8Array): Uint8Array {
  assertBytes(seed, ED25519_SEED_BYTES, 'ed25519 seed');
  return ed25519.getPublicKey(seed);
}

export function ed25519GenerateSeed(): Uint8Array {
  return new Uint8Array(randomBytes(ED25519_SEED_BYTES));
}

/**
 * node:crypto verifies 10-15x faster than pure JS, but importing a raw key is
 * as expensive as the verification itself, so KeyObjects are cached per key.
 * The cache is bounded: it holds public keys only, and a hostile caller naming
 * fresh keys can only evict, never grow it.
 */
const PUBLIC_CACHE_MAX = 4096;
const publicCache = new Map<string, KeyObject>();

function publicKeyObject(pub: Uint8Array): KeyObject {
  const id = toHex(pub);
  let key = publicCache.get(id);
  if (key === undefined) {
    try {
      key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64url(pub) }, format: 'jwk' });
    } catch (cause) {
      throw new CryptoError('BAD_KEY', 'ed25519 public key: not a valid point', { cause });
    }
    if (publicCache.size >= PUBLIC_CACHE_MAX) {
      const oldest = publicCache.keys().next().value;
      if (oldest !== undefined) publicCache.delete(oldest);
    }
    publicCache.set(id, key);
  }
  return key;
}

/** A signer bound to one seed; the private KeyObject is built once. */
export interface Ed25519Signer {
  readonly publicKey: Uint8Array;
  sign(message: Uint8Array): Uint8Array;
}

export function ed25519Signer(seed: Uint8Array): Ed25519Signer {
  const publicKey = ed25519PublicFromSeed(seed);
  const key = createPrivateKey({
    key: { kty: 'OKP', crv: 'Ed25519', d: b64url(seed), x: b64url(publicKey) },
    format: 'jwk',
  });
  return {
    publicKey,
    sign: (message) => new Uint8Array(nodeSign(null, message, key)),
  };
}

/** One-shot signing; prefer {@link ed25519Signer} when signing repeatedly. */
export function ed25519Sign(seed: Uint8Array, message: Uint8Array): Uint8Array {
  return ed25519Signer(seed).sign(message);
}

/**
 * Verifies an Ed25519 signature. Returns false for a bad signature; throws
 * `CryptoError` only for arguments of the wrong shape, so callers can tell a
 * forgery from a programming error.
 */
export function ed25519Verify(
  publicKey: Uint8Array,
  message: Uint8Array,
  signature: Uint8Array
): boolean {
  assertBytes(publicKey, ED25519_PUBLIC_BYTES, 'ed25519 public key');
  if (!(signature instanceof Uint8Array) || signature.length !== ED25519_SIGNATURE_BYTES) {
    return false;
  }
  return nodeVerify(null, message, publicKeyObject(publicKey), signature);
}
