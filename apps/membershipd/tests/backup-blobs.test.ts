// Backups carry room blobs (ciphertext) unless --no-blobs says otherwise;
// `backup inspect` says which; a restore puts them back, checks every blob
// against its name before writing and reads them back after; an archive
// whose blob does not hash to its name is refused with nothing written.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFile, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import * as tar from 'tar-stream';
import { ControlClient, SealbusError, type BlobRef, type Sealbus } from '@sealbus/client';
import { Sealbus as Bus } from '@sealbus/client';
import {
  runMembershipd,
  startDaemon,
  tempDir,
  type TempDir,
  type TestDaemon,
} from '@sealbus/testing';
import type { Identity } from '@sealbus/crypto';
import {
  blobRecordDefect,
  buildArchive,
  readArchive,
  sha256,
  type BlobRecord,
} from '../src/backup/archive.js';
import { firstDifference } from '../src/backup/snapshot.js';
import { adminOf, busOf, enrol } from './helpers.js';

const KiB = 1024;

interface Manifest {
  blobs?: string;
  sections: Array<{ name: string; kind: string; count: number; sha256: string; bytes: number }>;
}

async function inspect(file: string): Promise<{ json: Manifest; text: string }> {
  const j = await runMembershipd(['backup', 'inspect', file, '-o', 'json']);
  assert.equal(j.code, 0, j.stderr);
  const t = await runMembershipd(['backup', 'inspect', file]);
  assert.equal(t.code, 0, t.stderr);
  return { json: JSON.parse(j.stdout) as Manifest, text: t.stdout };
}

async function restore(data: string, file: string): Promise<{ code: number | null; out: string }> {
  const r = await runMembershipd([
    'restore',
    '--data',
    data,
    '--in',
    file,
    '--allow-unauthenticated',
    '-o',
    'json',
  ]);
  return { code: r.code, out: r.stdout + r.stderr };
}

/** Rewrites one file of a plaintext archive, checksums and sizes recomputed (an attacker's edit). */
async function doctor(
  src: string,
  dst: string,
  edit: (name: string, body: Buffer) => Buffer
): Promise<void> {
  const files = new Map<string, Buffer>();
  await new Promise<void>((resolve, reject) => {
    const x = tar.extract();
    x.on('entry', (h, s, next) => {
      const parts: Buffer[] = [];
      s.on('data', (c: unknown) => parts.push(c as Buffer));
      s.on('end', () => {
        files.set(h.name, Buffer.concat(parts));
        next();
      });
    });
    x.on('finish', resolve);
    x.on('error', reject);
    void readFile(src).then((b) => x.end(gunzipSync(b)));
  });
  const manifest = JSON.parse(files.get('manifest.json')!.toString('utf8')) as Manifest & {
    sections: Array<{ file: string }>;
  };
  for (const s of manifest.sections) {
    const body = edit(s.file, files.get(s.file)!);
    files.set(s.file, body);
    s.bytes = body.length;
    s.sha256 = sha256(body);
  }
  files.set('manifest.json', Buffer.from(JSON.stringify(manifest, null, 2) + '\n'));
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack as unknown as AsyncIterable<Buffer>) chunks.push(c);
  })();
  for (const [name, body] of files) {
    await new Promise<void>((r, j) =>
      pack.entry({ name, size: body.length, mode: 0o600 }, body, (e) => (e ? j(e) : r()))
    );
  }
  pack.finalize();
  await done;
  await writeFile(dst, gzipSync(Buffer.concat(chunks)), { mode: 0o600 });
}

