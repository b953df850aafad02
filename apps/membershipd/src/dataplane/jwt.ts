import { createHash } from 'node:crypto';

/**
 * The two NATS JWTs the auth callout issues on every connect (the user's
 * and the authorization response), encoded synchronously.
 *
 * nats-jwt (still a dependency, and the oracle in `jwt.test.ts`, which
 * requires these bytes to equal its own for the same claims and second)
 * hashes every claim for its `jti` through WebCrypto's asynchronous digest,
 * a round trip through libuv's thread pool, parses each key again from its
 * string, computes the issuer's private key from its seed for every token,
 * and base64-encodes through `btoa`: together most of a callout's CPU and
 * its worst latency tail. The format is the library's: header
 * `{"typ":"JWT","alg":"ed25519-nkey"}`, the claim's keys in its order,
 * `jti` the standard base64 of SHA-512 over the claim without it, then the
 * Ed25519 signature of `header.claim`. JSON is UTF-8 (nats-jwt's `btoa`
 * would throw on anything outside Latin-1; every value here is ASCII).
 */

/** What signs: the callout's account key (see `fastIssuer`). */
export interface JwtSigner {
  getPublicKey(): string;
  sign(input: Uint8Array): Uint8Array;
}

const HEADER = Buffer.from(JSON.stringify({ typ: 'JWT', alg: 'ed25519-nkey' })).toString(
  'base64url'
);

/**
 * Signs a claim: `iss`, `iat` and the `jti` are added last, in that order,
 * as nats-jwt's `encode` adds them. `claimJson` is the claim so far as JSON
 * (an object, with `nats.version` already in it).
 */
function sign(claimJson: string, issuer: JwtSigner, now: number): string {
  const head = `${claimJson.slice(0, -1)},"iss":${JSON.stringify(issuer.getPublicKey())},"iat":${Math.floor(now / 1000)}`;
  const jti = createHash('sha512').update(`${head}}`, 'utf8').digest('base64');
  const body = Buffer.from(`${head},"jti":"${jti}"}`, 'utf8').toString('base64url');
  const payload = `${HEADER}.${body}`;
  const sig = issuer.sign(Buffer.from(payload, 'ascii'));
  return `${payload}.${Buffer.from(sig.buffer, sig.byteOffset, sig.byteLength).toString('base64url')}`;
}

export interface UserJwtClaims {
  /** The JWT's `name` (the client's own nkey, as nats-server's callout examples name it). */
  name: string;
  /** The user key nats-server sent (`user_nkey` of the request). */
  subject: string;
  /** The account the user is placed in. */
  audience: string;
  /** Expiry, seconds since the epoch. */
  exp: number;
  /**
   * The user's permissions as JSON: `{"pub":…,"sub":…}` (see
   * {@link permissionsJson}), kept by the caller across connects.
   */
  permissionsJson: string;
}

/** `{"pub":{"allow":[…],"deny":[…]},"sub":{…}}`: the permission part of a user JWT. */
export function permissionsJson(perms: {
  pub: { allow: readonly string[]; deny: readonly string[] };
  sub: { allow: readonly string[]; deny: readonly string[] };
}): string {
  return JSON.stringify({
    pub: { allow: perms.pub.allow, deny: perms.pub.deny },
    sub: { allow: perms.sub.allow, deny: perms.sub.deny },
  });
}

/** nats-jwt's `encodeUser(name, subject, issuer, {pub, sub}, {aud, exp})`, byte for byte. */
export function encodeUserJwt(c: UserJwtClaims, issuer: JwtSigner, now = Date.now()): string {
  // {"exp","aud","name","sub","nats":{"data","payload","subs",<pub>,<sub>,"type","version"}}
  const json =
    `{"exp":${Math.floor(c.exp)},"aud":${JSON.stringify(c.audience)},"name":${JSON.stringify(c.name)},` +
    `"sub":${JSON.stringify(c.subject)},"nats":{"data":-1,"payload":-1,"subs":-1,` +
    `${c.permissionsJson.slice(1, -1)},"type":"user","version":2}}`;
  return sign(json, issuer, now);
}

/**
 * nats-jwt's `encodeAuthorizationResponse(user, server, issuer, data)`,
 * byte for byte: the answer to one server's callout request, carrying the
 * user JWT or an error.
 */
export function encodeAuthorizationResponseJwt(
  user: string,
  server: string,
  answer: { jwt: string } | { error: string },
  issuer: JwtSigner,
  now = Date.now()
): string {
  const data = 'jwt' in answer ? { jwt: answer.jwt } : { error: answer.error };
  const json =
    `{"aud":${JSON.stringify(server)},"sub":${JSON.stringify(user)},` +
    `"nats":${JSON.stringify(data).slice(0, -1)},"type":"authorization_response","version":2}}`;
  return sign(json, issuer, now);
}
