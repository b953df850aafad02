// Persisted rooms, one daemon, side by side in one run:
// 1. publish: sealed 1 KiB frames stored per second (each awaited until stored);
// 2. history read: a member reads the whole stored history from the start;
// 3. live: a member subscribed to a persisted room receives while a writer publishes;
// and, as the machine's yardstick in the same run, an ephemeral room's end-to-end rate.
// Ratios against the ephemeral rate drift less than absolute numbers.

import { join } from 'node:path';
import { generateIdentity, loadIdentity } from '@sealbus/crypto';
import { ControlClient, Sealbus } from '@sealbus/client';
import { natsOf } from '@sealbus/client/internal';
import { startDaemon } from '@sealbus/testing';
import { median, table } from './lib.mjs';

const PAYLOAD = new Uint8Array(1024).fill(0x5a);
const N = 3_000;

async function timed(fn) {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

function counter(n) {
  let got = 0;
  let done;
  const all = new Promise((r) => (done = r));
  return {
    handler: () => {
      if (++got === n) done();
    },
    all: () =>
      Promise.race([
        all,
        new Promise((_, reject) =>
          setTimeout(() => reject(new Error(`only ${got}/${n} received`)), 120_000)
        ),
      ]),
  };
}

export async function persistedBench({ rounds = 3 } = {}) {
  const d = await startDaemon({ args: ['--log-level', 'warn'] });
  try {
    const admin = new ControlClient({
      urls: [d.httpUrl],
      identity: await loadIdentity(join(d.dataDir, 'admin.id')),
    });
    const mk = async (handle) => {
      const id = generateIdentity();
      await admin.addUser({
        sign_pub: id.signPubHex,
        kex_pub: id.kexPubHex,
        handle,
        role: 'member',
      });
      return id;
    };
    const [pubId, subId] = [await mk('bench-p-pub'), await mk('bench-p-sub')];
    const connect = (identity) =>
      Sealbus.connect({ natsServers: [d.natsUrl], controlUrls: [d.httpUrl], identity });
    const [P, S] = [await connect(pubId), await connect(subId)];
    const res = { publish: [], pipelined: [], history: [], live: [], ephemeral: [] };
    for (let round = 0; round < rounds; round++) {
      const policy = { encrypt: true, persist: true, sign: true };
      const room = await P.createRoom({ subject: `bench.persisted.r${round}`, policy });
      await P.invite(room.id, subId.signPubHex, 'reader');
      res.publish.push(
        N /
          (await timed(async () => {
            for (let i = 0; i < N; i++) await P.publish(room.id, PAYLOAD);
          }))
      );
      const inflight = 32;
      res.pipelined.push(
        N /
          (await timed(async () => {
            let next = 0;
            await Promise.all(
              Array.from({ length: inflight }, async () => {
                while (next < N) {
                  next++;
                  await P.publish(room.id, PAYLOAD);
                }
              })
            );
          }))
      );
      const c = counter(2 * N);
      let sub;
      res.history.push(
        N /
          (await timed(async () => {
            sub = await S.subscribe(room.id, c.handler, { from: 'start' });
            await c.all();
          }))
      );
      // live: the reader is subscribed (at the end of the history) while frames arrive
      const live = counter(N);
      await sub.stop();
      sub = await S.subscribe(room.id, live.handler, { from: 'new' });
      await new Promise((r) => setTimeout(r, 200));
      res.live.push(
        N /
          (await timed(async () => {
            const sending = (async () => {
              for (let i = 0; i < N; i++) await P.publish(room.id, PAYLOAD);
            })();
            await Promise.all([sending, live.all()]);
          }))
      );
      await sub.stop();

      const eph = await P.createRoom({
        subject: `bench.ephemeral.r${round}`,
        policy: { encrypt: true, persist: false, sign: true },
      });
      await P.invite(eph.id, subId.signPubHex, 'reader');
      let h = () => {};
      const esub = await S.subscribe(eph.id, () => h());
      await P.publish(eph.id, PAYLOAD); // warm-up, not counted
      await new Promise((r) => setTimeout(r, 200));
      const e = counter(N);
      h = e.handler;
      res.ephemeral.push(
        N /
          (await timed(async () => {
            for (let i = 0; i < N; i++) {
              await P.publish(eph.id, PAYLOAD);
              if (i % 500 === 499) await natsOf(P).flush();
            }
            await e.all();
          }))
      );
      await esub.stop();
    }
    const eph = median(res.ephemeral);
    const rows = [
      ['ephemeral room, end to end (yardstick)', eph],
      ['persisted publish, each awaited until stored', median(res.publish)],
      ['persisted publish, 32 in flight', median(res.pipelined)],
      ['persisted history read from the start', median(res.history)],
      ['persisted live delivery while publishing', median(res.live)],
    ].map(([label, rate]) => ({ label, rate }));
    console.log(`\npersisted rooms, 1 KiB sealed frames, N=${N}, ${rounds} rounds (medians)`);
    console.log(
      table(rows, [
        ['path', (r) => r.label],
        ['msgs/s', (r) => r.rate.toFixed(0)],
        ['vs ephemeral', (r) => (r.rate / eph).toFixed(3)],
      ])
    );
    await P.close();
    await S.close();
    admin.close();
  } finally {
    await d.dispose();
  }
}
