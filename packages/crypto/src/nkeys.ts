import { hkdfSync } from 'node:crypto';
import { fromSeed, Prefix } from 'nkeys.js';
// Codec is not re-exported by nkeys.js's index; it is the library's own seed
// encoder, so using it keeps the base32 + CRC16 format in one maintained place.
import { Codec } from 'nkeys.js/lib/codec.js';
import { assertBytes } from './bytes.js';
import { ED25519_SEED_BYTES } from './ed25519.js';

/** A NATS user nkey: public `U...` and seed `SU...`. */
export interface UserNkey {
  readonly publicKey: string;
  readonly seed: string;
}

/**
 * The NATS user nkey of an Ed25519 seed. Never pass an identity's sign seed
 * here: a client's NATS key is `natsUserKey(identity)` (derived), so a
 * signature nats-server asks for can never be a sign-key signature.
 */
export function userNkeyFromSeed(seed: Uint8Array): UserNkey {
  assertBytes(seed, ED25519_SEED_BYTES, 'ed25519 seed');
  const encoded = Codec.encodeSeed(Prefix.User, seed);
  const kp = fromSeed(encoded);
  return { publicKey: kp.getPublicKey(), seed: new TextDecoder().decode(encoded) };
}

/** The `U...` public nkey for a raw Ed25519 public key. */
export function userNkeyFromPublic(pub: Uint8Array): string {
  assertBytes(pub, 32, 'ed25519 public key');
  return new TextDecoder().decode(Codec.encode(Prefix.User, pub));
}

/** The raw Ed25519 public key inside a `U...` nkey. */
export function publicFromUserNkey(nkey: string): Uint8Array {
  return Codec.decode(Prefix.User, new TextEncoder().encode(nkey));
}

export type NkeyKind = 'user' | 'account' | 'curve';

const PREFIX: Record<NkeyKind, Prefix> = {
  user: Prefix.User,
  account: Prefix.Account,
  curve: Prefix.Curve,
};

/** Encodes a raw 32-byte seed as an nkey of the given kind (`SU…`, `SA…`, `SX…`). */
export function nkeySeedFromRaw(kind: NkeyKind, raw: Uint8Array): string {
  assertBytes(raw, 32, `${kind} seed`);
  return new TextDecoder().decode(Codec.encodeSeed(PREFIX[kind], raw));
}

/**
 * Derives an independent 32-byte seed from a master seed and a label
 * (HKDF-SHA256). One identity file can then back several NATS users
 * (the daemon's service and system connections) without more secrets on disk.
 */
export function deriveSeed(master: Uint8Array, label: string): Uint8Array {
  assertBytes(master, 32, 'master seed');
  return new Uint8Array(
    hkdfSync('sha256', master, new Uint8Array(0), new TextEncoder().encode(`sealbus/${label}`), 32)
  );
}
