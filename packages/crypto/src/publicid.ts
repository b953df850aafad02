import { concatBytes, toHex } from './bytes.js';
import { KEY_BINDING_BYTES, signKeyBinding, verifyKeyBinding } from './binding.js';
import { CryptoError } from './errors.js';
import type { Identity } from './types.js';

/** Prefix of a public identity token. A contract. */
export const PUBLIC_TOKEN_PREFIX = 'sbid1.';
/** sign_pub (32) || kex_pub (32) || nats_pub (32) || binding (64). */
export const PUBLIC_TOKEN_BYTES = 32 * 3 + KEY_BINDING_BYTES;

/** The public half of an identity, with its binding: what a token carries. */
export interface PublicIdentity {
  readonly signPub: Uint8Array;
  readonly kexPub: Uint8Array;
  readonly natsPub: Uint8Array;
  readonly binding: Uint8Array;
  readonly signPubHex: string;
  readonly kexPubHex: string;
  readonly natsPubHex: string;
  readonly bindingHex: string;
}

function publicIdentity(
  signPub: Uint8Array,
  kexPub: Uint8Array,
  natsPub: Uint8Array,
  binding: Uint8Array
): PublicIdentity {
  return Object.freeze({
    signPub,
    kexPub,
    natsPub,
    binding,
    signPubHex: toHex(signPub),
    kexPubHex: toHex(kexPub),
    natsPubHex: toHex(natsPub),
    bindingHex: toHex(binding),
  });
}

/** An identity's public keys and a fresh binding over them. */
export function publicIdentityOf(identity: Identity): PublicIdentity {
  return publicIdentity(
    identity.signPub,
    identity.kexPub,
    identity.natsPub,
    signKeyBinding(identity)
  );
}

/**
 * The public identity token: `sbid1.` + base64url (no padding) of
 * `sign_pub || kex_pub || nats_pub || binding` (160 bytes). Safe to share.
 *
 * @example
 * const token = encodePublicIdentity(publicIdentityOf(identity)); // "sbid1.…"
 */
export function encodePublicIdentity(p: PublicIdentity | Identity): string {
  const full = 'binding' in p ? p : publicIdentityOf(p);
  const raw = concatBytes(full.signPub, full.kexPub, full.natsPub, full.binding);
  if (raw.length !== PUBLIC_TOKEN_BYTES)
    throw new CryptoError('BAD_LENGTH', `public identity: expected ${PUBLIC_TOKEN_BYTES} bytes`);
  return PUBLIC_TOKEN_PREFIX + Buffer.from(raw).toString('base64url');
}

const B64URL_RE = /^[A-Za-z0-9_-]*$/;
const TOKEN_CHARS = Math.ceil((PUBLIC_TOKEN_BYTES * 4) / 3);

/**
 * Parses a public identity token and verifies its binding. Errors are
 * `CryptoError` with code `BAD_TOKEN` (prefix, alphabet, padding or length)
 * or `BAD_BINDING` (the binding is not sign_pub's signature over the keys).
 */
export function parsePublicIdentity(token: unknown): PublicIdentity {
  if (typeof token !== 'string' || !token.startsWith(PUBLIC_TOKEN_PREFIX)) {
    throw new CryptoError(
      'BAD_TOKEN',
      `public identity token must start with "${PUBLIC_TOKEN_PREFIX}"`
    );
  }
  const body = token.slice(PUBLIC_TOKEN_PREFIX.length);
  if (!B64URL_RE.test(body)) {
    throw new CryptoError('BAD_TOKEN', 'public identity token: not base64url without padding');
  }
  if (body.length !== TOKEN_CHARS) {
    throw new CryptoError(
      'BAD_TOKEN',
      `public identity token: expected ${TOKEN_CHARS} base64url characters (${PUBLIC_TOKEN_BYTES} bytes), got ${body.length}`
    );
  }
  const raw = new Uint8Array(Buffer.from(body, 'base64url'));
  // One spelling per token: the unused low bits of the last character must be zero.
  if (raw.length !== PUBLIC_TOKEN_BYTES || Buffer.from(raw).toString('base64url') !== body) {
    throw new CryptoError('BAD_TOKEN', 'public identity token: not canonical base64url');
  }
  const p = publicIdentity(
    raw.slice(0, 32),
    raw.slice(32, 64),
    raw.slice(64, 96),
    raw.slice(96, PUBLIC_TOKEN_BYTES)
  );
  if (!verifyKeyBinding(p, p.binding)) {
    throw new CryptoError(
      'BAD_BINDING',
      'public identity token: the binding is not a signature of sign_pub over its keys'
    );
  }
  return p;
}
