import { randomBytes } from 'node:crypto';
import type { BareItem } from 'structured-headers';
import { fromHex } from '../bytes.js';
import type { Identity } from '../types.js';
import { ed25519Signer } from '../ed25519.js';
import { serializeSignatureParams, signatureBase } from './base.js';
import { contentDigest, contentDigestSha256, verifyContentDigest } from './digest.js';
import { SignatureError } from './errors.js';
import { parseSignatureFields } from './parse.js';
import { verifyParsedSignature } from './verify.js';
import type { SignableRequest, SignatureParams } from './types.js';

/**
 * The Sealbus request-signature profile of RFC 9421: Ed25519, label `sig1`,
 * tag `sealbus`, covering method, authority, path and query, plus
 * content-type and content-digest (RFC 9530, sha-256) when there is a body.
 */
export const SEALBUS_PROFILE = Object.freeze({
  label: 'sig1',
  alg: 'ed25519',
  tag: 'sealbus',
  components: Object.freeze(['@method', '@authority', '@path', '@query'] as const),
  bodyComponents: Object.freeze(['content-type', 'content-digest'] as const),
  params: Object.freeze(['created', 'expires', 'nonce', 'keyid', 'alg', 'tag'] as const),
  /** Nonces are base64url of 16..64 random bytes: at least 128 bits. */
  nonceRe: /^[A-Za-z0-9_-]{22,86}$/,
});

export interface VerifyPolicy {
  /** Current time in Unix seconds (default: now). */
  now?: number;
  /** Oldest accepted `created` and longest accepted lifetime, seconds (default 300). */
  maxAgeSec?: number;
  /** Tolerated clock skew for `created` in the future, seconds (default 30). */
  skewSec?: number;
  /**
   * The names this verifier answers to: `@authority` must be one of them
   * (lowercase `host[:port]`, as `SignableRequest.authority`), else
   * WRONG_AUTHORITY. A signature is covered for one deployment; without
   * this check one made for another would be accepted here. Omitted: any.
   */
  authorities?: { has(authority: string): boolean };
}

