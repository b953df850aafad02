// Data-plane benchmarks, one daemon, side by side:
// 1. end-to-end 1 KiB messages/s (publish → verified, decrypted delivery)
//    for an encrypted+signed room, an encrypted unsigned room, and plain
//    NATS publish/subscribe of the same bytes on the same server;
// 2. connections/s through the auth callout vs a static nkey user;
// 3. auth callout latency (p50/p99) for a user in 0 and in 1,000 rooms.

import { join } from 'node:path';
import { connect, nkeyAuthenticator } from 'nats';
import { encodePublicIdentity, generateIdentity, loadIdentity, natsUserKey } from '@sealbus/crypto';
import { internalNatsSeed } from '@sealbus/membershipd';
import { ControlClient, Sealbus } from '@sealbus/client';
import { startDaemon } from '@sealbus/testing';
import { median, percentile, table } from './lib.mjs';

const PAYLOAD = new Uint8Array(1024).fill(0x5a);
// A user's derived NATS key, never its sign key.
const seedOf = (id) => new TextEncoder().encode(natsUserKey(id).seed);

async function throughput(label, n, setup) {
  const { publish, onMessage, flush, close } = await setup();
  let received = 0;
  let done;
  const finished = new Promise((r) => (done = r));
  onMessage(() => {
    if (++received === n) done();
  });
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    await publish();
    if (i % 500 === 499) await flush();
  }
  await flush();
  const timeout = new Promise((r) => setTimeout(() => r('timeout'), 120_000));
  const outcome = await Promise.race([finished, timeout]);
  const secs = (performance.now() - t0) / 1000;
  await close();
  if (outcome === 'timeout') throw new Error(`${label}: only ${received}/${n} received`);
  return { label, n, rate: n / secs };
}

