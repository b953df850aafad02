import { test } from 'node:test';
import assert from 'node:assert/strict';
import { httpbis } from 'http-message-signatures';
import { ed25519Signer } from '../ed25519.js';
import { generateIdentity } from '../identity.js';
import { signatureBase } from './base.js';
import { contentDigest } from './digest.js';
import { SignatureError } from './errors.js';
import { parseSignatureFields } from './parse.js';
import { requestSigner, signRequest, verifyRequestSignature } from './profile.js';
import type { SignableRequest } from './types.js';
import { verifyHttpSignature } from './verify.js';

/** A SignableRequest as a server would see it. */
function request(method: string, url: string, headers: Record<string, string>): SignableRequest {
  const u = new URL(url);
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  return { method, authority: u.host, path: u.pathname, query: u.search, header: (n) => lower[n] };
}

const isCode = (code: string) => (e: unknown) => e instanceof SignatureError && e.code === code;

test('RFC 9421 Appendix B.2.6: the Ed25519 example verifies with its component list', () => {
  // B.1.4 test-key-ed25519, public half (JWK "x").
  const pub = new Uint8Array(
    Buffer.from('JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs', 'base64url')
  );
  const req = request('POST', 'http://example.com/foo?param=Value&Pet=dog', {
    Host: 'example.com',
    Date: 'Tue, 20 Apr 2021 02:07:55 GMT',
    'Content-Type': 'application/json',
    'Content-Digest':
      'sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:',
    'Content-Length': '18',
    'Signature-Input':
      'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"',
    Signature:
      'sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:',
  });
  const components = ['date', '@method', '@path', '@authority', 'content-type', 'content-length'];
  const parsed = verifyHttpSignature(req, { requiredComponents: components, publicKey: pub });
  assert.equal(parsed.label, 'sig-b26');
  assert.equal(
    signatureBase(req, parsed.components, parsed.paramsText),
    [
      '"date": Tue, 20 Apr 2021 02:07:55 GMT',
      '"@method": POST',
      '"@path": /foo',
      '"@authority": example.com',
      '"content-type": application/json',
      '"content-length": 18',
      '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"',
    ].join('\n')
  );
  // The same signature over a different method does not verify.
  const tampered = { ...req, method: 'PUT' };
  assert.throws(
    () => verifyHttpSignature(tampered, { requiredComponents: components, publicKey: pub }),
    isCode('BAD_SIGNATURE')
  );
});

const id = generateIdentity();
const signer = requestSigner(id);
const NOW = 1_800_000_000;

function signed(
  method: string,
  url: string,
  body?: string,
  opts: Parameters<typeof signRequest>[2] = {}
) {
  const bytes = body === undefined ? undefined : new TextEncoder().encode(body);
  const headers = signRequest(
    signer,
    {
      method,
      url: new URL(url),
      ...(bytes ? { body: bytes, contentType: 'application/json' } : {}),
    },
    { now: NOW, ...opts }
  );
  return { headers, body: bytes ?? new Uint8Array() };
}

test('profile round trip: GET without body, POST with body', () => {
  const get = signed('GET', 'http://127.0.0.1:8470/me');
  assert.match(
    get.headers['signature-input']!,
    /^sig1=\("@method" "@authority" "@path" "@query"\);created=\d+;expires=\d+;nonce="[A-Za-z0-9_-]{22}";keyid="[0-9a-f]{64}";alg="ed25519";tag="sealbus"$/
  );
  const v = verifyRequestSignature(
    request('GET', 'http://127.0.0.1:8470/me', get.headers),
    get.body,
    { now: NOW }
  );
  assert.equal(v.keyid, id.signPubHex);
  assert.equal(v.created, NOW);
  assert.equal(v.expires, NOW + 60);

  const post = signed('POST', 'http://127.0.0.1:8470/users?x=1', '{"a":1}');
  assert.equal(post.headers['content-digest'], contentDigest(post.body));
  assert.match(post.headers['signature-input']!, /"content-type" "content-digest"\)/);
  verifyRequestSignature(
    request('POST', 'http://127.0.0.1:8470/users?x=1', post.headers),
    post.body,
    { now: NOW }
  );
});

