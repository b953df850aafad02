import { CryptoError } from './errors.js';

const HEX_RE = /^(?:[0-9a-fA-F]{2})*$/;

/**
 * Strict hex decoding. `Buffer.from(s, 'hex')` silently stops at the first bad
 * character, which would turn a typo into a different key; this refuses it.
 */
export function fromHex(hex: string, what = 'value', expectedBytes?: number): Uint8Array {
  if (typeof hex !== 'string' || !HEX_RE.test(hex)) {
    throw new CryptoError('BAD_HEX', `${what}: not an even-length hex string`);
  }
  if (expectedBytes !== undefined && hex.length !== expectedBytes * 2) {
    throw new CryptoError(
      'BAD_LENGTH',
      `${what}: expected ${expectedBytes * 2} hex characters, got ${hex.length}`
    );
  }
  return new Uint8Array(Buffer.from(hex, 'hex'));
}

export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** Checks that `value` is a Uint8Array of exactly `length` bytes, naming the argument. */
export function assertBytes(value: unknown, length: number, what: string): Uint8Array {
  if (!(value instanceof Uint8Array)) {
    throw new CryptoError('BAD_KEY', `${what}: expected Uint8Array`);
  }
  if (value.length !== length) {
    throw new CryptoError('BAD_LENGTH', `${what}: expected ${length} bytes, got ${value.length}`);
  }
  return value;
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
