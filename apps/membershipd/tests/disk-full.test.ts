// A real full disk: the node's data dir lives on a small tmpfs that the test
// fills to the last block. Changes are refused at once with a stable code
// (507 STORAGE_FULL; the CLI exits 1), nothing is half-written, health says
// so, and the node recovers by itself when space returns. Signed reads keep
// working: a single node records request nonces in memory, not on disk
// (docs/RUNBOOK.md says so).
//
// Mounting needs root (or CAP_SYS_ADMIN); without it the test says so and
// skips rather than pretending.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ControlClient, ControlError } from '@sealbus/client';
import { generateIdentity } from '@sealbus/crypto';
import type { NatsConnection } from 'nats';
import type { MembershipStore } from '@sealbus/store';
import { runMembershipd, startDaemon, waitFor, type TestDaemon } from '@sealbus/testing';
import { adminOf, nodeStore } from './helpers.js';

const SIZE_MB = 64;

describe('a full disk under the data dir (a filled tmpfs)', { timeout: 300_000 }, () => {
  let mnt = '';
  let mounted: string | null = null;
  let d: TestDaemon | undefined;
  let admin: ControlClient | undefined;
  let store: MembershipStore;
  let nc: NatsConnection | undefined;
  let app: NatsConnection | undefined;

  before(async () => {
    mnt = mkdtempSync(join(tmpdir(), 'sealbus-diskfull-'));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${SIZE_MB}m,mode=0700`, 'tmpfs', mnt], {
        stdio: 'pipe',
      });
    } catch (err) {
      mounted = `cannot mount a tmpfs here (needs root): ${(err as Error).message.split('\n')[0]}`;
      return;
    }
    // Room streams are capped far below the disk, so JetStream's own
    // reservation fits on the small filesystem.
    d = await startDaemon({
      dataDir: join(mnt, 'data'),
      args: ['--app-max-bytes', '8MiB', '--room-max-bytes', '1MiB'],
    });
    admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d), timeoutMs: 20_000 });
    ({ store, nc, app } = await nodeStore(d));
  });
  after(async () => {
    admin?.close();
    await nc?.close();
    await app?.close();
    await d?.dispose();
    if (mounted === null) execFileSync('umount', ['-l', mnt]);
    rmSync(mnt, { recursive: true, force: true });
  });

  const addUser = (handle: string) => {
    const id = generateIdentity();
    return admin!.addUser({
      handle,
      sign_pub: id.signPubHex,
      kex_pub: id.kexPubHex,
      role: 'member',
    });
  };
  const health = async (path: string) => {
    const r = await fetch(`${d!.httpUrl}${path}`);
    return { status: r.status, json: (await r.json()) as any };
  };

  test('changes are refused at once with 507 STORAGE_FULL, nothing half-written, health says so, and the node recovers when space returns', async (t) => {
    if (mounted !== null) return t.skip(mounted);
    await addUser('before-full');
    assert.equal((await health('/readyz')).status, 200);

    // Fill the filesystem: one file takes every free block; the store's
    // open block files may still have room in their last page, so keep
    // adding users until the store refuses (bounded).
    const filler = join(mnt, 'filler');
    execFileSync('fallocate', [
      '-l',
      String(statfsSync(mnt).bavail * statfsSync(mnt).bsize),
      filler,
    ]);
    assert.equal(statfsSync(mnt).bavail, 0, 'the filesystem is full');
    let refused: ControlError | undefined;
    let refusedMs = 0;
    let added = 0;
    for (let i = 0; i < 2_000 && !refused; i++) {
      const t0 = Date.now();
      try {
        await addUser(`fill-${i}`);
        added++;
      } catch (err) {
        refused = err as ControlError;
        refusedMs = Date.now() - t0;
      }
    }
    assert.ok(refused instanceof ControlError, `refused after ${added} more users`);
    assert.equal(refused.status, 507, refused.message);
    assert.equal(refused.code, 'STORAGE_FULL');
    // At once: waiting does not free space, so the store does not retry.
    assert.ok(refusedMs < 5_000, `refused after ${refusedMs} ms`);

    // Nothing half-written: the refused user is not in the store.
    const users = await store.listUsers();
    assert.ok(!users.some((u) => u.handle === `fill-${added}`), 'the refused user was not written');

    // The node's CLI says so and writes nothing either.
    const id = generateIdentity();
    const cli = await runMembershipd(
      [
        'user',
        'add',
        '--data',
        d!.dataDir,
        '--handle',
        'cli-when-full',
        '--sign-pub',
        id.signPubHex,
        '--kex-pub',
        id.kexPubHex,
        '--role',
        'member',
      ],
      { timeoutMs: 60_000 }
    );
    assert.equal(cli.code, 1, cli.stdout + cli.stderr);
    assert.match(cli.stderr, /full|no space/i);
    assert.ok(!(await store.listUsers()).some((u) => u.handle === 'cli-when-full'));

    // Signed reads keep working: a single node records request nonces in
    // its memory, so a read needs no write (with the replicated nonce
    // bucket, reads were refused once its last page was full).
    let reads = 0;
    for (; reads < 300; reads++) assert.equal((await admin!.me()).role, 'admin');
    const h = await health('/healthz');
    assert.equal(h.status, 503, JSON.stringify(h.json));
    assert.equal(h.json.reason, 'storage full');
    assert.equal(h.json.store.writable, false);
    // No byte figure for anyone who asks: it would measure what others store.
    assert.equal('disk_free_bytes' in h.json.store, false);
    const r = await health('/readyz');
    assert.deepEqual([r.status, r.json], [503, { ready: false, reason: 'storage full' }]);

    // Space returns: the node recovers by itself, no restart.
    rmSync(filler);
    await waitFor(async () => (await health('/readyz')).status === 200, {
      timeoutMs: 60_000,
      intervalMs: 500,
      what: 'ready again',
    });
    assert.equal((await health('/healthz')).json.store.writable, true);
    await addUser('after-space-returned');
    assert.equal((await admin!.me()).role, 'admin');
    console.log(
      `# disk full: ${added} users fitted in the last pages, then 507 STORAGE_FULL in ${refusedMs} ms; ` +
        `${reads} signed reads served while full; recovered without a restart`
    );
  });
});

