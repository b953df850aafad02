import { randomBytes } from 'node:crypto';
import { x25519 } from '@noble/curves/ed25519.js';
import { assertBytes } from './bytes.js';

export const X25519_KEY_BYTES = 32;

export function x25519GeneratePrivate(): Uint8Array {
  return new Uint8Array(randomBytes(X25519_KEY_BYTES));
}

/** The X25519 public key of a private scalar (RFC 7748 section 6.1). */
export function x25519PublicFromPrivate(priv: Uint8Array): Uint8Array {
  assertBytes(priv, X25519_KEY_BYTES, 'x25519 private key');
  return x25519.getPublicKey(priv);
}

/** Raw X25519 shared secret; callers must hash it before use as a key. */
export function x25519SharedSecret(priv: Uint8Array, pub: Uint8Array): Uint8Array {
  assertBytes(priv, X25519_KEY_BYTES, 'x25519 private key');
  assertBytes(pub, X25519_KEY_BYTES, 'x25519 public key');
  return x25519.getSharedSecret(priv, pub);
}
