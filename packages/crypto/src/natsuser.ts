import { hkdfSync } from 'node:crypto';
import { assertBytes } from './bytes.js';
import { ED25519_SEED_BYTES } from './ed25519.js';
import { userNkeyFromSeed, type UserNkey } from './nkeys.js';

/**
 * HKDF `info` of the NATS user key. A contract: every client, in any
 * language, derives the same key from the same identity.
 */
export const NATS_USER_INFO = 'sealbus/nats-user/v1';

/**
 * The Ed25519 seed an identity authenticates to NATS with:
 * `HKDF-SHA256(ikm = sign seed, salt = empty, info = "sealbus/nats-user/v1", L = 32)`.
 *
 * Never the sign key itself: a NATS server chooses the nonce its clients
 * sign, so a rogue server could otherwise collect a sign-key signature over
 * any bytes (an HTTP signature base included) and replay it.
 *
 * @example
 * const nkey = userNkeyFromSeed(natsUserSeed(identity.signSeed)); // U… / SU…
 */
export function natsUserSeed(signSeed: Uint8Array): Uint8Array {
  assertBytes(signSeed, ED25519_SEED_BYTES, 'sign seed');
  return new Uint8Array(
    hkdfSync('sha256', signSeed, new Uint8Array(0), new TextEncoder().encode(NATS_USER_INFO), 32)
  );
}

/**
 * The NATS user nkey (`U…` public, `SU…` seed) of an identity: the only key
 * a Sealbus client presents to nats-server. The seed is a secret.
 *
 * @example
 * nkeyAuthenticator(new TextEncoder().encode(natsUserKey(identity).seed))
 */
export function natsUserKey(identity: { readonly signSeed: Uint8Array }): UserNkey {
  return userNkeyFromSeed(natsUserSeed(identity.signSeed));
}
