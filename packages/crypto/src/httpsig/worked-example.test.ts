// docs/SIGNING.md works one request through byte for byte; this recomputes
// every block of it (and checks the signature with an independent Ed25519).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ed25519 } from '@noble/curves/ed25519.js';
import { identityFromSecrets } from '../identity.js';
import { requestSigner, signRequest } from './profile.js';
import { signatureBase } from './base.js';

const DOC = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  '..',
  '..',
  'docs',
  'SIGNING.md'
);

function block(doc: string, id: string): string {
  const m = new RegExp('```\\w+ id=' + id + '\\n([\\s\\S]*?)\\n```').exec(doc);
  assert.ok(m, `block ${id} in docs/SIGNING.md`);
  return m[1]!;
}

test('docs/SIGNING.md: key, digest, signature base and headers are what the signer makes', () => {
  const doc = readFileSync(DOC, 'utf8');
  const id = identityFromSecrets(new Uint8Array(32).fill(1), new Uint8Array(32).fill(3));
  assert.equal(block(doc, 'keyid'), id.signPubHex);
  const body = block(doc, 'body');
  const headers = signRequest(
    requestSigner(id),
    {
      method: 'POST',
      url: new URL('http://127.0.0.1:8470/users'),
      body: new TextEncoder().encode(body),
      contentType: 'application/json',
    },
    { now: 1796000000, lifetimeSec: 60, nonce: 'c2VhbGJ1cy1leGFtcGxlLTE' }
  );
  const printed = Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}`)
    .join('\n');
  assert.equal(block(doc, 'headers'), printed);
  const params = headers['signature-input']!.slice('sig1='.length);
  const base = signatureBase(
    {
      method: 'POST',
      authority: '127.0.0.1:8470',
      path: '/users',
      query: '',
      header: (n) => headers[n],
    },
    ['@method', '@authority', '@path', '@query', 'content-type', 'content-digest'],
    params
  );
  assert.equal(block(doc, 'base'), base);
  const sig = /^sig1=:(.+):$/.exec(headers['signature']!)![1]!;
  assert.ok(
    ed25519.verify(
      Buffer.from(sig, 'base64'),
      Buffer.from(base, 'utf8'),
      Buffer.from(id.signPubHex, 'hex')
    ),
    'an independent Ed25519 verifies the documented signature over the documented base'
  );
});
