import { createHash, createHmac } from 'node:crypto';
import { assertBytes, concatBytes, fromHex, toHex } from './bytes.js';
import {
  ED25519_PUBLIC_BYTES,
  ED25519_SIGNATURE_BYTES,
  ed25519Sign,
  ed25519Verify,
} from './ed25519.js';

/** Domain label of a room statement signature (ASCII). A contract. */
export const ROOM_STATEMENT_LABEL = 'sealbus-room-statement-v1';
/** Label of an epoch key's commitment (ASCII). A contract. */
export const KEY_COMMITMENT_LABEL = 'sealbus-key-commitment-v1';
/** Label that starts a fingerprint's hash chain (ASCII). A contract. */
export const FINGERPRINT_LABEL = 'sealbus-fingerprint-v1';
/** Rounds of SHA-512 in a fingerprint: makes a search for a colliding key costlier. */
export const FINGERPRINT_ROUNDS = 5200;

const enc = new TextEncoder();
const STATEMENT_LABEL_BYTES = enc.encode(ROOM_STATEMENT_LABEL);

/** `"sealbus-room-statement-v1" || canonical JSON`: what the owner's sign key signs. */
export function roomStatementMessage(canonicalJson: string): Uint8Array {
  return concatBytes(STATEMENT_LABEL_BYTES, enc.encode(canonicalJson));
}

/** The owner's signature over a statement's canonical JSON, as 128 hex characters. */
export function signRoomStatement(signSeed: Uint8Array, canonicalJson: string): string {
  return toHex(ed25519Sign(signSeed, roomStatementMessage(canonicalJson)));
}

/**
 * True when `sigHex` is `ownerPub`'s signature over the statement. A
 * malformed signature or key is false, never an exception: these come
 * from the control plane, which may lie.
 */
export function verifyRoomStatement(
  ownerPubHex: string,
  canonicalJson: string,
  sigHex: string
): boolean {
  try {
    const pub = fromHex(ownerPubHex, 'owner', ED25519_PUBLIC_BYTES);
    const sig = fromHex(sigHex, 'sig', ED25519_SIGNATURE_BYTES);
    return ed25519Verify(pub, roomStatementMessage(canonicalJson), sig);
  } catch {
    return false;
  }
}

/** `prev` of the next statement: hex SHA-256 of this statement's canonical JSON (UTF-8). */
export function roomStatementHash(canonicalJson: string): string {
  return createHash('sha256').update(canonicalJson, 'utf8').digest('hex');
}

/** `HMAC-SHA256(key = epoch key, message = "sealbus-key-commitment-v1")`, hex. */
export function keyCommitment(roomKey: Uint8Array): string {
  assertBytes(roomKey, 32, 'room key');
  return createHmac('sha256', roomKey).update(KEY_COMMITMENT_LABEL, 'ascii').digest('hex');
}

/**
 * A sign key's fingerprint, to compare out of band: 60 decimal digits in
 * 12 groups of 5. `h0 = SHA-512("sealbus-fingerprint-v1" || sign_pub)`,
 * `h(i+1) = SHA-512(h(i) || sign_pub)` for 5200 rounds in all; the 60
 * first bytes of the last hash are read as 12 big-endian 40-bit numbers,
 * each taken mod 100000 and written with 5 digits.
 */
export function fingerprint(signPub: Uint8Array | string): string {
  const pub =
    typeof signPub === 'string'
      ? fromHex(signPub, 'sign_pub', ED25519_PUBLIC_BYTES)
      : assertBytes(signPub, ED25519_PUBLIC_BYTES, 'sign_pub');
  let h = createHash('sha512').update(enc.encode(FINGERPRINT_LABEL)).update(pub).digest();
  for (let i = 1; i < FINGERPRINT_ROUNDS; i++)
    h = createHash('sha512').update(h).update(pub).digest();
  const groups: string[] = [];
  for (let g = 0; g < 12; g++) {
    let n = 0;
    for (let b = 0; b < 5; b++) n = n * 256 + h[g * 5 + b]!;
    groups.push(String(n % 100_000).padStart(5, '0'));
  }
  return groups.join(' ');
}
