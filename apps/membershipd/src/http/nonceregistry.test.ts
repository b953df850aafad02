// Authority claims against a real nats-server: two nodes that could both be
// presented a request never both keep its nonce in memory.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type KV, type NatsConnection } from 'nats';
import { MembershipStore } from '@sealbus/store';
import { startNats, type TestNats } from '@sealbus/testing';
import { createLogger } from '../log.js';
import { Authorities } from './authority.js';
import { NonceRegistry } from './nonceregistry.js';

const quiet = createLogger('silent');

describe('authority claims', () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let kv: KV;

  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
    kv = (await MembershipStore.open(nc)).bucket('nonces');
  });
  after(async () => {
    await nc?.close();
    await nats?.dispose();
  });

  const node = (server: string, host: string, port: number, configured: string[] = []) => {
    const a = new Authorities(configured);
    a.bind(host, port);
    return { a, r: new NonceRegistry(kv, server, a, quiet) };
  };

  test('distinct addresses: each node keeps its own address in memory, never its loopback aliases', async () => {
    const x = node('x', '127.0.0.1', 7001);
    const y = node('y', '127.0.0.1', 7002);
    await x.r.claim();
    await y.r.claim();
    await x.r.claim();
    assert.deepEqual(x.r.local(), ['127.0.0.1:7001']);
    assert.deepEqual(y.r.local(), ['127.0.0.1:7002']);
    assert.ok(x.r.covers('127.0.0.1:7001') && !x.r.covers('localhost:7001'));
    assert.ok(!x.r.covers('127.0.0.1:7002'));
  });

  test('a peer listing my address with --authority: my nonces go to the bucket, or it stops accepting my address', async () => {
    // The peer starts first: I see its shared claim and use the bucket.
    const peer = node('p1', '10.0.0.2', 8470, ['10.0.0.1:8470']);
    await peer.r.claim();
    const me = node('m1', '10.0.0.1', 8470);
    await me.r.claim();
    assert.deepEqual(me.r.local(), []);
    assert.ok(peer.a.has('10.0.0.1:8470'), 'shared: it still accepts it (the bucket decides)');
    // I start first: the peer sees my own claim and refuses my address.
    const me2 = node('m2', '10.0.0.3', 8470);
    await me2.r.claim();
    assert.deepEqual(me2.r.local(), ['10.0.0.3:8470']);
    const peer2 = node('p2', '10.0.0.4', 8470, ['10.0.0.3:8470']);
    await peer2.r.claim();
    assert.equal(peer2.a.has('10.0.0.3:8470'), false, 'refused where another node claims it');
    // ...and says so in its claim, so I keep my address on renewal.
    await me2.r.claim();
    assert.deepEqual(me2.r.local(), ['10.0.0.3:8470']);
    assert.equal(peer2.a.has('10.0.0.3:8470'), false);
  });

  test('two nodes bound to the same address (containers), claiming at once: at most one keeps it in memory, and then the other refuses it', async () => {
    const a = node('c1', '172.17.0.2', 8470);
    const b = node('c2', '172.17.0.2', 8470);
    await Promise.all([a.r.claim(), b.r.claim()]);
    await Promise.all([a.r.claim(), b.r.claim()]);
    const localA = a.r.covers('172.17.0.2:8470');
    const localB = b.r.covers('172.17.0.2:8470');
    assert.ok(!(localA && localB), 'both in memory');
    // Whoever keeps it in memory, the other does not accept it at all.
    if (localA) assert.equal(b.a.has('172.17.0.2:8470'), false);
    if (localB) assert.equal(a.a.has('172.17.0.2:8470'), false);
  });

  test('a wildcard listener has no own address; nothing is kept in memory before the first claim', async () => {
    const w = node('w', '0.0.0.0', 9000);
    await w.r.claim();
    assert.deepEqual(w.r.local(), []);
    const s = node('s', '10.9.9.9', 9000);
    assert.equal(s.r.covers('10.9.9.9:9000'), false, 'nothing before the first claim');
    await s.r.claim();
    assert.equal(s.r.covers('10.9.9.9:9000'), true);
  });

  test('a claim not renewed within its validity stops counting (the bucket would forget it)', async () => {
    const a = new Authorities();
    a.bind('10.8.8.8', 9000);
    const r = new NonceRegistry(kv, 'v', a, quiet, { validMs: 300 });
    await r.claim();
    assert.equal(r.covers('10.8.8.8:9000'), true);
    await new Promise((res) => setTimeout(res, 400));
    assert.equal(r.covers('10.8.8.8:9000'), false);
    await r.claim();
    assert.equal(r.covers('10.8.8.8:9000'), true, 'renewed');
  });
});
