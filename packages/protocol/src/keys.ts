import { ValidationError } from './errors.js';

const KEY_HEX_RE = /^[0-9a-fA-F]{64}$/;

/**
 * The one validation of a public key given as hex (a user's `sign_pub` or
 * `kex_pub`): exactly 64 hex characters, i.e. 32 bytes, returned lowercase so
 * that one key has exactly one spelling everywhere (KV keys, logs, JSON).
 * Every edge (CLI, HTTP, SDK) calls this.
 */
export function parseKeyHex(value: unknown, field = 'sign_pub'): string {
  if (typeof value !== 'string')
    throw new ValidationError(field, 'must be a string of 64 hex characters');
  if (!KEY_HEX_RE.test(value)) {
    throw new ValidationError(
      field,
      value.length === 64
        ? 'must contain only hex characters 0-9a-f'
        : `must be 64 hex characters (32 bytes), got ${value.length} characters`
    );
  }
  return value.toLowerCase();
}

/** {@link parseKeyHex} for the user's primary key. */
export function parseSignPubHex(value: unknown): string {
  return parseKeyHex(value, 'sign_pub');
}
