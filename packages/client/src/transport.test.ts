// A kept-alive socket the server closes just as the client reuses it (its
// idle timeout racing the next request): the exchange is sent once more on
// a fresh socket, not reported as the server being unreachable.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Transport } from './transport.js';

test('a reused socket closed under the request: sent again on a fresh one, same headers', async () => {
  const served = new WeakMap<Socket, number>();
  const seen: Array<{ socketRequest: number; nonce: string | undefined }> = [];
  const server = http.createServer((req, res) => {
    const n = (served.get(req.socket) ?? 0) + 1;
    served.set(req.socket, n);
    seen.push({ socketRequest: n, nonce: req.headers['x-nonce'] as string | undefined });
    // The second request on a socket finds it closed, as a server's idle
    // timeout closing it at that moment would.
    if (n === 2) return req.socket.destroy();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"ok":true}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/x`);
  const t = new Transport({ timeoutMs: 5_000 });
  try {
    assert.equal((await t.send('GET', url, { 'x-nonce': 'a' })).status, 200);
    const second = await t.send('POST', url, { 'x-nonce': 'b' }, new TextEncoder().encode('{}'));
    assert.equal(second.status, 200);
    assert.deepEqual(seen, [
      { socketRequest: 1, nonce: 'a' },
      { socketRequest: 2, nonce: 'b' },
      { socketRequest: 1, nonce: 'b' },
    ]);
  } finally {
    t.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});