describe('a small disk at start', { timeout: 180_000 }, () => {
  test('the default room cap is lowered to fit (the node starts and says so); a cap asked for that cannot fit is refused clearly', async (t) => {
    const mnt = mkdtempSync(join(tmpdir(), 'sealbus-smalldisk-'));
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m,mode=0700', 'tmpfs', mnt], {
        stdio: 'pipe',
      });
    } catch (err) {
      rmSync(mnt, { recursive: true, force: true });
      return t.skip(
        `cannot mount a tmpfs here (needs root): ${(err as Error).message.split('\n')[0]}`
      );
    }
    let d: TestDaemon | undefined;
    try {
      // Before the fix: "Can't start JetStream: ... insufficient storage
      // resources" (the default 10 GiB reservation on a 64 MiB disk).
      d = await startDaemon({ dataDir: join(mnt, 'a') });
      const warned = d.logs.find((l) =>
        /default --app-max-bytes does not fit this disk/.test(l.msg)
      );
      assert.ok(warned, 'the lowered cap is logged');
      const fitted = warned.app_max_bytes as number;
      assert.ok(fitted > 0 && fitted <= (SIZE_MB * 1024 * 1024) / 2, String(fitted));
      assert.equal((await fetch(`${d.httpUrl}/readyz`)).status, 200);
      await d.dispose();
      d = undefined;
      // Asked for explicitly: kept, and refused before nats-server starts.
      const r = await runMembershipd(
        [
          'serve',
          '--data',
          join(mnt, 'b'),
          '--http',
          '127.0.0.1:0',
          '--nats-port',
          '0',
          '--app-max-bytes',
          '1GiB',
        ],
        { timeoutMs: 60_000 }
      );
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stdout + r.stderr, /--app-max-bytes 1073741824 does not fit/);
    } finally {
      await d?.dispose();
      execFileSync('umount', ['-l', mnt]);
      rmSync(mnt, { recursive: true, force: true });
    }
  });
});
