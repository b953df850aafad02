import nacl from 'tweetnacl';
import { blake2b } from '@noble/hashes/blake2.js';
import { assertBytes, concatBytes } from './bytes.js';
import { CryptoError } from './errors.js';
import { X25519_KEY_BYTES } from './x25519.js';

/** Bytes a sealed box adds to its plaintext: ephemeral public key + Poly1305 tag. */
export const SEAL_OVERHEAD = X25519_KEY_BYTES + nacl.box.overheadLength;

function sealNonce(ephemeralPub: Uint8Array, recipientPub: Uint8Array): Uint8Array {
  return blake2b(concatBytes(ephemeralPub, recipientPub), { dkLen: nacl.box.nonceLength });
}

/**
 * Anonymous public-key encryption, byte-compatible with libsodium's
 * `crypto_box_seal`: a fresh X25519 key pair per message, nonce =
 * BLAKE2b-192(ephemeral pk || recipient pk), XSalsa20-Poly1305, output =
 * ephemeral pk || box. Only the holder of the recipient's private key opens it,
 * and the sender cannot be identified from the box.
 *
 * @example
 * const box = seal(roomKey, invitee.kexPub);
 * const key = openSealed(box, invitee.kexPub, invitee.kexPriv);
 */
export function seal(message: Uint8Array, recipientPub: Uint8Array): Uint8Array {
  if (!(message instanceof Uint8Array))
    throw new CryptoError('BAD_KEY', 'message: expected Uint8Array');
  assertBytes(recipientPub, X25519_KEY_BYTES, 'recipient public key');
  const eph = nacl.box.keyPair();
  const box = nacl.box(
    message,
    sealNonce(eph.publicKey, recipientPub),
    recipientPub,
    eph.secretKey
  );
  eph.secretKey.fill(0);
  return concatBytes(eph.publicKey, box);
}

/** Opens a sealed box; a wrong key or any tampering is `OPEN_FAILED`. */
export function openSealed(
  sealed: Uint8Array,
  recipientPub: Uint8Array,
  recipientPriv: Uint8Array
): Uint8Array {
  assertBytes(recipientPub, X25519_KEY_BYTES, 'recipient public key');
  assertBytes(recipientPriv, X25519_KEY_BYTES, 'recipient private key');
  if (!(sealed instanceof Uint8Array) || sealed.length < SEAL_OVERHEAD) {
    throw new CryptoError('BAD_LENGTH', `sealed box: at least ${SEAL_OVERHEAD} bytes expected`);
  }
  const ephPub = sealed.subarray(0, X25519_KEY_BYTES);
  const opened = nacl.box.open(
    sealed.subarray(X25519_KEY_BYTES),
    sealNonce(ephPub, recipientPub),
    ephPub,
    recipientPriv
  );
  if (opened === null)
    throw new CryptoError('OPEN_FAILED', 'sealed box: cannot be opened with this key');
  return opened;
}
