// The SDK's blobs against a real daemon: putBlob / getBlob / getBlobStream
// round trips (0 B to a streamed 200 MiB), publishBlob delivering m.blob in
// ephemeral and persisted rooms, server-side tampering refused with
// BLOB_CORRUPT, and the plaintext never under the data directory.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { ControlClient, SealbusError, type RoomMessage, type Sealbus } from '@sealbus/client';
import { startDaemon, waitFor, type TestDaemon } from '@sealbus/testing';
import type { NatsConnection } from 'nats';
import { adminOf, busOf, enrol, nodeStore } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true }))
    if (e.isFile()) out.push(join(e.parentPath ?? e.path, e.name));
  return out;
}

async function dataDirHas(dir: string, marker: Buffer): Promise<boolean> {
  for (const f of await filesUnder(dir)) {
    const b = await readFile(f).catch(() => Buffer.alloc(0));
    if (b.includes(marker)) return true;
  }
  return false;
}

const rssOf = (pid: number) =>
  Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;

describe('SDK blobs against a daemon', { timeout: 600_000 }, () => {
  let d: TestDaemon;
  let admin: ControlClient;
  const closers: Array<() => Promise<unknown> | void> = [];
  let A: Sealbus;
  let B: Sealbus;
  let bId: string;
  let node: { nc: NatsConnection; app: NatsConnection };
  let eph: string;
  let per: string;

  before(async () => {
    d = await startDaemon({
      args: ['--blob-max-bytes', '256MiB', '--room-blob-bytes', '1GiB', '--log-level', 'info'],
    });
    admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    const a = await enrol(admin, d, 'alice');
    const b = await enrol(admin, d, 'bob');
    bId = b.id.signPubHex;
    A = await busOf(d, a.id, closers);
    B = await busOf(d, b.id, closers);
    eph = (
      await A.createRoom({
        subject: 'blob.eph',
        policy: { encrypt: true, persist: false, sign: true },
      })
    ).id;
    per = (
      await A.createRoom({
        subject: 'blob.per',
        policy: { encrypt: true, persist: true, sign: true },
      })
    ).id;
    await A.invite(eph, bId, 'writer');
    await A.invite(per, bId, 'reader');
    const n = await nodeStore(d);
    node = { nc: n.nc, app: n.app };
  });

  after(async () => {
    for (const c of closers.reverse()) await c();
    admin?.close();
    await node?.nc.close();
    await node?.app.close();
    await d?.dispose();
  });

  test('round trips of 0 B, 1 B, 64 KiB - 1, 64 KiB, 64 KiB + 1 and 5 MiB, each input kind', async () => {
    for (const n of [0, 1, 64 * KiB - 1, 64 * KiB, 64 * KiB + 1, 5 * MiB]) {
      const bytes = randomBytes(n);
      const ref = await A.putBlob(eph, bytes);
      assert.equal(ref.size, n);
      assert.equal(ref.chunk, 64 * KiB);
      const back = await B.getBlob(eph, ref);
      assert.ok(Buffer.from(back).equals(bytes), `${n} bytes`);
    }
    const text = 'héllo blob ✓';
    const r1 = await B.putBlob(eph, text);
    assert.equal(Buffer.from(await A.getBlob(eph, r1)).toString('utf8'), text);
    const parts = [randomBytes(1000), randomBytes(70_000), randomBytes(5)];
    const r2 = await A.putBlob(
      eph,
      (async function* () {
        yield* parts;
      })()
    );
    const r3 = await A.putBlob(per, ReadableStream.from(parts));
    for (const r of [r2, r3]) {
      const room = r === r3 ? per : eph;
      const chunks: Uint8Array[] = [];
      for await (const p of await B.getBlobStream(room, r)) chunks.push(p);
      assert.ok(Buffer.concat(chunks).equals(Buffer.concat(parts)));
    }
    // A reader cannot store blobs.
    await assert.rejects(B.putBlob(per, 'x'), (e: SealbusError) => e.code === 'NOT_WRITER');
  });

  test('publishBlob: receivers see m.blob in ephemeral and persisted rooms; other messages have none', async () => {
    for (const room of [eph, per]) {
      const got: RoomMessage[] = [];
      const sub = await B.subscribe(room, (m) => void got.push(m));
      await A.publish(room, 'plain');
      const bytes = randomBytes(100 * KiB);
      const ref = await A.publishBlob(room, bytes, { name: 'x.bin', type: 'application/x-test' });
      await waitFor(() => got.length >= 2, { timeoutMs: 10_000, what: 'two messages' });
      assert.equal(got[0]!.blob, undefined);
      assert.deepEqual(got[1]!.blob, ref);
      assert.equal(got[1]!.blob!.name, 'x.bin');
      assert.ok(Buffer.from(await B.getBlob(room, got[1]!.blob!)).equals(bytes));
      await sub.stop();
    }
  });

  test('truncated, reordered and flipped chunks on the server are BLOB_CORRUPT, no plaintext returned', async () => {
    const plain = randomBytes(200 * KiB); // 4 chunks: 3 x 64 KiB + 8 KiB
    const ref = await A.putBlob(eph, plain);
    const os = await node.app.jetstream().views.os(`sealbus_blobs_${eph}`);
    const stored = Buffer.from((await os.getBlob(ref.hash))!);
    const R = 64 * KiB + 16;
    const records = [0, 1, 2, 3].map((i) => stored.subarray(i * R, (i + 1) * R));
    const flipped = Buffer.from(stored);
    flipped[R + 100]! ^= 1;
    const cases: Record<string, Buffer> = {
      truncated: Buffer.concat(records.slice(0, 3)),
      reordered: Buffer.concat([records[1]!, records[0]!, records[2]!, records[3]!]),
      flipped,
      'last chunk cut': stored.subarray(0, stored.length - 1),
    };
    for (const [what, bytes] of Object.entries(cases)) {
      // The node's own connection rewrites the object under the same name.
      await os.putBlob({ name: ref.hash }, bytes);
      await assert.rejects(
        B.getBlob(eph, ref),
        (e: SealbusError) => e instanceof SealbusError && e.code === 'BLOB_CORRUPT',
        what
      );
      // The stream: pieces before the bad chunk were verified; the bad one never comes out.
      const seen: Uint8Array[] = [];
      await assert.rejects(
        async () => {
          for await (const p of await B.getBlobStream(eph, ref)) seen.push(Uint8Array.from(p));
        },
        (e: SealbusError) => e.code === 'BLOB_CORRUPT'
      );
      const out = Buffer.concat(seen);
      assert.ok(plain.subarray(0, out.length).equals(out), `${what}: only verified plaintext`);
      assert.ok(out.length < plain.length, `${what}: not the whole blob`);
    }
    await os.putBlob({ name: ref.hash }, stored);
    assert.ok(Buffer.from(await B.getBlob(eph, ref)).equals(plain), 'restored: opens again');
  });

  test('the plaintext is never under the data directory (a marker written in clear is found)', async () => {
    const marker = Buffer.from(`sealbus-marker-${randomBytes(12).toString('hex')}`);
    const plain = Buffer.concat([randomBytes(1000), marker, randomBytes(1000)]);
    await A.putBlob(eph, plain);
    await A.putBlob(per, plain);
    assert.equal(await dataDirHas(d.dataDir, marker), false, 'no plaintext in the store');
    // Control: the same bytes stored in clear through the same store are found.
    const os = await node.nc.jetstream().views.os('sealbus_test_clear');
    await os.putBlob({ name: 'clear' }, plain);
    await waitFor(() => dataDirHas(d.dataDir, marker), {
      timeoutMs: 10_000,
      what: 'the marker written in clear',
    });
    await os.destroy();
  });

  test('a streamed 200 MiB blob: up and down in constant memory, client and daemon', async () => {
    const N = 200 * MiB;
    const block = randomBytes(MiB);
    const h = createHash('sha256');
    async function* source() {
      for (let i = 0; i < N / MiB; i++) {
        block[0] = i & 0xff;
        block[1] = i >> 8;
        h.update(block);
        yield block;
      }
    }
    const pid = d.proc.pid!;
    global.gc?.();
    const base = { daemon: rssOf(pid), client: process.memoryUsage().rss };
    let peak = { ...base };
    const timer = setInterval(() => {
      peak = {
        daemon: Math.max(peak.daemon, rssOf(pid)),
        client: Math.max(peak.client, process.memoryUsage().rss),
      };
    }, 50);
    try {
      const t0 = Date.now();
      const ref = await A.putBlob(eph, source());
      const up = Date.now() - t0;
      const want = h.digest('hex');
      const h2 = createHash('sha256');
      let n = 0;
      const t1 = Date.now();
      for await (const p of await B.getBlobStream(eph, ref)) {
        h2.update(p);
        n += p.length;
      }
      const down = Date.now() - t1;
      assert.equal(n, N);
      assert.equal(h2.digest('hex'), want);
      const grow = {
        daemon: (peak.daemon - base.daemon) / MiB,
        client: (peak.client - base.client) / MiB,
      };
      console.log(
        `# 200 MiB: up ${up} ms (${((200 * 1000) / up).toFixed(1)} MiB/s), down ${down} ms; ` +
          `RSS growth daemon ${grow.daemon.toFixed(1)} MiB, client ${grow.client.toFixed(1)} MiB`
      );
      assert.ok(grow.daemon < 96, `daemon RSS grew ${grow.daemon.toFixed(1)} MiB`);
      assert.ok(grow.client < 96, `client RSS grew ${grow.client.toFixed(1)} MiB`);
    } finally {
      clearInterval(timer);
    }
  });
});