export async function dataplaneBench({ rounds = 3 } = {}) {
  // The set-up puts one user in 1,000 rooms it owns: past the default room quota.
  const d = await startDaemon({
    args: ['--log-level', 'debug', '--max-rooms-per-user', '2000', '--changes-per-minute', '0'],
  });
  try {
    const adminId = await loadIdentity(join(d.dataDir, 'admin.id'));
    const admin = new ControlClient({ urls: [d.httpUrl], identity: adminId });
    const mk = async (handle) => {
      const id = generateIdentity();
      await admin.addUser({ public: encodePublicIdentity(id), handle, role: 'member' });
      return id;
    };
    const [pubId, subId] = [await mk('bench-pub'), await mk('bench-sub')];
    const P = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity: pubId,
    });
    const S = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity: subId,
    });
    const rooms = {};
    for (const [name, sign] of [
      ['signed', true],
      ['unsigned', false],
    ]) {
      const r = await P.createRoom({
        subject: `bench.${name}`,
        policy: { encrypt: true, persist: false, sign },
      });
      await P.invite(r.id, subId.signPubHex, 'reader');
      rooms[name] = r;
    }
    const sdkCase = (room) => async () => {
      let cb = () => {};
      const sub = await S.subscribe(room.id, () => cb());
      await P.publish(room.id, PAYLOAD); // warm the room state; not counted
      await new Promise((r) => setTimeout(r, 200));
      return {
        publish: () => P.publish(room.id, PAYLOAD),
        onMessage: (f) => (cb = f),
        flush: () => P.nc.flush(),
        close: () => sub.stop(),
      };
    };
    const plainCase = async () => {
      // Same server, same bytes, no Sealbus: the internal (static nkey) user on both ends.
      const internal = await loadIdentity(join(d.dataDir, 'internal.id'));
      const opts = {
        servers: d.natsUrl,
        authenticator: nkeyAuthenticator(internalNatsSeed(internal)),
      };
      const [pub, sub] = [await connect(opts), await connect(opts)];
      let cb = () => {};
      sub.subscribe('bench.plain', { callback: () => cb() });
      await sub.flush();
      return {
        publish: async () => pub.publish('bench.plain', PAYLOAD),
        onMessage: (f) => (cb = f),
        flush: () => pub.flush(),
        close: async () => {
          await pub.close();
          await sub.close();
        },
      };
    };
    const cases = [
      ['plain NATS pub/sub (same bytes)', 60_000, plainCase],
      ['encrypted, unsigned room', 40_000, sdkCase(rooms.unsigned)],
      ['encrypted + signed room', 15_000, sdkCase(rooms.signed)],
    ];
    const res = new Map(cases.map(([l]) => [l, []]));
    for (let round = 0; round < rounds; round++) {
      for (const [label, n, setup] of cases)
        res.get(label).push((await throughput(label, n, setup)).rate);
    }
    const rows = cases.map(([label]) => ({ label, rate: median(res.get(label)) }));
    const plain = rows[0].rate;
    console.log(`\nend to end, 1 KiB messages, ${rounds} interleaved rounds (medians)`);
    console.log(
      table(rows, [
        ['path', (r) => r.label],
        ['msgs/s', (r) => r.rate.toFixed(0)],
        ['vs plain', (r) => (r.rate / plain).toFixed(3)],
      ])
    );
    console.log(`ratio signed/unsigned: ${(rows[2].rate / rows[1].rate).toFixed(3)}`);
    await P.close();
    await S.close();

    // 2. connections/s
    const internal = await loadIdentity(join(d.dataDir, 'internal.id'));
    const connRate = async (authenticator, ms = 3_000, conc = 4) => {
      let n = 0;
      const end = performance.now() + ms;
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: conc }, async () => {
          while (performance.now() < end) {
            const nc = await connect({ servers: d.natsUrl, authenticator, reconnect: false });
            await nc.close();
            n++;
          }
        })
      );
      return n / ((performance.now() - t0) / 1000);
    };
    const cr = { callout: [], static: [] };
    for (let round = 0; round < rounds; round++) {
      cr.static.push(await connRate(nkeyAuthenticator(internalNatsSeed(internal))));
      cr.callout.push(await connRate(nkeyAuthenticator(seedOf(pubId))));
    }
    const [cs, cc] = [median(cr.static), median(cr.callout)];
    console.log(`\nconnections/s (connect + close, concurrency 4, ${rounds} rounds, medians)`);
    console.log(
      `static nkey user: ${cs.toFixed(0)}   through the auth callout: ${cc.toFixed(0)}   ratio callout/static: ${(cc / cs).toFixed(3)}`
    );

    // 3. callout latency, user in 0 vs 1,000 rooms
    const many = await mk('bench-many');
    const owner = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity: pubId,
    });
    const t0 = performance.now();
    for (let i = 0; i < 1000; i++) {
      const r = await owner.control.createRoom({
        subject: `many.r${i}`,
        policy: { encrypt: false, persist: false, sign: true },
      });
      await owner.control.addMember(r.id, { sign_pub: many.signPubHex, role: 'reader' });
    }
    console.log(
      `\n(set-up: 1,000 rooms with the user as member in ${((performance.now() - t0) / 1000).toFixed(1)} s)`
    );
    await owner.close();
    const latencies = async (id, n = 200) => {
      const nkey = natsUserKey(id).publicKey;
      const before = d.logs.length;
      for (let i = 0; i < n; i++) {
        const nc = await connect({
          servers: d.natsUrl,
          authenticator: nkeyAuthenticator(seedOf(id)),
          reconnect: false,
        });
        await nc.close();
      }
      await new Promise((r) => setTimeout(r, 200));
      const ms = d.logs
        .slice(before)
        .filter((l) => l.msg === 'callout: allowed' && l.nkey === nkey)
        .map((l) => l.ms)
        .sort((a, b) => a - b);
      return {
        n: ms.length,
        p50: percentile(ms, 50),
        p99: percentile(ms, 99),
        rooms: id === many ? 1000 : 0,
      };
    };
    const lonely = await mk('bench-lonely');
    const lat = [
      await latencies(lonely),
      await latencies(many),
      await latencies(lonely),
      await latencies(many),
    ];
    const agg = (rooms) => {
      const xs = lat.filter((l) => l.rooms === rooms);
      return {
        rooms,
        p50: median(xs.map((x) => x.p50)),
        p99: median(xs.map((x) => x.p99)),
        n: xs.reduce((a, x) => a + x.n, 0),
      };
    };
    const rowsL = [agg(0), agg(1000)];
    console.log('auth callout decision latency (measured in the daemon, per connect)');
    console.log(
      table(rowsL, [
        ['rooms', (r) => r.rooms],
        ['decisions', (r) => r.n],
        ['p50 ms', (r) => r.p50.toFixed(2)],
        ['p99 ms', (r) => r.p99.toFixed(2)],
      ])
    );
    admin.close();
  } finally {
    await d.dispose();
  }
}