describe('backups with room blobs', { timeout: 600_000 }, () => {
  let dir: TempDir;
  let d: TestDaemon;
  let src: string;
  let admin: ControlClient;
  let owner: Identity;
  const closers: Array<() => Promise<unknown> | void> = [];
  let A: Sealbus;
  let eph: string;
  let per: string;
  const blobs: Array<{ room: () => string; bytes: Uint8Array; ref?: BlobRef }> = [];
  let withBlobs: string;
  let without: string;

  before(async () => {
    dir = await tempDir('sealbus-backup-blobs-');
    src = join(dir.path, 'src');
    d = await startDaemon({ dataDir: src });
    admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    const a = await enrol(admin, d, 'alice');
    owner = a.id;
    A = await busOf(d, a.id, closers);
    eph = (
      await A.createRoom({
        subject: 'bak.blob.eph',
        policy: { encrypt: true, persist: false, sign: true },
      })
    ).id;
    per = (
      await A.createRoom({
        subject: 'bak.blob.per',
        policy: { encrypt: true, persist: true, sign: true },
      })
    ).id;
    blobs.push(
      { room: () => eph, bytes: new Uint8Array(0) },
      { room: () => eph, bytes: randomBytes(1) },
      { room: () => eph, bytes: randomBytes(300 * KiB) }, // several stored chunks
      { room: () => per, bytes: randomBytes(64 * KiB + 1) }
    );
    for (const b of blobs) b.ref = await A.putBlob(b.room(), b.bytes);
    withBlobs = join(dir.path, 'with.sbk');
    without = join(dir.path, 'without.sbk');
    let r = await runMembershipd(['backup', '--data', src, '--out', withBlobs]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /blobs +included \(4 in 2 rooms\)/);
    r = await runMembershipd(['backup', '--data', src, '--out', without, '--no-blobs']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /blobs +left out \(--no-blobs\)/);
  });

  after(async () => {
    for (const c of closers.reverse()) await c();
    admin?.close();
    await d?.dispose();
    await dir?.remove();
  });

  test('backup inspect says whether blobs are in, and how many', async () => {
    const w = await inspect(withBlobs);
    assert.equal(w.json.blobs, 'included');
    const sections = w.json.sections.filter((s) => s.kind === 'blobs');
    assert.deepEqual(
      sections.map((s) => [s.name, s.count]).sort(),
      [
        [`sealbus_blobs_${eph}`, 3],
        [`sealbus_blobs_${per}`, 1],
      ].sort()
    );
    assert.match(w.text, /blobs +included \(4 in 2 rooms\)/);
    const wo = await inspect(without);
    assert.equal(wo.json.blobs, 'omitted');
    assert.equal(wo.json.sections.filter((s) => s.kind === 'blobs').length, 0);
    assert.match(wo.text, /left out \(--no-blobs\)/);
    // The archive holds ciphertext only: no plaintext blob is in it.
    const tarBytes = gunzipSync(await readFile(withBlobs));
    const big = blobs[2]!.bytes;
    assert.equal(
      tarBytes.includes(Buffer.from(big).toString('base64').slice(0, 64)),
      false,
      'a blob plaintext (base64) in the archive'
    );
    assert.equal(tarBytes.includes(Buffer.from(big.subarray(0, 64))), false);
  });

  test('restore puts every blob back (read back by the restore, then by a member through the SDK); --no-blobs restores none', async () => {
    await d.stop();
    const dst = join(dir.path, 'dst');
    const r = await restore(dst, withBlobs);
    assert.equal(r.code, 0, r.out);
    const report = JSON.parse(r.out.slice(0, r.out.lastIndexOf('}') + 1)) as {
      verified: boolean;
      sections: Array<{ name: string; kind: string; count: number }>;
    };
    assert.equal(report.verified, true);
    assert.deepEqual(
      report.sections
        .filter((s) => s.kind === 'blobs')
        .map((s) => s.count)
        .sort(),
      [1, 3]
    );
    // A backup of the restored store has the same blob sections, byte for byte.
    const again = join(dir.path, 'again.sbk');
    await copyFile(join(src, 'admin.id'), join(dst, 'admin.id'));
    const restored = await startDaemon({ dataDir: dst });
    const local: Array<() => Promise<unknown> | void> = [];
    try {
      const rb = await runMembershipd(['backup', '--data', dst, '--out', again]);
      assert.equal(rb.code, 0, rb.stderr);
      const blobSums = (m: Manifest) =>
        m.sections
          .filter((s) => s.kind === 'blobs')
          .map((s) => `${s.name}:${s.sha256}`)
          .sort();
      assert.deepEqual(
        blobSums((await inspect(again)).json),
        blobSums((await inspect(withBlobs)).json)
      );
      const bus = await Bus.connect({
        natsServers: [restored.natsUrl],
        controlUrls: [restored.httpUrl],
        identity: owner,
      });
      local.push(() => bus.close());
      for (const b of blobs) {
        const back = await bus.getBlob(b.room(), b.ref!);
        assert.equal(Buffer.compare(Buffer.from(back), Buffer.from(b.bytes)), 0);
      }
    } finally {
      for (const c of local) await c();
      await restored.dispose();
    }
    // The archive without blobs restores the rooms, not their blobs.
    const bare = join(dir.path, 'bare');
    assert.equal((await restore(bare, without)).code, 0);
    await copyFile(join(src, 'admin.id'), join(bare, 'admin.id'));
    const node = await startDaemon({ dataDir: bare });
    try {
      const bus = await Bus.connect({
        natsServers: [node.natsUrl],
        controlUrls: [node.httpUrl],
        identity: owner,
      });
      try {
        await assert.rejects(bus.getBlob(eph, blobs[2]!.ref!), (e: unknown) => {
          assert.ok(e instanceof SealbusError, String(e));
          assert.match(`${e.code} ${e.message}`, /NOT_FOUND|404/);
          return true;
        });
      } finally {
        await bus.close();
      }
    } finally {
      await node.dispose();
    }
  });

  test('an archive whose blob does not hash to its name is refused, nothing written (checksums redone by the attacker)', async () => {
    const bad = join(dir.path, 'bad.sbk');
    await doctor(withBlobs, bad, (name, body) => {
      if (!name.startsWith('blobs/') || !name.includes(per)) return body;
      const r = JSON.parse(body.toString('utf8')) as BlobRecord;
      const bytes = Buffer.from(r.data, 'base64');
      bytes[5] = bytes[5]! ^ 1;
      return Buffer.from(JSON.stringify({ ...r, data: bytes.toString('base64') }) + '\n');
    });
    const target = join(dir.path, 'never');
    const r = await restore(target, bad);
    assert.equal(r.code, 1, r.out);
    assert.match(r.out, /hash(es)? to/);
    await assert.rejects(stat(join(target, 'nats')), 'nothing written');
    // The control: the same edit that changes nothing restores.
    const same = join(dir.path, 'same.sbk');
    await doctor(withBlobs, same, (_n, body) => body);
    assert.equal((await restore(join(dir.path, 'same-dst'), same)).code, 0);
  });

  test('blob records: defects named; a read-back that differs in one byte is caught', async () => {
    const bytes = randomBytes(100);
    const good: BlobRecord = { hash: sha256(bytes), size: 100, data: bytes.toString('base64') };
    assert.equal(blobRecordDefect(good), undefined);
    assert.match(blobRecordDefect({ ...good, size: 99 })!, /100 bytes, the record says 99/);
    const flipped = Buffer.from(bytes);
    flipped[0] = flipped[0]! ^ 1;
    assert.match(blobRecordDefect({ ...good, data: flipped.toString('base64') })!, /hash/);
    assert.match(blobRecordDefect({ ...good, data: good.data + '=' })!, /canonical/);
    assert.equal(firstDifference('blobs', [good], [good]), undefined);
    assert.equal(
      firstDifference('blobs', [good], [{ ...good, data: flipped.toString('base64') }]),
      'record 1 differs'
    );
    assert.match(firstDifference('blobs', [good], [])!, /not in the store/);
  });

  test('an archive over the size a restore reads is not written; --no-blobs is the way out', async () => {
    // Built in memory with the real builder: a blob section over the cap.
    const huge = Buffer.alloc(400 * KiB);
    const rec: BlobRecord = {
      hash: sha256(huge),
      size: huge.length,
      data: huge.toString('base64'),
    };
    const sections = Array.from({ length: 3 }, (_, i) => ({
      name: `sealbus_blobs_${i.toString(16).padStart(24, '0')}`,
      kind: 'blobs' as const,
      records: [rec],
    }));
    await assert.rejects(
      buildArchive(
        {
          sealbus_version: 'test',
          created_at: new Date().toISOString(),
          source: { mode: 'live', data_dir: null, nats_server: null, at_rest: null },
          blobs: 'included',
        },
        sections,
        1024 * KiB
      ),
      /more than the 1\.0 MiB a restore reads \(leave room blobs out with --no-blobs\)/
    );
    // And what is written is read back whole (the cap is the reader's).
    const small = await buildArchive(
      {
        sealbus_version: 'test',
        created_at: new Date().toISOString(),
        source: { mode: 'live', data_dir: null, nats_server: null, at_rest: null },
        blobs: 'included',
      },
      [
        {
          name: sections[0]!.name,
          kind: 'blobs',
          records: [{ ...rec, size: 0, hash: sha256(Buffer.alloc(0)), data: '' }],
        },
      ]
    );
    const f = join(dir.path, 'small.sbk');
    await writeFile(f, small.bytes);
    const back = await readArchive(f);
    assert.equal(back.sections[0]!.records.length, 1);
  });
});
