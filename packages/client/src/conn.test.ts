// LiveConnection against a plain nats-server: the handover of a renewal
// delivers the union of what the old and the new subscription saw, each
// message as often as it was sent.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, headers, type NatsConnection } from 'nats';
import { startNats, waitFor, type TestNats } from '@sealbus/testing';
import { LiveConnection } from './conn.js';

const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const enc = (s: string) => new TextEncoder().encode(s);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('LiveConnection: make-before-break on a real nats-server', { timeout: 60_000 }, () => {
  let n: TestNats;
  let pub: NatsConnection;
  before(async () => {
    n = await startNats({ jetstream: false });
    pub = await connect({ servers: n.url });
  });
  after(async () => {
    await pub?.close();
    await n?.dispose();
  });

  test('identical messages seen by both subscriptions during the handover are delivered as often as sent', async () => {
    const got: string[] = [];
    let opened = 0;
    const live = await LiveConnection.open({
      open: async () => {
        const nc = await connect({ servers: n.url });
        if (++opened === 1) return nc;
        // Once the next connection's subscription is on the server, two
        // identical messages reach both subscriptions; the old one delivers them.
        const realFlush = nc.flush.bind(nc);
        let flushes = 0;
        nc.flush = async () => {
          await realFlush();
          if (++flushes === 1) {
            pub.publish('ev', enc('same'));
            pub.publish('ev', enc('same'));
            await pub.flush();
            await waitFor(() => got.length === 2, { what: 'both on the old connection' });
          }
        };
        return nc;
      },
    });
    live.subscribe('ev', (m) => void got.push(dec(m.data)));
    await live.flush();
    await live.renew();
    pub.publish('ev', enc('after'));
    await pub.flush();
    await waitFor(() => got.includes('after'), { what: 'a message after the handover' });
    await sleep(200);
    await live.close();
    assert.deepEqual(got, ['same', 'same', 'after']);
  });

  test('a stream of messages across three renewals: each once, in order', async () => {
    const got: number[] = [];
    const live = await LiveConnection.open({ open: () => connect({ servers: n.url }) });
    live.subscribe('seq', (m) => void got.push(Number(dec(m.data))));
    await live.flush();
    const N = 3_000;
    const sending = (async () => {
      for (let i = 0; i < N; i++) {
        pub.publish('seq', enc(String(i)));
        if (i % 100 === 0) await sleep(2);
      }
      await pub.flush();
    })();
    for (let r = 0; r < 3; r++) {
      await sleep(15);
      await live.renew();
    }
    await sending;
    await waitFor(() => got.length >= N, { what: 'every message', timeoutMs: 10_000 }).catch(
      () => {}
    );
    await live.close();
    assert.equal(live.renewals, 3);
    assert.deepEqual(got, [...Array(N).keys()]);
  });

  test('after close(), a renewal is refused and opens nothing', async () => {
    let opened = 0;
    const live = await LiveConnection.open({
      open: async () => {
        opened++;
        return connect({ servers: n.url });
      },
    });
    await live.close();
    await assert.rejects(live.renew(), /closed/);
    assert.equal(opened, 1);
    assert.equal(live.nc.isClosed(), true);
  });

  test('publishes of one turn go out together, in order, headers or not; flush and close send what waits', async () => {
    const got: string[] = [];
    const sub = await connect({ servers: n.url });
    sub.subscribe('co.>', { callback: (_e, m) => void got.push(`${m.subject}:${dec(m.data)}`) });
    await sub.flush();
    const live = await LiveConnection.open({ open: () => connect({ servers: n.url }) });
    const sent = () => live.nc.stats().outMsgs;
    // A burst: nothing reaches nats.js before the turn ends, then all of it at once.
    for (let i = 0; i < 20; i++) live.publish('co.a', enc(String(i)));
    assert.equal(sent(), 0, 'waiting for the end of the turn');
    await new Promise((r) => setImmediate(r));
    assert.equal(sent(), 20);
    // More than COALESCE_BYTES waiting: handed over without waiting for the turn.
    const big = new Uint8Array(40 * 1024);
    live.publish('co.b', big);
    live.publish('co.b', big);
    assert.equal(sent(), 22, 'past 64 KiB, handed over at once');
    // A publish with headers goes at once, after what waited before it.
    live.publish('co.c', enc('1'));
    live.publish('co.c', enc('2'), { headers: headers() });
    live.publish('co.c', enc('3'));
    assert.equal(sent(), 24);
    await live.flush();
    assert.equal(sent(), 25, 'flush sends what waits');
    live.publish('co.d', enc('last'));
    await live.close();
    await waitFor(() => got.length === 26, { what: 'every message' });
    await sub.close();
    assert.deepEqual(got, [
      ...Array.from({ length: 20 }, (_, i) => `co.a:${i}`),
      `co.b:${'\0'.repeat(40 * 1024)}`,
      `co.b:${'\0'.repeat(40 * 1024)}`,
      'co.c:1',
      'co.c:2',
      'co.c:3',
      'co.d:last',
    ]);
    // Closed: refused at the call, as nats.js refuses it.
    assert.throws(() => live.publish('co.e', enc('x')), /closed/i);
  });

  test('publishes waiting when a renewal starts go out on the old connection, before the switch', async () => {
    const got: number[] = [];
    const sub = await connect({ servers: n.url });
    sub.subscribe('ren', { callback: (_e, m) => void got.push(Number(dec(m.data))) });
    await sub.flush();
    const live = await LiveConnection.open({ open: () => connect({ servers: n.url }) });
    const first = live.nc;
    let i = 0;
    for (; i < 100; i++) live.publish('ren', enc(String(i)));
    const renewing = live.renew();
    // While the switch is under way: held, then sent on the next connection.
    for (; i < 200; i++) live.publish('ren', enc(String(i)));
    await renewing;
    assert.notEqual(live.nc, first);
    for (; i < 300; i++) live.publish('ren', enc(String(i)));
    await live.flush();
    await waitFor(() => got.length >= 300, { what: 'every message' });
    await live.close();
    await sub.close();
    assert.deepEqual(got, [...Array(300).keys()]);
  });
});
