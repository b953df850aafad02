import { createHash, timingSafeEqual } from 'node:crypto';
import { parseDictionary } from 'structured-headers';
import { SignatureError } from './errors.js';

/** RFC 9530 `Content-Digest` value with SHA-256 over the raw body bytes. */
export function contentDigest(body: Uint8Array): string {
  return `sha-256=:${createHash('sha256').update(body).digest('base64')}:`;
}

/**
 * Checks a `Content-Digest` field against the raw body. The `sha-256` member
 * is required (other algorithms may be present and are ignored).
 */
export function verifyContentDigest(field: string | undefined, body: Uint8Array): void {
  const claimed = contentDigestSha256(field);
  const actual = createHash('sha256').update(body).digest();
  if (!sameDigest(claimed, actual)) {
    throw new SignatureError('DIGEST_MISMATCH', 'body does not match its Content-Digest');
  }
}

/** Constant-time comparison of two digests (false when the lengths differ). */
export function sameDigest(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * The 32 bytes of a `Content-Digest` field's required `sha-256` member
 * (DIGEST_MISSING without one, SIGNATURE_MALFORMED when it does not parse).
 */
export function contentDigestSha256(field: string | undefined): Uint8Array {
  if (field === undefined)
    throw new SignatureError('DIGEST_MISSING', 'request has a body but no Content-Digest');
  let dict;
  try {
    dict = parseDictionary(field);
  } catch (cause) {
    throw new SignatureError(
      'SIGNATURE_MALFORMED',
      'Content-Digest is not a structured dictionary',
      { cause }
    );
  }
  const member = dict.get('sha-256');
  if (!member || Array.isArray(member[0]) || !(member[0] instanceof ArrayBuffer)) {
    throw new SignatureError('DIGEST_MISSING', 'Content-Digest has no sha-256 byte sequence');
  }
  const claimed = new Uint8Array(member[0]);
  if (claimed.length !== 32)
    throw new SignatureError('DIGEST_MISMATCH', 'Content-Digest sha-256 is not 32 bytes');
  return claimed;
}
