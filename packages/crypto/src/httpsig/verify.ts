import { ed25519Verify } from '../ed25519.js';
import { signatureBase } from './base.js';
import { SignatureError } from './errors.js';
import { parseSignatureFields, type ParsedSignature } from './parse.js';
import type { SignableRequest } from './types.js';

/** Checks the Ed25519 signature of an already parsed signature over `req`. */
export function verifyParsedSignature(
  req: SignableRequest,
  parsed: ParsedSignature,
  publicKey: Uint8Array
): void {
  const base = signatureBase(req, parsed.components, parsed.paramsText);
  if (!ed25519Verify(publicKey, Buffer.from(base, 'utf8'), parsed.signature)) {
    throw new SignatureError('BAD_SIGNATURE', 'signature does not verify');
  }
}

/**
 * Generic RFC 9421 verification with Ed25519 for a given list of components
 * that must be covered; no parameter policy. The Sealbus profile adds its
 * policy on top; this form exists for other profiles and the RFC's own
 * examples.
 */
export function verifyHttpSignature(
  req: SignableRequest,
  options: { requiredComponents: readonly string[]; publicKey: Uint8Array }
): ParsedSignature {
  const parsed = parseSignatureFields(req.header('signature-input'), req.header('signature'));
  for (const c of options.requiredComponents) {
    if (!parsed.components.includes(c))
      throw new SignatureError('COMPONENT_MISSING', `component "${c}" must be covered`);
  }
  verifyParsedSignature(req, parsed, options.publicKey);
  return parsed;
}
