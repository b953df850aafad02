// Room blobs, one daemon, side by side in one run:
// 1. SDK upload (putBlob: encrypt on the client, signed streaming POST, digest
//    checked as it streams, stored in the room's object store) and download
//    (getBlob: streamed GET, every chunk verified and opened) of 64 MiB;
// 2. the yardstick: nats.js ObjectStore put/get of the same bytes on the same
//    nats-server (the node's own APP-account user, no HTTP, no crypto);
// 3. the daemon's RSS while a 512 MiB blob streams in: the signed-request
//    streaming path must keep it flat (goal: growth <= 64 MiB).
// The ratios (SDK / raw) are what to compare between runs.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, nkeyAuthenticator } from 'nats';
import { generateIdentity, loadIdentity } from '@sealbus/crypto';
import { ControlClient, Sealbus } from '@sealbus/client';
import { nodeUsers } from '@sealbus/membershipd';
import { startDaemon } from '@sealbus/testing';
import { median, table } from './lib.mjs';

const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const BIG = 512 * MiB;

const rss = (pid) =>
  Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;

async function timed(fn) {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

/** `total` pseudo-random bytes in 1 MiB pieces, made as they are pulled (constant memory). */
async function* generated(total) {
  const piece = new Uint8Array(MiB);
  for (let sent = 0, n = 0; sent < total; sent += MiB, n++) {
    for (let i = 0; i < piece.length; i += 4096) piece[i] = (n * 31 + i) & 0xff;
    yield piece.slice(0, Math.min(MiB, total - sent));
  }
}

export async function blobsBench({ rounds = 3 } = {}) {
  const d = await startDaemon({
    args: ['--log-level', 'warn', '--blob-max-bytes', '600MiB', '--room-blob-bytes', '4GiB'],
  });
  const closers = [];
  try {
    const admin = new ControlClient({
      urls: [d.httpUrl],
      identity: await loadIdentity(join(d.dataDir, 'admin.id')),
    });
    closers.push(() => admin.close());
    const id = generateIdentity();
    await admin.addUser({
      sign_pub: id.signPubHex,
      kex_pub: id.kexPubHex,
      handle: 'bench-blobs',
      role: 'member',
    });
    const bus = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity: id,
    });
    closers.push(() => bus.close());
    const room = await bus.createRoom({
      subject: 'bench.blobs',
      policy: { encrypt: true, persist: false, sign: true },
    });
    // The node's own APP-account user: the raw object store beside the blobs.
    const users = nodeUsers(await loadIdentity(join(d.dataDir, 'internal.id')));
    const nc = await connect({
      servers: d.natsUrl,
      authenticator: nkeyAuthenticator(users.app.getSeed()),
    });
    closers.push(() => nc.close());
    const js = nc.jetstream();
    const os = await js.views.os('bench_raw_blobs', { replicas: 1 });

    const data = new Uint8Array(SIZE);
    for (let i = 0; i < SIZE; i += 4096) data[i] = i & 0xff;
    const res = { up: [], down: [], put: [], get: [] };
    for (let round = 0; round < rounds; round++) {
      data[0] = round; // a new blob each round (uploads are idempotent by hash)
      let ref;
      res.up.push(SIZE / MiB / (await timed(async () => (ref = await bus.putBlob(room.id, data)))));
      res.down.push(
        SIZE /
          MiB /
          (await timed(async () => {
            const back = await bus.getBlob(room.id, ref);
            if (back.length !== SIZE) throw new Error('short download');
          }))
      );
      const name = `raw-${round}`;
      res.put.push(SIZE / MiB / (await timed(() => os.put({ name }, readable(data)))));
      res.get.push(
        SIZE /
          MiB /
          (await timed(async () => {
            const r = await os.get(name);
            let n = 0;
            for await (const c of r.data) n += c.length;
            if (n !== SIZE) throw new Error('short raw get');
          }))
      );
    }

    // RSS of membershipd while 512 MiB stream in (sampled every 20 ms).
    const pid = d.proc.pid;
    const before = rss(pid);
    let peak = before;
    const sampler = setInterval(() => {
      peak = Math.max(peak, rss(pid));
    }, 20);
    let bigSecs;
    try {
      bigSecs = await timed(() => bus.putBlob(room.id, generated(BIG)));
    } finally {
      clearInterval(sampler);
    }
    const growth = (peak - before) / MiB;

    const m = Object.fromEntries(Object.entries(res).map(([k, v]) => [k, median(v)]));
    console.log(`\nblobs: ${SIZE / MiB} MiB, median of ${rounds} rounds, one daemon (single node)`);
    const rows = [
      { path: 'SDK putBlob (encrypt + signed POST)', mib_s: m.up, vs_raw: m.up / m.put },
      { path: 'raw ObjectStore.put', mib_s: m.put, vs_raw: 1 },
      { path: 'SDK getBlob (GET + verify + open)', mib_s: m.down, vs_raw: m.down / m.get },
      { path: 'raw ObjectStore.get', mib_s: m.get, vs_raw: 1 },
    ];
    console.log(
      table(rows, [
        ['path', (r) => r.path],
        ['MiB/s', (r) => r.mib_s.toFixed(1)],
        ['÷ raw', (r) => r.vs_raw.toFixed(2)],
      ])
    );
    console.log(
      `  512 MiB streamed upload: ${(BIG / MiB / bigSecs).toFixed(1)} MiB/s; membershipd RSS ` +
        `${(before / MiB).toFixed(0)} MiB before, peak ${(peak / MiB).toFixed(0)} MiB: ` +
        `growth ${growth.toFixed(1)} MiB (goal <= 64)`
    );
    console.log('  goal: SDK / raw >= 0.5 both ways');
    return {
      figures: {
        'blobs.upload_mib_s': m.up,
        'blobs.download_mib_s': m.down,
        'blobs.raw_put_mib_s': m.put,
        'blobs.raw_get_mib_s': m.get,
        'blobs.upload_over_raw': m.up / m.put,
        'blobs.download_over_raw': m.down / m.get,
        'blobs.rss_growth_mib_512': growth,
      },
    };
  } finally {
    for (const c of closers.reverse()) await Promise.resolve(c()).catch(() => {});
    await d.dispose();
  }
}

/** A web ReadableStream of `bytes` in 1 MiB pieces (what ObjectStore.put takes). */
function readable(bytes) {
  let at = 0;
  return new ReadableStream({
    pull(c) {
      if (at >= bytes.length) return c.close();
      c.enqueue(bytes.subarray(at, at + MiB));
      at += MiB;
    },
  });
}
