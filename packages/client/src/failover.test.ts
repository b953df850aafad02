// Failover between control URLs signs every attempt afresh: a node that
// answered 503 (or never answered) may have recorded the nonce, so the
// next node must see a new one, or a correct request would be REPLAYED.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import { generateIdentity } from '@sealbus/crypto';
import { ControlClient } from './control.js';

interface Seen {
  node: string;
  input: string;
  signature: string;
}

function node(name: string, seen: Seen[], answer: (res: http.ServerResponse) => void) {
  const server = http.createServer((req, res) => {
    seen.push({
      node: name,
      input: String(req.headers['signature-input'] ?? ''),
      signature: String(req.headers['signature'] ?? ''),
    });
    answer(res);
  });
  return new Promise<{ url: string; close: () => void }>((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
        close: () => server.close(),
      })
    )
  );
}

test('each attempt of a failover carries a fresh signature (new nonce), to every node', async () => {
  const seen: Seen[] = [];
  const json = (res: http.ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const a = await node('a', seen, (res) =>
    json(res, 503, { error: { code: 'STORE_UNAVAILABLE', message: 'no quorum' } })
  );
  const b = await node('b', seen, (res) =>
    json(res, 503, { error: { code: 'STORE_UNAVAILABLE', message: 'no quorum' } })
  );
  const c = await node('c', seen, (res) => json(res, 200, { ok: true }));
  const ctl = new ControlClient({ urls: [a.url, b.url, c.url], identity: generateIdentity() });
  try {
    const r = await ctl.request('GET', '/me', z.object({ ok: z.boolean() }));
    assert.deepEqual(r, { ok: true });
  } finally {
    ctl.close();
    a.close();
    b.close();
    c.close();
  }
  assert.deepEqual(
    seen.map((s) => s.node),
    ['a', 'b', 'c']
  );
  const nonces = seen.map((s) => /;nonce="([^"]+)"/.exec(s.input)?.[1]);
  assert.ok(
    nonces.every((n) => typeof n === 'string' && n.length >= 16),
    String(nonces)
  );
  assert.equal(new Set(nonces).size, 3, `nonces reused across attempts: ${nonces.join(', ')}`);
  assert.equal(new Set(seen.map((s) => s.signature)).size, 3);
});

test('a 429 or SIGNED_BEFORE_START is tried again on the node that said it (signed afresh), not on a dead one before it', async () => {
  const json = (res: http.ServerResponse, status: number, body: unknown, h = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', ...h });
    res.end(JSON.stringify(body));
  };
  for (const [status, code, headers] of [
    [429, 'TOO_MANY_AUTH_FAILURES', { 'retry-after': '1' }],
    [401, 'SIGNED_BEFORE_START', {}],
  ] as const) {
    const seen: Seen[] = [];
    // A dead node first: connections refused.
    const dead = await node('dead', [], () => {});
    dead.close();
    let calls = 0;
    const live = await node('live', seen, (res) =>
      ++calls === 1
        ? json(res, status, { error: { code, message: 'not now' } }, headers)
        : json(res, 200, { ok: true })
    );
    const ctl = new ControlClient({ urls: [dead.url, live.url], identity: generateIdentity() });
    try {
      const r = await ctl.request('GET', '/me', z.object({ ok: z.boolean() }));
      assert.deepEqual(r, { ok: true }, code);
    } finally {
      ctl.close();
      live.close();
    }
    assert.deepEqual(
      seen.map((s) => s.node),
      ['live', 'live'],
      code
    );
    assert.notEqual(seen[0]!.signature, seen[1]!.signature, `${code}: signed afresh`);
  }
});
