// Durability benchmark: what `sync_interval: always` (the default: every
// JetStream write fsynced before it is acknowledged) costs against a relaxed
// `--jetstream-sync 2m`, two daemons side by side, rounds interleaved so
// drift hits both alike. Measured: signed GET /me (its nonce is one JetStream
// write), user adds (KV puts and an audit record each), and persisted-room
// appends through the SDK.

import { join } from 'node:path';
import {
  encodePublicIdentity,
  generateIdentity,
  loadIdentity,
  requestSigner,
  signRequest,
} from '@sealbus/crypto';
import { ControlClient, Sealbus } from '@sealbus/client';
import { startDaemon } from '@sealbus/testing';
import { load, median, table } from './lib.mjs';

export async function durabilityBench({ durationMs = 3_000, rounds = 3, concurrency = 32 } = {}) {
  const variants = [
    { name: 'sync always (default)', args: [] },
    { name: 'sync every 2m', args: ['--jetstream-sync', '2m'] },
  ];
  const daemons = [];
  const closers = [];
  try {
    for (const v of variants)
      daemons.push(await startDaemon({ args: [...v.args, '--log-level', 'error'] }));
    const admins = await Promise.all(
      daemons.map(async (d) => loadIdentity(join(d.dataDir, 'admin.id')))
    );
    const budget = Math.ceil((durationMs / 1000) * 15_000);
    const reads = variants.map(() => []);
    const adds = variants.map(() => []);
    const appends = variants.map(() => []);
    const buses = [];
    const rooms = [];
    for (const [i, d] of daemons.entries()) {
      const ctl = new ControlClient({ urls: [d.httpUrl], identity: admins[i] });
      closers.push(() => ctl.close());
      const writer = generateIdentity();
      await ctl.addUser({ public: encodePublicIdentity(writer), handle: 'writer', role: 'member' });
      const bus = await Sealbus.connect({
        natsServers: [d.natsUrl],
        controlUrls: [d.httpUrl],
        identity: writer,
      });
      closers.push(() => bus.close());
      buses.push(bus);
      rooms.push(
        await bus.createRoom({
          subject: 'bench.durable',
          policy: { encrypt: true, persist: true, sign: true },
        })
      );
    }
    const payload = new Uint8Array(1024);
    for (let round = -1; round < rounds; round++) {
      for (const [i, d] of daemons.entries()) {
        // Signed reads: one nonce write each.
        const signer = requestSigner(admins[i]);
        const url = new URL('/me', d.httpUrl);
        const hs = Array.from({ length: budget }, () =>
          signRequest(signer, { method: 'GET', url }, { lifetimeSec: 300 })
        );
        const r = await load({
          origin: d.httpUrl,
          path: '/me',
          headersFor: (n) => hs[n] ?? {},
          durationMs: round < 0 ? 500 : durationMs,
          concurrency,
        });
        if (r.failed > 0) throw new Error(`${variants[i].name}: ${r.failed} reads failed`);
        // User adds: KV creates, index, audit record; 8 at a time.
        const ctl = new ControlClient({ urls: [d.httpUrl], identity: admins[i] });
        const n = round < 0 ? 16 : 160;
        let t0 = performance.now();
        for (let k = 0; k < n; k += 8)
          await Promise.all(
            Array.from({ length: 8 }, (_, j) =>
              ctl.addUser({
                public: encodePublicIdentity(generateIdentity()),
                handle: `r${round}u${k + j}`,
                role: 'member',
              })
            )
          );
        const addsPerSec = n / ((performance.now() - t0) / 1000);
        ctl.close();
        // Persisted appends: 1 KiB frames, 16 in flight.
        const m = round < 0 ? 32 : 400;
        t0 = performance.now();
        for (let k = 0; k < m; k += 16)
          await Promise.all(
            Array.from({ length: 16 }, () => buses[i].publish(rooms[i].id, payload))
          );
        const appendsPerSec = m / ((performance.now() - t0) / 1000);
        if (round >= 0) {
          reads[i].push(r.rps);
          adds[i].push(addsPerSec);
          appends[i].push(appendsPerSec);
        }
      }
    }
    const rows = variants.map((v, i) => ({
      name: v.name,
      reads: median(reads[i]),
      adds: median(adds[i]),
      appends: median(appends[i]),
    }));
    console.log(`\ndurability, ${rounds} interleaved rounds, loopback (medians; per second)`);
    console.log(
      table(rows, [
        ['JetStream sync', (r) => r.name],
        ['signed GET /me', (r) => r.reads.toFixed(0)],
        ['user adds', (r) => r.adds.toFixed(0)],
        ['persisted appends (1 KiB)', (r) => r.appends.toFixed(0)],
      ])
    );
    const [always, relaxed] = rows;
    const figures = {
      'durability.signed_read_always_over_relaxed': always.reads / relaxed.reads,
      'durability.user_add_always_over_relaxed': always.adds / relaxed.adds,
      'durability.append_always_over_relaxed': always.appends / relaxed.appends,
    };
    console.log(
      Object.entries(figures)
        .map(([k, v]) => `${k}: ${v.toFixed(3)}`)
        .join('   ')
    );
    return { figures };
  } finally {
    for (const c of closers.reverse()) await Promise.resolve(c()).catch(() => {});
    for (const d of daemons) await d.dispose();
  }
}
