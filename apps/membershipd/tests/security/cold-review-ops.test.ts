// Cold review of the operations changes (kick paging, start-up HTTP,
// backups with seq/time, audit queries by record time). Each test asserts
// the secure / correct behaviour; a failure is a finding.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, nkeyAuthenticator, type NatsConnection } from 'nats';
import { natsUserKey } from '@sealbus/crypto';
import { ControlClient, Sealbus } from '@sealbus/client';
import type { AuditRecord } from '@sealbus/protocol';
import {
  freePorts,
  membershipdBin,
  pidAlive,
  runMembershipd,
  startDaemon,
  tempDir,
  waitFor,
  type TestDaemon,
} from '@sealbus/testing';
import {
  ArchiveError,
  buildArchive,
  readArchive,
  type SectionData,
  type StreamRecord,
} from '../../src/backup/archive.js';
import { checkRestorable, expectedSections } from '../../src/backup/snapshot.js';
import { adminOf, enrol, nodeStore, serverConnectionsOf } from '../helpers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function rec(time: string, tag: string): AuditRecord {
  return {
    time,
    request_id: `cold-${tag}-${randomBytes(4).toString('hex')}`,
    actor: null,
    via: 'cli',
    action: 'user.add',
    target: null,
    outcome: 'ok',
  };
}