export interface VerifiedSignature {
  /** The signer's sign_pub (lowercase hex) — verified, not just claimed. */
  keyid: string;
  nonce: string;
  created: number;
  expires: number;
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

/** Reads the claimed keyid without verifying anything (for logging and soft mode). */
export function claimedKeyId(signatureInput: string | undefined): string | null {
  const m = signatureInput && /;keyid="([0-9a-fA-F]{64})"/.exec(signatureInput);
  return m ? m[1]!.toLowerCase() : null;
}

/**
 * Verifies a request against the Sealbus profile; throws SignatureError with
 * a code for the first violation. Stateless: the caller still checks that
 * the key is an active user and that the nonce is fresh (replay).
 */
export function verifyRequestSignature(
  req: SignableRequest,
  body: Uint8Array,
  policy: VerifyPolicy = {}
): VerifiedSignature {
  const sig = verifyHead(req, body.length > 0, policy);
  // The digest field is covered (so untampered); now the body must match it.
  if (body.length > 0 || req.header('content-digest') !== undefined) {
    verifyContentDigest(req.header('content-digest'), body);
  }
  return sig;
}

/**
 * Verifies a request whose body is to be streamed: everything
 * `verifyRequestSignature` checks except the body itself. The body
 * components (`content-type`, `content-digest`) must be covered, and the
 * covered digest's sha-256 bytes are returned so the caller can check the
 * body as it reads it (`contentDigestSha256` parses them). A caller must
 * treat the body as unverified until its digest matched at the end.
 */
export function verifyRequestSignatureHead(
  req: SignableRequest,
  policy: VerifyPolicy = {}
): VerifiedSignature & { digest: Uint8Array } {
  const sig = verifyHead(req, true, policy);
  return { ...sig, digest: contentDigestSha256(req.header('content-digest')) };
}

function verifyHead(
  req: SignableRequest,
  hasBody: boolean,
  policy: VerifyPolicy
): VerifiedSignature {
  const parsed = parseSignatureFields(req.header('signature-input'), req.header('signature'));
  if (parsed.label !== SEALBUS_PROFILE.label)
    throw new SignatureError('BAD_LABEL', `the signature label must be "${SEALBUS_PROFILE.label}"`);
  if (policy.authorities && !policy.authorities.has(req.authority)) {
    throw new SignatureError(
      'WRONG_AUTHORITY',
      `the request is addressed to ${JSON.stringify(req.authority)}, which is not a name of this service`
    );
  }
  const p = parsed.params;
  for (const name of SEALBUS_PROFILE.params) {
    if (!p.has(name))
      throw new SignatureError('PARAMETER_MISSING', `signature parameter "${name}" is required`);
  }
  for (const name of p.keys()) {
    if (!(SEALBUS_PROFILE.params as readonly string[]).includes(name)) {
      throw new SignatureError('SIGNATURE_MALFORMED', `unexpected signature parameter "${name}"`);
    }
  }
  const created = p.get('created');
  const expires = p.get('expires');
  const nonce = p.get('nonce');
  const keyid = p.get('keyid');
  const alg = p.get('alg');
  const tag = p.get('tag');
  if (!isInt(created) || !isInt(expires)) {
    throw new SignatureError('SIGNATURE_MALFORMED', '"created" and "expires" must be integers');
  }
  if (
    typeof nonce !== 'string' ||
    typeof keyid !== 'string' ||
    typeof alg !== 'string' ||
    typeof tag !== 'string'
  ) {
    throw new SignatureError(
      'SIGNATURE_MALFORMED',
      '"nonce", "keyid", "alg" and "tag" must be strings'
    );
  }
  if (alg !== SEALBUS_PROFILE.alg)
    throw new SignatureError('BAD_ALG', `alg must be "${SEALBUS_PROFILE.alg}"`);
  if (tag !== SEALBUS_PROFILE.tag)
    throw new SignatureError('BAD_TAG', `tag must be "${SEALBUS_PROFILE.tag}"`);

  const required: readonly string[] = hasBody
    ? [...SEALBUS_PROFILE.components, ...SEALBUS_PROFILE.bodyComponents]
    : SEALBUS_PROFILE.components;
  for (const c of required) {
    if (!parsed.components.includes(c)) {
      throw new SignatureError('COMPONENT_MISSING', `component "${c}" must be covered`);
    }
  }

  const now = policy.now ?? Math.floor(Date.now() / 1000);
  const maxAge = policy.maxAgeSec ?? 300;
  const skew = policy.skewSec ?? 30;
  if (created > now + skew)
    throw new SignatureError('CREATED_IN_FUTURE', 'signature "created" is in the future');
  if (created < now - maxAge)
    throw new SignatureError('SIGNATURE_TOO_OLD', `signature is older than ${maxAge} s`);
  if (expires <= now) throw new SignatureError('EXPIRED', 'signature has expired');
  if (expires < created || expires - created > maxAge) {
    throw new SignatureError('EXPIRES_TOO_FAR', `signature lifetime must be at most ${maxAge} s`);
  }
  if (!SEALBUS_PROFILE.nonceRe.test(nonce)) {
    throw new SignatureError(
      'NONCE_INVALID',
      'nonce must be base64url of at least 16 random bytes'
    );
  }
  if (!/^[0-9a-fA-F]{64}$/.test(keyid))
    throw new SignatureError('UNKNOWN_KEY', 'keyid must be a 64-hex sign_pub');

  verifyParsedSignature(req, parsed, fromHex(keyid));
  return { keyid: keyid.toLowerCase(), nonce, created, expires };
}

/** What a signer needs: its public key (hex) and a sign function. */
export interface RequestSigner {
  readonly publicKeyHex: string;
  sign(message: Uint8Array): Uint8Array;
}

/** A request signer for an identity (the private key object is built once). */
export function requestSigner(identity: Identity): RequestSigner {
  const signer = ed25519Signer(identity.signSeed);
  return { publicKeyHex: identity.signPubHex, sign: signer.sign };
}

export interface SignRequestInput {
  method: string;
  url: URL;
  /** Content-Type of the body; required with a body. */
  contentType?: string;
  body?: Uint8Array;
  /**
   * A streamed body sent after the headers: its SHA-256 (32 bytes), which the
   * `content-digest` field is made from, instead of `body`. Use when the body
   * is too large to hold (blob uploads); the server checks it as it reads.
   */
  bodySha256?: Uint8Array;
}

export interface SignOptions {
  /** Unix seconds (default: now). */
  now?: number;
  /** Seconds until `expires` (default 60). */
  lifetimeSec?: number;
  /** Override the random nonce (tests only). */
  nonce?: string;
}

/**
 * Signs a request with the Sealbus profile. Returns the header fields to
 * send: `signature-input`, `signature`, and with a body `content-type` and
 * `content-digest`.
 *
 * @example
 * const headers = signRequest(signer, { method: 'GET', url: new URL('http://127.0.0.1:8470/me') });
 */
export function signRequest(
  signer: RequestSigner,
  input: SignRequestInput,
  options: SignOptions = {}
): Record<string, string> {
  const body = input.body ?? new Uint8Array();
  const headers: Record<string, string> = {};
  const hasBody = body.length > 0 || input.bodySha256 !== undefined;
  if (hasBody) {
    if (!input.contentType)
      throw new SignatureError('COMPONENT_MISSING', 'a body needs a content type');
    headers['content-type'] = input.contentType;
    if (input.bodySha256 !== undefined) {
      if (input.bodySha256.length !== 32 || body.length > 0)
        throw new SignatureError('DIGEST_MISMATCH', 'bodySha256: 32 bytes, and no body with it');
      headers['content-digest'] = `sha-256=:${Buffer.from(input.bodySha256).toString('base64')}:`;
    } else headers['content-digest'] = contentDigest(body);
  }
  const components = hasBody
    ? [...SEALBUS_PROFILE.components, ...SEALBUS_PROFILE.bodyComponents]
    : [...SEALBUS_PROFILE.components];
  const created = options.now ?? Math.floor(Date.now() / 1000);
  const params: Array<[keyof SignatureParams, BareItem]> = [
    ['created', created],
    ['expires', created + (options.lifetimeSec ?? 60)],
    ['nonce', options.nonce ?? randomBytes(16).toString('base64url')],
    ['keyid', signer.publicKeyHex],
    ['alg', SEALBUS_PROFILE.alg],
    ['tag', SEALBUS_PROFILE.tag],
  ];
  const paramsText = serializeSignatureParams(components, params);
  const req: SignableRequest = {
    method: input.method.toUpperCase(),
    authority: input.url.host.toLowerCase(),
    path: input.url.pathname,
    query: input.url.search,
    header: (name) => headers[name],
  };
  const sig = signer.sign(Buffer.from(signatureBase(req, components, paramsText), 'utf8'));
  headers['signature-input'] = `${SEALBUS_PROFILE.label}=${paramsText}`;
  headers['signature'] = `${SEALBUS_PROFILE.label}=:${Buffer.from(sig).toString('base64')}:`;
  return headers;
}
