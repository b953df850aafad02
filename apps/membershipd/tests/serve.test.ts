import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  freePort,
  freePorts,
  membershipdBin,
  pidAlive,
  runMembershipd,
  startDaemon,
  tempDir,
  waitFor,
  type TestDaemon,
} from '@sealbus/testing';

interface UserRow {
  sign_pub: string;
  kex_pub: string | null;
  handle: string;
  role: string;
  status: string;
  created_at: string;
  revoked_at: string | null;
}

async function listUsers(dataDir: string): Promise<UserRow[]> {
  const r = await runMembershipd(['user', 'list', '--data', dataDir, '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as UserRow[];
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(join(e.parentPath ?? e.path, e.name));
  }
  return out;
}

describe('membershipd serve, embedded single node', { timeout: 120_000 }, () => {
  let d: TestDaemon;

  before(async () => {
    d = await startDaemon();
  });
  after(async () => {
    await d?.dispose();
  });

  test('/healthz is 200 with the posture; /readyz is 200; unknown routes are JSON 404s', async () => {
    const res = await fetch(`${d.httpUrl}/healthz`);
    assert.equal(res.status, 200);
    const p = (await res.json()) as Record<string, any>;
    assert.equal(p.status, 'ok');
    assert.match(p.version, /^\d+\.\d+\.\d+/);
    assert.deepEqual(
      {
        ...p.store,
        leader: typeof p.store.leader,
      },
      {
        backend: 'jetstream-kv',
        replicas: 1,
        reachable: true,
        leader: 'string',
        current: 1,
        writable: true,
      }
    );
    assert.equal(p.auth.mode, 'enforce');
    assert.equal(p.nats.embedded, true);
    assert.equal(p.nats.connected, true);
    assert.match(p.nats.server_version, /^2\.\d+\.\d+/);
    assert.deepEqual(p.tls, { http: false, nats: false });
    const ready = await fetch(`${d.httpUrl}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { ready: true });
    const missing = await fetch(`${d.httpUrl}/nope`);
    assert.equal(missing.status, 404);
    assert.equal(((await missing.json()) as any).error.code, 'NOT_FOUND');
  });

  test('first start bootstraps admin #0: 0600 identity file, active admin, key printed once', async () => {
    const adminFile = join(d.dataDir, 'admin.id');
    assert.equal((await stat(adminFile)).mode & 0o777, 0o600);
    const admin = JSON.parse(await readFile(adminFile, 'utf8'));
    const users = await listUsers(d.dataDir);
    const row = users.find((u) => u.sign_pub === admin.sign_pub);
    assert.ok(row, 'admin #0 is registered');
    assert.equal(row.role, 'admin');
    assert.equal(row.status, 'active');
    assert.equal(row.kex_pub, admin.kex_pub);
    assert.equal(d.stderr().split(admin.sign_pub).length - 1, 1, 'public key printed exactly once');
    assert.ok(d.logs.some((l) => l.msg === 'created admin #0' && l.sign_pub === admin.sign_pub));
  });

  test('data dir: secrets are 0600, node.json says where the node listens, no secret anywhere else', async () => {
    for (const f of ['internal.id', 'admin.id', 'callout.key']) {
      assert.equal((await stat(join(d.dataDir, f))).mode & 0o777, 0o600, f);
    }
    assert.equal((await stat(d.dataDir)).mode & 0o077, 0, 'data dir closed to group and others');
    const node = JSON.parse(await readFile(join(d.dataDir, 'node.json'), 'utf8'));
    assert.equal(node.nats_url, d.natsUrl);
    assert.equal(node.http_url, d.httpUrl);
    assert.equal(node.nats_pid, d.natsPid);
    const secrets = await Promise.all(
      ['internal.id', 'admin.id'].map(async (f) =>
        JSON.parse(await readFile(join(d.dataDir, f), 'utf8'))
      )
    );
    const callout = JSON.parse(await readFile(join(d.dataDir, 'callout.key'), 'utf8'));
    assert.match(callout.issuer_seed, /^SA[A-Z2-7]{56}$/);
    assert.match(callout.xkey_seed, /^SX[A-Z2-7]{56}$/);
    const needles = [
      ...secrets.flatMap((s) => [s.sign_priv, s.kex_priv]),
      callout.issuer_seed,
      callout.xkey_seed,
    ];
    const haystacks: Array<[string, string]> = [
      ['stdout logs', JSON.stringify(d.logs)],
      ['stderr', d.stderr()],
    ];
    for (const f of await filesUnder(d.dataDir)) {
      if (f.endsWith('.id') || f.endsWith('callout.key')) continue;
      haystacks.push([f, (await readFile(f)).toString('latin1')]);
    }
    for (const [where, text] of haystacks) {
      for (const n of needles) assert.ok(!text.includes(n), `a secret found in ${where}`);
      assert.ok(!/\bS[UAX][A-Z2-7]{56}\b/.test(text), `an nkey seed found in ${where}`);
    }
    // the generated nats-server config names the callout by its public keys only
    const conf = await readFile(join(d.dataDir, 'nats', 'nats-server.conf'), 'utf8');
    assert.match(conf, /"auth_callout"/);
    assert.match(conf, /"issuer": "A[A-Z2-7]{55}"/);
    assert.match(conf, /"xkey": "X[A-Z2-7]{55}"/);
    // Acknowledged means on disk: every JetStream write is fsynced first.
    assert.match(conf, /"sync_interval": "always"/);
  });

  test('--jetstream-sync relaxes the sync policy, with a warning; nonsense is refused', async () => {
    const relaxed = await startDaemon({ args: ['--jetstream-sync', '2m'] });
    try {
      const conf = await readFile(join(relaxed.dataDir, 'nats', 'nats-server.conf'), 'utf8');
      assert.match(conf, /"sync_interval": "120000ms"/);
      assert.ok(
        relaxed.logs.some((l) => /can be lost with the power/.test(String(l.msg))),
        'the relaxed policy is warned about'
      );
    } finally {
      await relaxed.dispose();
    }
    const bad = await runMembershipd([
      'serve',
      '--data',
      '/nonexistent',
      '--jetstream-sync',
      '5ms',
    ]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /at least 100ms, or always/);
  });

  test('/healthz turns 503 while the store is unreachable and recovers', async () => {
    process.kill(d.natsPid, 'SIGSTOP');
    try {
      await waitFor(async () => (await fetch(`${d.httpUrl}/healthz`)).status === 503, {
        timeoutMs: 15_000,
        what: 'healthz 503',
      });
      const ready = await fetch(`${d.httpUrl}/readyz`);
      assert.equal(ready.status, 503);
    } finally {
      process.kill(d.natsPid, 'SIGCONT');
    }
    await waitFor(async () => (await fetch(`${d.httpUrl}/healthz`)).status === 200, {
      timeoutMs: 15_000,
      what: 'healthz 200',
    });
  });
});

describe('membershipd serve lifecycle', { timeout: 180_000 }, () => {
  test('SIGTERM stops HTTP, NATS and the child, exits 0; a restart keeps every user and admin #0', async () => {
    await using dir = await tempDir();
    const first = await startDaemon({ dataDir: dir.path });
    let restarted: TestDaemon | undefined;
    try {
      const add = await runMembershipd([
        'user',
        'add',
        '--data',
        dir.path,
        '--handle',
        'alice',
        '--sign-pub',
        'a1'.repeat(32),
        '--role',
        'member',
      ]);
      assert.equal(add.code, 0, add.stderr);
      const before = await listUsers(dir.path);
      const exit = await first.stop('SIGTERM');
      assert.deepEqual(exit, { code: 0, signal: null });
      assert.equal(pidAlive(first.natsPid), false, 'nats-server child is gone');
      assert.ok(first.logs.some((l) => l.msg === 'membershipd stopped'));

      restarted = await startDaemon({ dataDir: dir.path });
      assert.deepEqual(await listUsers(dir.path), before);
      assert.ok(!restarted.stderr().includes('created admin #0'), 'no second admin #0');
      assert.ok(!restarted.logs.some((l) => l.msg === 'created internal identity'));
    } finally {
      await first.dispose();
      await restarted?.dispose();
    }
  });

  test('SIGINT also stops cleanly', async () => {
    await using d = await startDaemon();
    assert.deepEqual(await d.stop('SIGINT'), { code: 0, signal: null });
    assert.equal(pidAlive(d.natsPid), false);
  });

  test('if nats-server dies, membershipd says why and exits non-zero', async () => {
    await using d = await startDaemon();
    process.kill(d.natsPid, 'SIGKILL');
    const exit = await Promise.race([
      d.exited,
      new Promise<null>((r) => setTimeout(() => r(null), 20_000)),
    ]);
    assert.ok(exit, 'membershipd exited');
    assert.equal(exit.code, 3);
    const fatal = d.logs.find((l) => l.msg.startsWith('nats-server exited unexpectedly'));
    assert.ok(fatal, 'the death is logged');
    assert.equal(fatal.signal, 'SIGKILL');
  });

  test('after a crash (SIGKILL of membershipd) the orphaned nats-server is reaped on the next start', async () => {
    await using dir = await tempDir();
    const first = await startDaemon({ dataDir: dir.path });
    process.kill(first.proc.pid!, 'SIGKILL');
    await first.exited;
    assert.equal(pidAlive(first.natsPid), true, 'the child outlives a SIGKILLed parent');
    const second = await startDaemon({ dataDir: dir.path });
    try {
      assert.equal(pidAlive(first.natsPid), false, 'orphan stopped');
      assert.ok(second.logs.some((l) => l.msg.startsWith('stopped a nats-server left running')));
      assert.equal((await fetch(`${second.httpUrl}/healthz`)).status, 200);
    } finally {
      await second.dispose();
      await first.dispose();
    }
  });

  test('waiting for a quorum: /livez answers from the start, the rest is 503 STARTING, SIGTERM exits 0 at once and leaves no nats-server', async () => {
    await using dir = await tempDir();
    const secret = join(dir.path, 'route.secret');
    await writeFile(secret, randomBytes(24).toString('base64url') + '\n', { mode: 0o600 });
    // A cluster node whose two peers never come: it waits for a quorum.
    const [http, nats, cport, p2, p3] = (await freePorts(5)) as [number, ...number[]];
    const data = join(dir.path, 'data');
    const t0 = Date.now();
    const child = spawn(
      process.execPath,
      [
        membershipdBin(),
        'serve',
        '--data',
        data,
        '--http',
        `127.0.0.1:${http}`,
        '--nats-port',
        String(nats),
        '--cluster-name',
        'lonely',
        '--cluster-port',
        String(cport),
        '--routes',
        `nats-route://127.0.0.1:${p2},nats-route://127.0.0.1:${p3}`,
        '--route-secret-file',
        secret,
        '--replicas',
        '3',
        '--bootstrap-budget',
        '120s',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] }
    );
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const exited = new Promise<{ code: number | null; at: number }>((r) =>
      child.once('close', (code) => r({ code, at: Date.now() }))
    );
    let natsPid = 0;
    try {
      const url = `http://127.0.0.1:${http}`;
      const live = await waitFor(
        async () => {
          const r = await fetch(`${url}/livez`).catch(() => null);
          return r?.status === 200 ? ((await r.json()) as { live: boolean }) : undefined;
        },
        { timeoutMs: 10_000, intervalMs: 50, what: '/livez' }
      );
      const liveAfter = Date.now() - t0;
      assert.equal(live.live, true);
      // Generous for a loaded machine; the listener opens before anything waits.
      assert.ok(liveAfter < 5_000, `/livez after ${liveAfter} ms`);
      // nats-server is up and the node is waiting for its peers.
      await waitFor(() => /store not ready yet/.test(out), {
        timeoutMs: 30_000,
        what: 'the node waiting for the store',
      });
      natsPid = Number(/"nats_pid":(\d+)/.exec(out)?.[1]);
      assert.ok(natsPid > 0 && pidAlive(natsPid), 'nats-server running');
      const ready = await fetch(`${url}/readyz`);
      assert.equal(ready.status, 503);
      assert.deepEqual(await ready.json(), { ready: false, reason: 'starting' });
      assert.equal((await fetch(`${url}/healthz`)).status, 503);
      const me = await fetch(`${url}/me`);
      assert.equal(me.status, 503);
      assert.equal(((await me.json()) as { error: { code: string } }).error.code, 'STARTING');

      const termAt = Date.now();
      child.kill('SIGTERM');
      const exit = await Promise.race([
        exited,
        new Promise<null>((r) => setTimeout(() => r(null), 20_000)),
      ]);
      assert.ok(exit, `membershipd still running 20 s after SIGTERM:\n${out.slice(-2000)}`);
      assert.equal(exit.code, 0, out.slice(-2000));
      // systemd's default stop timeout is 90 s and ours 30 s: well inside.
      assert.ok(exit.at - termAt < 10_000, `exited ${exit.at - termAt} ms after SIGTERM`);
      assert.match(out, /stopped during start-up/);
      await waitFor(() => !pidAlive(natsPid), { timeoutMs: 5_000, what: 'nats-server gone' });
      assert.equal(
        await fetch(`${url}/livez`).then(
          () => 'answered',
          () => 'refused'
        ),
        'refused'
      );
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await exited;
      if (natsPid && pidAlive(natsPid)) process.kill(natsPid, 'SIGKILL');
    }
  });

  test('a port already in use is a clear start failure that leaves no child behind', async () => {
    await using a = await startDaemon();
    await using dir = await tempDir();
    // HTTP listens first: a taken HTTP port fails before anything starts.
    const r0 = await runMembershipd(
      [
        'serve',
        '--data',
        dir.path,
        '--http',
        `127.0.0.1:${a.httpPort}`,
        '--nats-port',
        String(await freePort()),
      ],
      { timeoutMs: 60_000 }
    );
    assert.equal(r0.code, 1);
    assert.match(r0.stderr, /membershipd serve: cannot listen on 127\.0\.0\.1:\d+/);
    await assert.rejects(readFile(join(dir.path, 'nats', 'nats-server.pid')), 'no child started');
    // nats-server starts fine on its free port; then the metrics port cannot bind.
    const r = await runMembershipd(
      [
        'serve',
        '--data',
        dir.path,
        '--http',
        '127.0.0.1:0',
        '--nats-port',
        String(await freePort()),
        '--metrics',
        `127.0.0.1:${a.httpPort}`,
      ],
      { timeoutMs: 60_000 }
    );
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /membershipd serve: cannot listen on 127\.0\.0\.1:\d+|address already in use/
    );
    const pid = Number(await readFile(join(dir.path, 'nats', 'nats-server.pid'), 'utf8'));
    assert.ok(pid > 0, 'the child had started');
    assert.equal(pidAlive(pid), false, 'no nats-server left running');

    // and the nats port taken: nats-server's own reason reaches the operator
    const r2 = await runMembershipd([
      'serve',
      '--data',
      dir.path,
      '--http',
      '127.0.0.1:0',
      '--nats-port',
      String(a.natsPort),
    ]);
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /address already in use/);
  });
});
