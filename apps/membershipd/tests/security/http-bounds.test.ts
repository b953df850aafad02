// Attack replays (issue 16, item 5): HTTP on Node's defaults. A client that
// never finished its headers held its socket ~80 s, a trickled body ~325 s;
// there was no connection cap; unmatched and public routes read request
// bodies of any size (19 GB in 20 s into GET /healthz).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startDaemon, type TestDaemon } from '@sealbus/testing';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A raw socket to the daemon; resolves `closed` with the time it was closed by the server. */
function rawSocket(
  d: TestDaemon,
  localAddress = '127.0.0.1'
): Promise<{ s: net.Socket; closed: Promise<number>; data: () => string }> {
  return new Promise((resolve, reject) => {
    let text = '';
    const s = net.connect({ host: '127.0.0.1', port: d.httpPort, localAddress }, () =>
      resolve({ s, closed, data: () => text })
    );
    const closed = new Promise<number>((r) => s.once('close', () => r(Date.now())));
    s.on('data', (b) => (text += b.toString('latin1')));
    s.on('error', () => {});
    s.once('error', reject);
  });
}

describe('bounded HTTP', { timeout: 180_000 }, () => {
  let d: TestDaemon;
  before(async () => {
    d = await startDaemon({
      args: ['--http-max-connections', '40', '--http-max-connections-per-address', '6'],
    });
  });
  after(async () => {
    await d?.dispose();
  });

  test('/healthz reports the limits', async () => {
    const p = (await (await fetch(`${d.httpUrl}/healthz`)).json()) as { http: unknown };
    assert.deepEqual(p.http, {
      headers_timeout_ms: 10_000,
      request_timeout_ms: 30_000,
      max_connections: 40,
      max_connections_per_address: 6,
    });
  });

  test('unfinished headers and a trickled body lose their socket within the timeouts', async () => {
    const t0 = Date.now();
    const slowHeaders = await rawSocket(d, '127.0.0.11');
    slowHeaders.s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
    const trickle = await rawSocket(d, '127.0.0.12');
    trickle.s.write(
      'PUT /me/keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{'
    );
    const drip = setInterval(() => trickle.s.write(' '), 500);
    try {
      const [h, t] = await Promise.all([slowHeaders.closed, trickle.closed]);
      assert.ok(h - t0 < 20_000, `slow headers held the socket ${h - t0} ms`);
      assert.ok(t - t0 < 45_000, `a trickled body held the socket ${t - t0} ms`);
    } finally {
      clearInterval(drip);
      slowHeaders.s.destroy();
      trickle.s.destroy();
    }
  });

  test('a body where none is taken, or too large, is refused unread, and the connection closed', async () => {
    for (const [method, path, code] of [
      ['GET', '/healthz', 'BODY_NOT_ALLOWED'],
      ['POST', '/nowhere', 'NOT_FOUND'],
      ['GET', '/me', 'BODY_NOT_ALLOWED'],
      ['POST', '/users', 'BODY_TOO_LARGE'],
    ] as const) {
      const c = await rawSocket(d, '127.0.0.13');
      c.s.write(`${method} ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: 20000000000\r\n\r\n`);
      // The answer comes before any body byte is sent...
      const t0 = Date.now();
      while (!c.data().includes('\r\n\r\n') && Date.now() - t0 < 5_000) await sleep(20);
      assert.match(c.data(), /^HTTP\/1\.1 4(13|04)/, `${method} ${path}: ${c.data().slice(0, 60)}`);
      assert.ok(c.data().includes(code), `${method} ${path}: ${c.data()}`);
      assert.match(c.data(), /connection: close/i);
      // ...and then the server stops taking it: push as fast as the socket
      // takes it until the server closes it.
      const chunk = Buffer.alloc(1024 * 1024);
      let sent = 0;
      let open = true;
      void c.closed.then(() => (open = false));
      const t1 = Date.now();
      while (open && sent < 512 * 1024 * 1024 && Date.now() - t1 < 10_000) {
        if (!c.s.write(chunk)) await sleep(5);
        sent += chunk.length;
        await new Promise((r) => setImmediate(r));
      }
      await Promise.race([c.closed, sleep(5_000)]);
      c.s.destroy();
      assert.ok(sent < 256 * 1024 * 1024, `${method} ${path}: ${sent >> 20} MiB accepted`);
    }
  });

  test('one address gets its share of connections, others are still served', async () => {
    const mine = await Promise.all(Array.from({ length: 10 }, () => rawSocket(d, '127.0.0.21')));
    await sleep(500);
    let closed = 0;
    for (const c of mine)
      if (await Promise.race([c.closed.then(() => true), sleep(50).then(() => false)])) closed++;
    assert.ok(closed >= 4, `${closed} of 10 connections from one address closed (cap 6)`);
    // Another address is served meanwhile.
    const other = await rawSocket(d, '127.0.0.22');
    other.s.write('GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    await Promise.race([other.closed, sleep(5_000)]);
    assert.match(other.data(), /^HTTP\/1\.1 200/);
    for (const c of mine) c.s.destroy();
  });

  test('a socket that never sends a byte is closed (headers timeout starts at connect)', async () => {
    const t0 = Date.now();
    const silent = await rawSocket(d, '127.0.0.31');
    const closedAt = await Promise.race([silent.closed, sleep(25_000).then(() => 0)]);
    silent.s.destroy();
    assert.ok(closedAt > 0 && closedAt - t0 < 15_000, `a silent socket held ${Date.now() - t0} ms`);
  });

  test('silent sockets filling the cap from many addresses are evicted for a newcomer', async () => {
    const held: Array<Awaited<ReturnType<typeof rawSocket>>> = [];
    for (let i = 0; i < 8; i++)
      for (let j = 0; j < 6; j++) held.push(await rawSocket(d, `127.0.1.${i + 1}`));
    await sleep(300);
    const res = await fetch(`${d.httpUrl}/livez`);
    assert.equal(res.status, 200, 'a newcomer was locked out by silent sockets');
    for (const c of held) c.s.destroy();
  });

  test('past the cap with every socket busy, new connections are closed; served again once they go', async () => {
    const held: Array<Awaited<ReturnType<typeof rawSocket>>> = [];
    for (let i = 0; i < 8; i++)
      for (let j = 0; j < 5; j++) {
        const c = await rawSocket(d, `127.0.3.${i + 1}`);
        // A request in flight: headers done, the body still coming.
        c.s.write(
          'PUT /me/keys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{'
        );
        held.push(c);
      }
    await sleep(500);
    const extra = await rawSocket(d, '127.0.2.1');
    extra.s.write('GET /livez HTTP/1.1\r\nHost: x\r\n\r\n');
    const gone = await Promise.race([
      extra.closed.then(() => true),
      sleep(3_000).then(() => false),
    ]);
    assert.ok(gone && !/200/.test(extra.data()), 'a connection past the cap was served');
    for (const c of held) c.s.destroy();
    await sleep(500);
    const again = await fetch(`${d.httpUrl}/livez`);
    assert.equal(again.status, 200);
  });
});
