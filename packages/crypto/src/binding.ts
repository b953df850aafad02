import { assertBytes, concatBytes } from './bytes.js';
import {
  ED25519_PUBLIC_BYTES,
  ED25519_SIGNATURE_BYTES,
  ed25519Sign,
  ed25519Verify,
} from './ed25519.js';
import { X25519_KEY_BYTES } from './x25519.js';

/** Domain label of a key binding (ASCII). A contract. */
export const KEY_BINDING_LABEL = 'sealbus-key-binding-v1';
export const KEY_BINDING_BYTES = ED25519_SIGNATURE_BYTES;

// Never handed out: concatBytes copies it, so nobody can mutate the label.
const LABEL = new TextEncoder().encode(KEY_BINDING_LABEL);

/** The public keys a binding ties together, raw 32 bytes each. */
export interface BoundKeys {
  readonly signPub: Uint8Array;
  readonly kexPub: Uint8Array;
  readonly natsPub: Uint8Array;
}

/** `"sealbus-key-binding-v1" || sign_pub || kex_pub || nats_pub`: what the sign key signs. */
export function keyBindingMessage(keys: BoundKeys): Uint8Array {
  return concatBytes(
    LABEL,
    assertBytes(keys.signPub, ED25519_PUBLIC_BYTES, 'sign_pub'),
    assertBytes(keys.kexPub, X25519_KEY_BYTES, 'kex_pub'),
    assertBytes(keys.natsPub, ED25519_PUBLIC_BYTES, 'nats_pub')
  );
}

/**
 * Signs a key binding with the identity's sign seed: the user's own
 * statement that these kex and NATS keys are its, so nobody (the daemon
 * included) can substitute either.
 *
 * @example
 * const binding = signKeyBinding(identity); // 64 bytes
 */
export function signKeyBinding(
  identity: BoundKeys & { readonly signSeed: Uint8Array }
): Uint8Array {
  return ed25519Sign(identity.signSeed, keyBindingMessage(identity));
}

/**
 * True when `binding` is sign_pub's signature over these keys. Keys of the
 * wrong length throw `CryptoError` (a programming error, naming the
 * argument); a wrong or malformed binding is just false.
 */
export function verifyKeyBinding(keys: BoundKeys, binding: Uint8Array): boolean {
  const message = keyBindingMessage(keys);
  if (!(binding instanceof Uint8Array) || binding.length !== KEY_BINDING_BYTES) return false;
  try {
    return ed25519Verify(keys.signPub, message, binding);
  } catch {
    // sign_pub that is not a curve point: nothing it "signed" verifies
    return false;
  }
}