async function auditCli(d: { dataDir: string }, ...args: string[]): Promise<AuditRecord[]> {
  const r = await runMembershipd(['audit', ...args, '--data', d.dataDir, '-o', 'json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as AuditRecord[];
}

describe('cold review: audit queries by record time', { timeout: 180_000 }, () => {
  test('a node whose clock runs ahead writes one record: --until still finds the records written after it', async () => {
    await using d = await startDaemon({ args: ['--log-level', 'info'] });
    const { store, nc, app } = await nodeStore(d);
    try {
      // Node B of the cluster (clock one hour ahead, e.g. after a VM resume) writes a record.
      await store.audit.append(rec(new Date(Date.now() + 3_600_000).toISOString(), 'ahead'));
      // Then honest nodes keep writing.
      const honest: string[] = [];
      for (let i = 0; i < 5; i++) {
        const r = rec(new Date().toISOString(), `after${i}`);
        honest.push(r.request_id);
        await store.audit.append(r);
      }
      const got = await auditCli(d, 'query', '--until', new Date(Date.now() + 5_000).toISOString());
      const ids = new Set(got.map((r) => r.request_id));
      const missing = honest.filter((id) => !ids.has(id));
      assert.deepEqual(
        missing,
        [],
        `--until misses ${missing.length} of ${honest.length} records written after a skewed-clock record`
      );
    } finally {
      await nc.close();
      await app.close();
    }
  });

  test('a node whose clock runs behind writes one record mid-log: --since still finds the earlier records', async () => {
    await using d = await startDaemon({ args: ['--log-level', 'info'] });
    const { store, nc, app } = await nodeStore(d);
    try {
      await sleep(1_100);
      const since = new Date().toISOString();
      await sleep(20);
      const jsm = await nc.jetstreamManager();
      const count = async () => (await jsm.streams.info('SEALBUS_AUDIT')).state.last_seq;
      const K = 12;
      const honest: string[] = [];
      const append = async (tag: string) => {
        const r = rec(new Date().toISOString(), tag);
        honest.push(r.request_id);
        await store.audit.append(r);
      };
      while ((await count()) < K) await append(`before${await count()}`);
      // Seq K+1: the first probe of the binary search over 2K messages.
      await store.audit.append(rec('2001-01-01T00:00:00.000Z', 'behind'));
      for (let i = 0; i < K - 1; i++) await append(`after${i}`);
      assert.equal(await count(), 2 * K);
      const got = await auditCli(d, 'query', '--since', since);
      const ids = new Set(got.map((r) => r.request_id));
      const missing = honest.filter((id) => !ids.has(id));
      assert.deepEqual(
        missing,
        [],
        `--since misses ${missing.length} of ${honest.length} records (one skewed record mid-log)`
      );
    } finally {
      await nc.close();
      await app.close();
    }
  });
});

describe('cold review: doctored archives', { timeout: 300_000 }, () => {
  test('crafted seq fields are refused before anything is written', async () => {
    await using dir = await tempDir('cold-ops-');
    const base = (seq: Array<number | undefined>, time?: string): SectionData[] => {
      const audit: StreamRecord[] = seq.map((s, i) => ({
        subject: 'sealbus.audit.user.add',
        data: Buffer.from(JSON.stringify(rec(new Date().toISOString(), `s${i}`))).toString(
          'base64'
        ),
        ...(s !== undefined ? { seq: s } : {}),
        ...(time ? { time } : {}),
      }));
      return expectedSections().map((s) => ({
        name: s.name,
        kind: s.kind,
        records: s.kind === 'stream' ? audit : [],
      }));
    };
    const header = {
      created_at: new Date().toISOString(),
      sealbus_version: 'x',
      source: { mode: 'live' as const, data_dir: null, nats_server: null, at_rest: null },
    };
    const cases: Array<[string, Array<number | undefined>]> = [
      ['gap', [1, 3]],
      ['not from 1', [2, 3]],
      ['duplicate', [1, 1]],
      ['mixed', [1, undefined]],
      ['reordered', [2, 1]],
      ['huge', [1, 2 ** 52]],
    ];
    // The control: a well-formed archive passes, with far-future stored times.
    {
      const { bytes } = await buildArchive(header, base([1, 2], '9999-12-31T23:59:59Z'));
      const p = join(dir.path, 'ok.tgz');
      await writeFile(p, bytes, { mode: 0o600 });
      checkRestorable(await readArchive(p));
    }
    for (const [name, seqs] of cases) {
      const { bytes } = await buildArchive(header, base(seqs));
      const p = join(dir.path, `${name}.tgz`);
      await writeFile(p, bytes, { mode: 0o600 });
      const a = await readArchive(p).catch((e: unknown) => e);
      if (a instanceof ArchiveError) continue; // refused on read: fine
      assert.throws(
        () => checkRestorable(a as Awaited<ReturnType<typeof readArchive>>),
        ArchiveError,
        name
      );
    }
  });

  test('an archive whose audit record is not an audit record is refused (it would make every audit query fail)', async () => {
    await using dir = await tempDir('cold-ops-');
    let live: string;
    {
      await using d = await startDaemon({ args: ['--log-level', 'info'] });
      live = join(dir.path, 'live.tgz');
      const r = await runMembershipd(['backup', '--data', d.dataDir, '--out', live]);
      assert.equal(r.code, 0, r.stderr);
    }
    const good = await readArchive(live);
    const sections = good.sections.map(({ section, records }) => ({
      name: section.name,
      kind: section.kind,
      records:
        section.name === 'SEALBUS_AUDIT'
          ? [
              ...(records as StreamRecord[]),
              {
                subject: 'sealbus.audit.user.add',
                data: Buffer.from('not json at all').toString('base64'),
                seq: records.length + 1,
              },
            ]
          : records,
    })) as SectionData[];
    const { bytes } = await buildArchive(
      {
        created_at: good.manifest.created_at,
        sealbus_version: good.manifest.sealbus_version,
        source: good.manifest.source,
      },
      sections
    );
    const doctored = join(dir.path, 'doctored.tgz');
    await writeFile(doctored, bytes, { mode: 0o600 });
    const dst = join(dir.path, 'dst');
    const r = await runMembershipd([
      'restore',
      '--data',
      dst,
      '--in',
      doctored,
      '--allow-unauthenticated',
    ]);
    let evidence = '';
    if (r.code === 0) {
      await using back = await startDaemon({ dataDir: dst, args: ['--log-level', 'info'] });
      const q = await runMembershipd(['audit', 'query', '--data', back.dataDir, '-o', 'json']);
      evidence = `restore exit 0; then audit query exit ${q.code}: ${q.stderr.trim().slice(0, 300)}`;
    }
    assert.notEqual(r.code, 0, `the restore accepted a non-record: ${evidence}`);
  });
});

describe('cold review: start-up HTTP', { timeout: 120_000 }, () => {
  test('a node waiting for a quorum: every route but GET /livez is 503, big bodies are not buffered, two SIGTERMs exit 0 with no nats-server left', async () => {
    await using dir = await tempDir();
    const secret = join(dir.path, 'route.secret');
    await writeFile(secret, randomBytes(24).toString('base64url') + '\n', { mode: 0o600 });
    const [http, nats, cport, p2, p3] = (await freePorts(5)) as [number, ...number[]];
    const child = spawn(
      process.execPath,
      [
        membershipdBin(),
        'serve',
        '--data',
        join(dir.path, 'data'),
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
    const exited = new Promise<{ code: number | null }>((r) =>
      child.once('close', (code) => r({ code }))
    );
    let natsPid = 0;
    try {
      const url = `http://127.0.0.1:${http}`;
      await waitFor(
        async () => (await fetch(`${url}/livez`).catch(() => null))?.status === 200 || undefined,
        { timeoutMs: 15_000, intervalMs: 50, what: '/livez' }
      );
      await waitFor(() => /store not ready yet/.test(out), { timeoutMs: 30_000, what: 'waiting' });
      natsPid = Number(/"nats_pid":(\d+)/.exec(out)?.[1]);
      const probes: Array<[string, string, number]> = [
        ['POST', '/livez', 503],
        ['DELETE', '/livez', 503],
        ['GET', '/users', 503],
        ['POST', '/users', 503],
        ['GET', '/livez/../users', 503],
        ['GET', '/metrics', 503],
        ['PUT', '/me/keys', 503],
        ['GET', '/readyz', 503],
        ['GET', '/healthz', 503],
        ['GET', '/livez?x=1', 200],
      ];
      for (const [method, path, want] of probes) {
        const r = await fetch(`${url}${path}`, {
          method,
          ...(method === 'POST' || method === 'PUT' ? { body: '{}' } : {}),
        });
        assert.equal(r.status, want, `${method} ${path}`);
        await r.arrayBuffer();
      }
      // A 32 MiB body during start-up: answered (or refused) quickly, not buffered.
      const t0 = Date.now();
      const big = await fetch(`${url}/users`, {
        method: 'POST',
        body: Buffer.alloc(32 * 1024 * 1024, 0x61),
        headers: { 'content-type': 'application/json' },
      }).then(
        (r) => r.status,
        () => 0
      );
      assert.ok(big === 503 || big === 413 || big === 0, `big body: ${big}`);
      assert.ok(Date.now() - t0 < 10_000, `big body took ${Date.now() - t0} ms`);
      // 100 concurrent requests (under the per-address bound of 128): the node stays up and live.
      await Promise.all(
        Array.from({ length: 100 }, () =>
          fetch(`${url}/me`).then(
            (r) => r.arrayBuffer(),
            () => null
          )
        )
      );
      assert.equal((await fetch(`${url}/livez`)).status, 200);
      assert.equal(child.exitCode, null, 'still running');
      // Two signals in a row (an impatient operator): one clean exit.
      child.kill('SIGTERM');
      await sleep(5);
      child.kill('SIGINT');
      const exit = await Promise.race([
        exited,
        new Promise<null>((r) => setTimeout(() => r(null), 20_000)),
      ]);
      assert.ok(exit, `still running 20 s after SIGTERM:\n${out.slice(-1500)}`);
      assert.equal(exit.code, 0, out.slice(-1500));
      await waitFor(() => !pidAlive(natsPid), { timeoutMs: 5_000, what: 'nats-server gone' });
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      await exited;
      if (natsPid && pidAlive(natsPid)) process.kill(natsPid, 'SIGKILL');
    }
  });
});

describe('cold review: kick races', { timeout: 300_000 }, () => {
  /** Connects as the identity's NATS key; null when refused. */
  const tryConnect = (d: TestDaemon, seed: Uint8Array, opts: Record<string, unknown> = {}) =>
    connect({
      servers: d.natsUrl,
      authenticator: nkeyAuthenticator(seed),
      maxReconnectAttempts: 0,
      timeout: 10_000,
      ...opts,
    }).catch(() => null);

  test('a revoked user with auto-reconnecting clients and a connect storm during the revoke keeps no connection', async () => {
    await using d = await startDaemon({ args: ['--log-level', 'info'] });
    const admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    const all: NatsConnection[] = [];
    // Whether each client holds a live connection, by its own status
    // events: a client whose reconnects are refused (or time out under
    // load) stays open but is not connected, and reaches nothing.
    const connected = new Map<NatsConnection, boolean>();
    const track = (nc: NatsConnection) => {
      all.push(nc);
      connected.set(nc, true);
      void (async () => {
        for await (const s of nc.status()) {
          if (s.type === 'disconnect') connected.set(nc, false);
          if (s.type === 'reconnect') connected.set(nc, true);
        }
      })();
    };
    try {
      const { id } = await enrol(admin, d, 'stormy');
      const seed = new TextEncoder().encode(natsUserKey(id).seed);
      // 100 clients that reconnect at once when cut.
      for (let i = 0; i < 100; i += 25) {
        const got = await Promise.all(
          Array.from({ length: 25 }, () =>
            tryConnect(d, seed, { maxReconnectAttempts: -1, reconnectTimeWait: 10 })
          )
        );
        for (const nc of got) if (nc) track(nc);
      }
      assert.equal(all.length, 100);
      // A storm of fresh connects running across the revoke.
      let storming = true;
      const storm = (async () => {
        while (storming) {
          const got = await Promise.all(Array.from({ length: 20 }, () => tryConnect(d, seed)));
          for (const nc of got) if (nc) track(nc);
        }
      })();
      await sleep(300);
      await admin.revokeUser(id.signPubHex);
      await sleep(1_500);
      storming = false;
      await storm;
      // Give the kick and the reconnect attempts time to settle.
      await sleep(4_000);
      // The server's own count, and every client's view of its socket.
      const onServer = await serverConnectionsOf(d, natsUserKey(id).publicKey);
      const live = all.filter((nc) => !nc.isClosed() && connected.get(nc));
      const kickLog = JSON.stringify(d.logs.filter((l) => /kick|survived/.test(l.msg)));
      assert.equal(
        onServer.authorised,
        0,
        `nats-server holds ${onServer.authorised} authorised connections of a revoked user 5.5 s after the revoke; kick log: ${kickLog}`
      );
      assert.equal(
        live.length,
        0,
        `${live.length} of ${all.length} clients of a revoked user still connected 5.5 s after the revoke; kick log: ${kickLog}`
      );
      // And it cannot come back.
      assert.equal(await tryConnect(d, seed), null, 'a new connect is refused');
    } finally {
      await Promise.all(all.map((nc) => nc.close().catch(() => {})));
      admin.close();
    }
  });
  test('a removed member racing connects against the removal keeps no connection with the old permissions', async () => {
    await using d = await startDaemon({ args: ['--log-level', 'info'] });
    const admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    const all: NatsConnection[] = [];
    const { id: owner } = await enrol(admin, d, 'owner');
    const { id: member } = await enrol(admin, d, 'member');
    const O = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity: owner,
    });
    try {
      const subject = `cold.ops.${randomBytes(4).toString('hex')}`;
      const room = await O.createRoom({
        subject,
        policy: { encrypt: false, persist: false, sign: true },
      });
      await O.invite(room.id, member.signPubHex);
      const seed = new TextEncoder().encode(natsUserKey(member).seed);
      let leaked = 0;
      const watch = (nc: NatsConnection) => {
        nc.subscribe(subject, { callback: (err) => void (err ? null : leaked++) });
        all.push(nc);
      };
      for (let i = 0; i < 50; i++) {
        const nc = await tryConnect(d, seed);
        if (nc) watch(nc);
      }
      // The control: a member's connections receive the room.
      await Promise.all(all.map((nc) => nc.flush()));
      await O.publish(room.id, 'before the removal');
      await waitFor(() => leaked === all.length || undefined, { what: 'the control delivery' });
      let storming = true;
      const storm = (async () => {
        while (storming) {
          const got = await Promise.all(Array.from({ length: 20 }, () => tryConnect(d, seed)));
          for (const nc of got) if (nc) watch(nc);
        }
      })();
      await sleep(300);
      await O.removeMember(room.id, member.signPubHex);
      await sleep(1_500);
      storming = false;
      await storm;
      await sleep(3_000);
      await Promise.all(all.filter((nc) => !nc.isClosed()).map((nc) => nc.flush().catch(() => {})));
      leaked = 0;
      await O.publish(room.id, 'after the removal');
      await sleep(1_500);
      assert.equal(
        leaked,
        0,
        `${leaked} connection(s) of the removed member (of ${all.filter((nc) => !nc.isClosed()).length} open, ${all.length} made) still receive the room; kick log: ${JSON.stringify(
          d.logs.filter((l) => /kick|survived/.test(l.msg))
        )}`
      );
    } finally {
      await O.close();
      await Promise.all(all.map((nc) => nc.close().catch(() => {})));
      admin.close();
    }
  });
});