test('a request signed by an independent RFC 9421 library (http-message-signatures) verifies', async () => {
  const ed = ed25519Signer(id.signSeed);
  const body = '{"subject":"chat.x"}';
  const url = 'http://127.0.0.1:8470/rooms?q=1';
  const req = await httpbis.signMessage(
    {
      key: {
        id: id.signPubHex,
        alg: 'ed25519',
        sign: async (data: Buffer) => Buffer.from(ed.sign(data)),
      },
      name: 'sig1',
      fields: ['@method', '@authority', '@path', '@query', 'content-type', 'content-digest'],
      params: ['created', 'expires', 'nonce', 'keyid', 'alg', 'tag'],
      paramValues: {
        created: new Date(),
        expires: new Date(Date.now() + 60_000),
        nonce: 'bm9uY2Utb2YtYXQtbGVhc3QtMTYtYnl0ZXM',
        tag: 'sealbus',
      },
    },
    {
      method: 'POST',
      url,
      headers: {
        'Content-Type': 'application/json',
        'Content-Digest': contentDigest(new TextEncoder().encode(body)),
      },
    }
  );
  const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, String(v)]));
  const v = verifyRequestSignature(request('POST', url, headers), new TextEncoder().encode(body));
  assert.equal(v.keyid, id.signPubHex);
});

