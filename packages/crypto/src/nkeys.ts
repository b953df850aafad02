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
 * The NATS user nkey of an Ed25519 seed. The same 32 bytes sign control-plane
 * requests and authenticate to nats-server, so both planes see one identity.
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