test('malformed or policy-violating signatures are refused, each with its own code', () => {
  const good = signed('GET', 'http://127.0.0.1:8470/me');
  const input = good.headers['signature-input']!;
  const sig = good.headers['signature']!;
  const paramsOf = (replace: (s: string) => string) => ({
    'signature-input': replace(input),
    signature: sig,
  });
  const table: Array<[string, Record<string, string>, string]> = [
    ['no headers', {}, 'SIGNATURE_MISSING'],
    ['no Signature', { 'signature-input': input }, 'SIGNATURE_MISSING'],
    ['no Signature-Input', { signature: sig }, 'SIGNATURE_MISSING'],
    [
      'garbage Signature-Input',
      { 'signature-input': 'sig1=(((', signature: sig },
      'SIGNATURE_MALFORMED',
    ],
    [
      'garbage Signature',
      { 'signature-input': input, signature: 'sig1=abc def' },
      'SIGNATURE_MALFORMED',
    ],
    [
      'Bearer token instead',
      { 'signature-input': input, signature: 'Bearer abc' },
      'SIGNATURE_MALFORMED',
    ],
    [
      'label mismatch',
      { 'signature-input': input, signature: sig.replace(/^sig1=/, 'sig2=') },
      'LABEL_MISMATCH',
    ],
    [
      'two signatures',
      { 'signature-input': `${input}, ${input.replace(/^sig1/, 'sig2')}`, signature: sig },
      'SIGNATURE_MALFORMED',
    ],
    [
      'signature not a byte sequence',
      { 'signature-input': input, signature: 'sig1="abc"' },
      'SIGNATURE_MALFORMED',
    ],
    [
      'components not an inner list',
      { 'signature-input': 'sig1="@method"', signature: sig },
      'SIGNATURE_MALFORMED',
    ],
    [
      'component with parameters',
      paramsOf((s) => s.replace('"@path"', '"@path";x')),
      'SIGNATURE_MALFORMED',
    ],
    [
      'duplicate component',
      paramsOf((s) => s.replace('"@query"', '"@query" "@query"')),
      'SIGNATURE_MALFORMED',
    ],
    ['@query not covered', paramsOf((s) => s.replace(' "@query"', '')), 'COMPONENT_MISSING'],
    [
      '@authority not covered',
      paramsOf((s) => s.replace(' "@authority"', '')),
      'COMPONENT_MISSING',
    ],
    [
      'covered field absent',
      paramsOf((s) => s.replace('"@query"', '"@query" "x-absent"')),
      'COMPONENT_MISSING',
    ],
    ['no created', paramsOf((s) => s.replace(/;created=\d+/, '')), 'PARAMETER_MISSING'],
    ['no expires', paramsOf((s) => s.replace(/;expires=\d+/, '')), 'PARAMETER_MISSING'],
    ['no nonce', paramsOf((s) => s.replace(/;nonce="[^"]+"/, '')), 'PARAMETER_MISSING'],
    ['no keyid', paramsOf((s) => s.replace(/;keyid="[^"]+"/, '')), 'PARAMETER_MISSING'],
    ['no alg', paramsOf((s) => s.replace(/;alg="[^"]+"/, '')), 'PARAMETER_MISSING'],
    ['no tag', paramsOf((s) => s.replace(/;tag="[^"]+"/, '')), 'PARAMETER_MISSING'],
    ['unknown parameter', paramsOf((s) => `${s};extra=1`), 'SIGNATURE_MALFORMED'],
    [
      'created as string',
      paramsOf((s) => s.replace(/;created=(\d+)/, ';created="$1"')),
      'SIGNATURE_MALFORMED',
    ],
    ['wrong alg', paramsOf((s) => s.replace('alg="ed25519"', 'alg="hmac-sha256"')), 'BAD_ALG'],
    ['wrong tag', paramsOf((s) => s.replace('tag="sealbus"', 'tag="other"')), 'BAD_TAG'],
    ['short nonce', paramsOf((s) => s.replace(/nonce="[^"]+"/, 'nonce="abc"')), 'NONCE_INVALID'],
    ['keyid not hex', paramsOf((s) => s.replace(/keyid="[^"]+"/, 'keyid="admin"')), 'UNKNOWN_KEY'],
    [
      'keyid of someone else',
      paramsOf((s) => s.replace(/keyid="[^"]+"/, `keyid="${'ab'.repeat(32)}"`)),
      'BAD_SIGNATURE',
    ],
    [
      'signature bytes flipped',
      {
        'signature-input': input,
        signature: sig.replace(/:(.)/, (_m, c) => `:${c === 'A' ? 'B' : 'A'}`),
      },
      'BAD_SIGNATURE',
    ],
  ];
  for (const [name, headers, code] of table) {
    assert.throws(
      () =>
        verifyRequestSignature(
          request('GET', 'http://127.0.0.1:8470/me', headers),
          new Uint8Array(),
          { now: NOW }
        ),
      isCode(code),
      name
    );
  }
});

test('the profile: label sig1 only; @authority one of the names the verifier answers to', () => {
  const url = 'http://127.0.0.1:8470/me';
  const s = signed('GET', url);
  const names = new Set(['127.0.0.1:8470', 'sealbus.example']);
  verifyRequestSignature(request('GET', url, s.headers), s.body, {
    now: NOW,
    authorities: names,
  });
  // Signed (validly) for another deployment: refused before any crypto.
  const other = signed('GET', 'http://other.example:8470/me');
  assert.throws(
    () =>
      verifyRequestSignature(
        request('GET', 'http://other.example:8470/me', other.headers),
        s.body,
        {
          now: NOW,
          authorities: names,
        }
      ),
    isCode('WRONG_AUTHORITY')
  );
  // The same headers are fine for a verifier that does not check names.
  verifyRequestSignature(request('GET', 'http://other.example:8470/me', other.headers), s.body, {
    now: NOW,
  });
  // A consistent label other than sig1 (both fields): the label is part of the profile.
  const relabel = (h: Record<string, string>) => ({
    'signature-input': h['signature-input']!.replace(/^sig1=/, 'sig2='),
    signature: h['signature']!.replace(/^sig1=/, 'sig2='),
  });
  assert.throws(
    () =>
      verifyRequestSignature(request('GET', url, relabel(s.headers)), s.body, {
        now: NOW,
        authorities: names,
      }),
    isCode('BAD_LABEL')
  );
});

test('the time window: future, too old, expired, lifetime too long', () => {
  const cases: Array<[string, Parameters<typeof signRequest>[2], number, string]> = [
    ['created 60 s in the future', { now: NOW + 60 }, NOW, 'CREATED_IN_FUTURE'],
    ['created 10 min ago', { now: NOW - 600, lifetimeSec: 700 }, NOW, 'SIGNATURE_TOO_OLD'],
    ['expired', { now: NOW - 120, lifetimeSec: 60 }, NOW, 'EXPIRED'],
    ['lifetime of an hour', { now: NOW, lifetimeSec: 3600 }, NOW, 'EXPIRES_TOO_FAR'],
  ];
  for (const [name, opts, verifyAt, code] of cases) {
    const s = signed('GET', 'http://127.0.0.1:8470/me', undefined, opts);
    assert.throws(
      () =>
        verifyRequestSignature(request('GET', 'http://127.0.0.1:8470/me', s.headers), s.body, {
          now: verifyAt,
        }),
      isCode(code),
      name
    );
  }
  const skewed = signed('GET', 'http://127.0.0.1:8470/me', undefined, { now: NOW + 20 });
  verifyRequestSignature(request('GET', 'http://127.0.0.1:8470/me', skewed.headers), skewed.body, {
    now: NOW,
  });
});

test('tampering with any covered part after signing is refused', () => {
  const url = 'http://127.0.0.1:8470/users?role=admin';
  const s = signed('POST', url, '{"handle":"x"}');
  const ok = request('POST', url, s.headers);
  verifyRequestSignature(ok, s.body, { now: NOW });
  const variants: Array<[string, SignableRequest, Uint8Array, string]> = [
    ['method', { ...ok, method: 'PUT' }, s.body, 'BAD_SIGNATURE'],
    ['authority', { ...ok, authority: '127.0.0.1:8471' }, s.body, 'BAD_SIGNATURE'],
    ['path', { ...ok, path: '/users/x' }, s.body, 'BAD_SIGNATURE'],
    ['query', { ...ok, query: '?role=member' }, s.body, 'BAD_SIGNATURE'],
    ['query removed', { ...ok, query: '' }, s.body, 'BAD_SIGNATURE'],
    [
      'content-type',
      request('POST', url, { ...s.headers, 'content-type': 'text/plain' }),
      s.body,
      'BAD_SIGNATURE',
    ],
    ['body', ok, new TextEncoder().encode('{"handle":"y"}'), 'DIGEST_MISMATCH'],
    [
      'digest and body',
      request('POST', url, {
        ...s.headers,
        'content-digest': contentDigest(new TextEncoder().encode('{}')),
      }),
      new TextEncoder().encode('{}'),
      'BAD_SIGNATURE',
    ],
  ];
  for (const [name, req, body, code] of variants) {
    assert.throws(() => verifyRequestSignature(req, body, { now: NOW }), isCode(code), name);
  }
  // a body added to a request signed without one: its components are not covered
  const g = signed('GET', 'http://127.0.0.1:8470/me');
  assert.throws(
    () =>
      verifyRequestSignature(
        request('GET', 'http://127.0.0.1:8470/me', g.headers),
        new Uint8Array([1]),
        { now: NOW }
      ),
    isCode('COMPONENT_MISSING')
  );
  // a body without its digest field
  const noDigest = { ...s.headers };
  delete noDigest['content-digest'];
  assert.throws(
    () => verifyRequestSignature(request('POST', url, noDigest), s.body, { now: NOW }),
    isCode('COMPONENT_MISSING')
  );
});

test('parseSignatureFields re-serialises parameters canonically', () => {
  const p = parseSignatureFields('sig1=("@method"   "@path");created=1;keyid="k"', 'sig1=:AAAA:');
  assert.equal(p.paramsText, '("@method" "@path");created=1;keyid="k"');
});
