import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { encodePublicIdentity, generateIdentity } from '@sealbus/crypto';
import { ControlClient, Sealbus } from '@sealbus/client';
import {
  freePorts,
  pidAlive,
  runMembershipd,
  startDaemon,
  tempDir,
  type TempDir,
  type TestDaemon,
} from '@sealbus/testing';
import {
  buildArchive,
  readArchive,
  type SectionData,
  type StreamRecord,
} from '../src/backup/archive.js';
import { adminOf, nodeStore } from './helpers.js';

const PERSISTED = { encrypt: true, persist: true, sign: true };
const enc = (s: string) => new TextEncoder().encode(s);

/** Every regular file under `dir`, recursively. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

/** The files under `dir` whose bytes contain any of `needles`. */
async function plaintextHits(dir: string, needles: string[]): Promise<string[]> {
  const hits: string[] = [];
  for (const f of await filesUnder(dir)) {
    const bytes = await readFile(f);
    for (const n of needles) if (bytes.includes(Buffer.from(n))) hits.push(`${f}: ${n}`);
  }
  return hits;
}

/** sha256 of every file under the store, to prove a refused start changed nothing. */
async function storeDigest(dataDir: string): Promise<string> {
  const h = createHash('sha256');
  const files = (await filesUnder(join(dataDir, 'nats', 'jetstream'))).sort();
  for (const f of files) h.update(f).update(await readFile(f));
  return h.digest('hex');
}

async function keyFile(dir: string, name: string, mode = 0o600): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, randomBytes(32).toString('base64') + '\n', { mode });
  return path;
}

/** `membershipd serve` that is expected to refuse to start: its exit and stderr. */
async function serveRefused(dataDir: string, args: string[], env: Record<string, string> = {}) {
  const [http, nats] = (await freePorts(2)) as [number, number];
  const r = await runMembershipd(
    [
      'serve',
      '--data',
      dataDir,
      '--http',
      `127.0.0.1:${http}`,
      '--nats-port',
      String(nats),
      ...args,
    ],
    { timeoutMs: 60_000, env }
  );
  assert.equal(r.code, 1, `serve should refuse: ${r.stderr}`);
  return r.stderr;
}

async function healthz(d: TestDaemon): Promise<Record<string, unknown>> {
  return (await (await fetch(`${d.httpUrl}/healthz`)).json()) as Record<string, unknown>;
}

/** Users, a persisted room with a message, a second member (sealed keys), audit records. */
async function populate(d: TestDaemon, tag: string) {
  const admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
  const alice = generateIdentity();
  const bob = generateIdentity();
  const handle = `handle-${tag}-${randomBytes(4).toString('hex')}`;
  const subject = `secretsubject${tag}.${randomBytes(4).toString('hex')}`;
  await admin.addUser({
    sign_pub: alice.signPubHex,
    kex_pub: alice.kexPubHex,
    handle,
    role: 'member',
  });
  // Bound (a public token): a room key is sealed only to a bound kex key.
  await admin.addUser({
    public: encodePublicIdentity(bob),
    handle: `bob-${tag}`,
    role: 'guest',
    expires_at: new Date(Date.now() + 30 * 86_400_000).toISOString(),
  });
  const A = await Sealbus.connect({
    natsServers: [d.natsUrl],
    controlUrls: [d.httpUrl],
    identity: alice,
  });
  try {
    const room = await A.createRoom({ subject, policy: PERSISTED });
    await A.invite(room.id, bob.signPubHex, 'reader');
    await A.publish(room.id, enc(`a message in ${subject}`));
    return { admin, alice, bob, handle, subject, roomId: room.id };
  } finally {
    await A.close();
  }
}

type Archive = Awaited<ReturnType<typeof readArchive>>;

/**
 * Two archives hold the same state, record by record: buckets byte-identical;
 * stream records the same subject, payload, headers, sequence number (1, 2,
 * 3, …) and stored time (a restore keeps the original in a header).
 */
async function assertSameState(orig: Archive, back: Archive): Promise<void> {
  assert.deepEqual(
    back.sections.map((x) => x.section.name).sort(),
    orig.sections.map((x) => x.section.name).sort()
  );
  for (const { section, records } of orig.sections) {
    const other = back.sections.find((x) => x.section.name === section.name)!;
    if (section.kind === 'kv') {
      assert.equal(other.section.sha256, section.sha256, section.name);
      continue;
    }
    for (const x of records as StreamRecord[])
      assert.ok(x.time && Number.isFinite(Date.parse(x.time)), 'each message has its time');
    assert.deepEqual(other.records, records, section.name);
    assert.deepEqual(
      (records as StreamRecord[]).map((x) => x.seq),
      records.map((_, i) => i + 1),
      `${section.name}: sequence numbers archived`
    );
  }
}

describe('at-rest encryption', { timeout: 300_000 }, () => {
  let dir: TempDir;
  before(async () => {
    dir = await tempDir('sealbus-atrest-');
  });
  after(async () => {
    await dir?.remove();
  });

  test('bad keys are refused before anything starts', async () => {
    const data = join(dir.path, 'refusals');
    const loose = await keyFile(dir.path, 'loose.key', 0o644);
    assert.match(await serveRefused(data, ['--at-rest-key-file', loose]), /0600 or stricter/);
    assert.match(
      await serveRefused(data, [], { SEALBUS_AT_REST_KEY: '' }),
      /at-rest key \(SEALBUS_AT_REST_KEY\) is empty/
    );
    assert.match(await serveRefused(data, [], { SEALBUS_AT_REST_KEY: 'short' }), /too short/);
    const k = await keyFile(dir.path, 'both.key');
    assert.match(
      await serveRefused(data, ['--at-rest-key-file', k], { SEALBUS_AT_REST_KEY: 'x'.repeat(40) }),
      /not both/
    );
    assert.match(
      await serveRefused(data, ['--at-rest-key-file', join(dir.path, 'missing.key')]),
      /cannot read the at-rest key file/
    );
    const binary = join(dir.path, 'binary.key');
    await writeFile(binary, Buffer.from([0xff, 0xfe, 0x00, 0x80, ...randomBytes(28)]), {
      mode: 0o600,
    });
    assert.match(await serveRefused(data, ['--at-rest-key-file', binary]), /is not text/);
    // Nothing was initialised by any of those.
    await assert.rejects(stat(join(data, 'nats', 'jetstream')));
  });

  test('no plaintext on disk; wrong or missing key refused without touching data; the right key reads everything', async () => {
    const data = join(dir.path, 'enc');
    const key = await keyFile(dir.path, 'right.key');
    const wrong = await keyFile(dir.path, 'wrong.key');
    const keyText = (await readFile(key, 'utf8')).trim();
    let d = await startDaemon({ dataDir: data, args: ['--at-rest-key-file', key] });
    let state;
    try {
      assert.equal((await healthz(d)).at_rest, true);
      state = await populate(d, 'enc');
      // The key is in no argv, and the child sees only a derived value.
      const natsArgv = await readFile(`/proc/${d.natsPid}/cmdline`, 'utf8');
      const daemonArgv = await readFile(`/proc/${d.proc.pid}/cmdline`, 'utf8');
      const natsEnv = await readFile(`/proc/${d.natsPid}/environ`, 'utf8');
      for (const text of [natsArgv, daemonArgv, natsEnv, JSON.stringify(d.logs), d.stderr()])
        assert.ok(!text.includes(keyText), 'the key text leaked');
      assert.match(natsEnv, /SEALBUS_JS_KEY=sbk[0-9a-f]{64}/);
    } finally {
      await d.stop();
    }
    const conf = await readFile(join(data, 'nats', 'nats-server.conf'), 'utf8');
    assert.match(conf, /"cipher": "chachapoly"/);
    assert.match(conf, /"key": \$SEALBUS_JS_KEY/);
    assert.ok(!conf.includes(keyText));
    assert.deepEqual(await plaintextHits(data, [state.handle, state.subject, keyText]), []);

    const before = await storeDigest(data);
    assert.match(await serveRefused(data, ['--at-rest-key-file', wrong]), /wrong at-rest key/);
    assert.match(await serveRefused(data, []), /encrypted at rest: give its key/);
    assert.equal(await storeDigest(data), before, 'a refused start changed the store');

    // The marker lost: nats-server starts with the wrong key but the daemon
    // finds the buckets missing and stops instead of creating them empty.
    // The marker is not rewritten from a key that failed: the right key
    // (next) opens the store and writes a new one.
    const marker = join(data, 'nats', 'store.json');
    await rm(marker);
    assert.match(
      await serveRefused(data, ['--at-rest-key-file', wrong]),
      /wrong at-rest key or missing data/
    );
    await assert.rejects(stat(marker));
    assert.equal(await storeDigest(data), before, 'the wrong key changed the store');

    // The right key, given through the environment this time, still reads everything.
    d = await startDaemon({ dataDir: data, env: { SEALBUS_AT_REST_KEY: keyText } });
    try {
      assert.equal((await healthz(d)).at_rest, true);
      assert.equal(JSON.parse(await readFile(marker, 'utf8')).initialized, true);
      const admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
      const users = await admin.listUsers();
      assert.ok(users.some((u) => u.handle === state.handle));
      const A = await Sealbus.connect({
        natsServers: [d.natsUrl],
        controlUrls: [d.httpUrl],
        identity: state.alice,
      });
      try {
        const rooms = await A.listMyRooms();
        assert.ok(rooms.some((r) => r.id === state.roomId && r.subject === state.subject));
      } finally {
        await A.close();
        admin.close();
      }
    } finally {
      await d.stop();
    }
  });

  test('a plaintext store is not switched to encryption in place', async () => {
    const data = join(dir.path, 'plain');
    const d = await startDaemon({ dataDir: data });
    await d.stop();
    const key = await keyFile(dir.path, 'late.key');
    assert.match(
      await serveRefused(data, ['--at-rest-key-file', key]),
      /not encrypted at rest and cannot be switched in place/
    );
    // While an offline backup or restore holds the store, no node starts on it
    // (a lock whose process is alive: this test's own pid stands in for it).
    const lock = join(data, 'nats', 'offline.lock');
    await writeFile(lock, `${process.pid}\n`, { mode: 0o600 });
    assert.match(await serveRefused(data, []), /an offline backup or restore \(pid \d+\) is using/);
    const busy = await runMembershipd(['backup', '--data', data, '--out', join(dir.path, 'b.tgz')]);
    assert.equal(busy.code, 1);
    assert.match(busy.stderr, /another backup or restore \(pid \d+\) is using/);
    // A stale lock (its process gone) is cleared.
    await writeFile(lock, '999999999\n', { mode: 0o600 });
    const ok = await runMembershipd(['backup', '--data', data, '--out', join(dir.path, 'b.tgz')]);
    assert.equal(ok.code, 0, ok.stderr);
    await assert.rejects(stat(lock));
  });
});

describe('backup and restore', { timeout: 400_000 }, () => {
  let dir: TempDir;
  let d: TestDaemon | undefined;
  let state: Awaited<ReturnType<typeof populate>>;
  let src: string;

  before(async () => {
    dir = await tempDir('sealbus-backup-');
    src = join(dir.path, 'src');
    d = await startDaemon({ dataDir: src });
    state = await populate(d, 'bak');
  });
  after(async () => {
    state?.admin.close();
    await d?.dispose();
    await dir?.remove();
  });

  const manifestOf = async (file: string, extra: string[] = []) => {
    const r = await runMembershipd(['backup', 'inspect', file, '-o', 'json', ...extra]);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as {
      sections: Array<{ name: string; kind: string; count: number; sha256: string }>;
      source: { mode: string };
      sealbus_version: string;
    };
  };
  const checksums = (m: Awaited<ReturnType<typeof manifestOf>>) =>
    Object.fromEntries(m.sections.map((s) => [s.name, s.sha256]));

  test('live backup, offline backup, restore into a fresh dir: identical state', async () => {
    const live = join(dir.path, 'live.tgz');
    let r = await runMembershipd(['backup', '--data', src, '--out', live]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /live backup/);
    assert.equal((await stat(live)).mode & 0o777, 0o600);
    const m = await manifestOf(live);
    assert.equal(m.source.mode, 'live');
    const count = (name: string) => m.sections.find((s) => s.name === name)?.count;
    assert.equal(count('sealbus_users'), 3); // admin #0, alice, bob
    // Rooms hold the room and its subject claim; members and sealed keys one per member.
    assert.ok((count('sealbus_rooms') ?? 0) >= 1);
    assert.equal(count('sealbus_members'), 2);
    // Two sealed keys, two owner statements (create, invite) and the statement head.
    assert.equal(count('sealbus_room_keys'), 5);
    assert.ok((count('SEALBUS_AUDIT') ?? 0) >= 4);
    // The persisted room's history (sealed frames) travels too.
    assert.equal(m.sections.find((s) => s.name === `ROOM_${state.roomId}`)?.count, 1);
    // Refuses to overwrite without --force.
    r = await runMembershipd(['backup', '--data', src, '--out', live]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /exists/);

    await d!.stop();
    // The control for the at-rest test's search: without encryption the handle is on disk.
    assert.notDeepEqual(await plaintextHits(src, [state.handle]), []);
    const offline = join(dir.path, 'offline.tgz');
    r = await runMembershipd(['backup', '--data', src, '--out', offline]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /offline backup/);
    assert.deepEqual(checksums(await manifestOf(offline)), checksums(m));

    const dst = join(dir.path, 'dst');
    // A plaintext archive is unauthenticated: refused unless asked for,
    // with nothing written; restored with a warning on stderr when asked.
    r = await runMembershipd(['restore', '--data', dst, '--in', live, '-o', 'json']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--allow-unauthenticated/);
    await assert.rejects(stat(dst), 'nothing written for an unauthenticated archive');
    r = await runMembershipd([
      'restore',
      '--data',
      dst,
      '--in',
      live,
      '--allow-unauthenticated',
      '-o',
      'json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning: this archive is unauthenticated/);
    const report = JSON.parse(r.stdout) as {
      verified: boolean;
      sections: Array<{ name: string; count: number }>;
    };
    assert.equal(report.verified, true);
    assert.equal(report.sections.find((s) => s.name === 'sealbus_users')?.count, 3);

    // The original store against the restored one, record by record: a
    // backup of each, read back. Buckets are byte-identical; stream records
    // keep subject, payload, headers and their sequence numbers; only the
    // time a message was stored is the restore's (JetStream sets it), and
    // the archive keeps the original.
    const again = join(dir.path, 'again.tgz');
    r = await runMembershipd(['backup', '--data', dst, '--out', again]);
    assert.equal(r.code, 0, r.stderr);
    const orig = await readArchive(live);
    await assertSameState(orig, await readArchive(again));

    // And the restored node serves it: admin #0's identity copied, as the runbook says.
    await copyFile(join(src, 'admin.id'), join(dst, 'admin.id'));
    const restored = await startDaemon({ dataDir: dst });
    try {
      // A restored room stream is capped (discard-new) like a new one.
      const { nc, app } = await nodeStore(restored);
      const cfg = (await (await app.jetstreamManager()).streams.info(`ROOM_${state.roomId}`))
        .config;
      await nc.close();
      await app.close();
      assert.deepEqual([cfg.max_bytes, cfg.discard], [256 * 1024 * 1024, 'new']);
      const admin = new ControlClient({
        urls: [restored.httpUrl],
        identity: await adminOf(restored),
      });
      const users = await admin.listUsers();
      assert.deepEqual(
        users.map((u) => u.handle).sort(),
        ['admin', state.handle, 'bob-bak'].sort()
      );
      assert.ok(users.find((u) => u.handle === 'bob-bak')?.expires_at);
      // Audit queries by time still find what happened before the restore
      // (before this, `--until` a minute before the restore found nothing).
      const auditTimes = (
        orig.sections.find((x) => x.section.name === 'SEALBUS_AUDIT')!.records as StreamRecord[]
      ).map((x) => Date.parse(x.time!));
      const until = new Date(Math.max(...auditTimes)).toISOString();
      const q = await runMembershipd([
        'audit',
        'query',
        '--data',
        dst,
        '--until',
        until,
        '-o',
        'json',
      ]);
      assert.equal(q.code, 0, q.stderr);
      assert.equal(
        (JSON.parse(q.stdout) as unknown[]).length,
        auditTimes.length,
        q.stdout.slice(0, 500)
      );
      const q0 = await runMembershipd([
        'audit',
        'query',
        '--data',
        dst,
        '--until',
        new Date(Math.min(...auditTimes) - 60_000).toISOString(),
        '-o',
        'json',
      ]);
      assert.equal(
        (JSON.parse(q0.stdout) as unknown[]).length,
        0,
        'nothing before the first record'
      );
      const B = await Sealbus.connect({
        natsServers: [restored.natsUrl],
        controlUrls: [restored.httpUrl],
        identity: state.bob,
      });
      try {
        const got: string[] = [];
        const sub = await B.subscribe(
          state.roomId,
          (msg) => void got.push(new TextDecoder().decode(msg.data)),
          {
            from: 'start',
          }
        );
        const deadline = Date.now() + 15_000;
        while (got.length === 0 && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 100));
        await sub.stop();
        assert.deepEqual(got, [`a message in ${state.subject}`]);
      } finally {
        await B.close();
        admin.close();
      }
    } finally {
      await restored.dispose();
    }
  });

  test('a checksum-valid archive whose read-back differs is refused; --force over a populated store leaves it as it was', async () => {
    const live = join(dir.path, 'live.tgz');
    const good = await readArchive(live);
    // Two audit records under one message id: every checksum is right, but
    // the store takes the second as a duplicate of the first, so what is read
    // back is not what the archive holds.
    const sections = good.sections.map(({ section, records }) => ({
      name: section.name,
      kind: section.kind,
      records:
        section.name === 'SEALBUS_AUDIT'
          ? (records as StreamRecord[]).map((r, i) =>
              i < 2 ? { ...r, headers: [...(r.headers ?? []), ['Nats-Msg-Id', 'twin']] } : r
            )
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
    const inspect = await runMembershipd(['backup', 'inspect', doctored]);
    assert.equal(inspect.code, 0, `checksums hold: ${inspect.stderr}`);

    const populated = join(dir.path, 'populated');
    let r = await runMembershipd([
      'restore',
      '--data',
      populated,
      '--in',
      live,
      '--allow-unauthenticated',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const before = await storeDigest(populated);
    r = await runMembershipd([
      'restore',
      '--data',
      populated,
      '--in',
      doctored,
      '--allow-unauthenticated',
      '--force',
    ]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /read-back differs from the archive in SEALBUS_AUDIT \(record \d/);
    assert.match(r.stderr, /nothing in .* was changed/);
    assert.equal(await storeDigest(populated), before, 'the populated store is as it was');
    assert.deepEqual(
      (await readdir(join(populated, 'nats'))).filter((f) => /restoring|replaced/.test(f)),
      [],
      'no staging left behind'
    );
  });

  test('stored times that go backwards (clock skew between stream leaders) are restored in order, and queries by time still find every record', async () => {
    const live = join(dir.path, 'live.tgz');
    const good = await readArchive(live);
    // The second audit record stored 10 minutes before the first: a leader
    // whose clock was behind.
    const sections = good.sections.map(({ section, records }) => ({
      name: section.name,
      kind: section.kind,
      records:
        section.name === 'SEALBUS_AUDIT'
          ? (records as StreamRecord[]).map((r, i) =>
              i === 1 ? { ...r, time: new Date(Date.parse(r.time!) - 600_000).toISOString() } : r
            )
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
    const skewed = join(dir.path, 'skewed.tgz');
    await writeFile(skewed, bytes, { mode: 0o600 });
    const target = join(dir.path, 'skewed-restore');
    const r = await runMembershipd([
      'restore',
      '--data',
      target,
      '--in',
      skewed,
      '--allow-unauthenticated',
    ]);
    assert.equal(r.code, 0, r.stderr);

    // With a node serving the restored store, `audit query` by time finds
    // every record: over the whole span (--since the earliest record's own
    // time, --until the latest's), and --since the skewed record's own time
    // (it and every record after it). A stored time going backwards would
    // send the search for --since past the records before it.
    const records = (
      good.sections.find((x) => x.section.name === 'SEALBUS_AUDIT')!.records as StreamRecord[]
    ).map((x) => JSON.parse(Buffer.from(x.data, 'base64').toString('utf8')) as { time: string });
    assert.ok(records.length >= 3, `${records.length} audit records`);
    const at = records.map((x) => Date.parse(x.time));
    const iso = (t: number) => new Date(t).toISOString();
    const serving = await startDaemon({ dataDir: target });
    try {
      const query = async (...args: string[]) => {
        const q = await runMembershipd([
          'audit',
          'query',
          '--data',
          target,
          ...args,
          '-n',
          '10000',
          '-o',
          'json',
        ]);
        assert.equal(q.code, 0, q.stderr);
        return JSON.parse(q.stdout) as unknown[];
      };
      const until = iso(Math.max(...at));
      assert.deepEqual(
        await query('--since', iso(Math.min(...at)), '--until', until),
        records,
        'every record, by the whole span'
      );
      assert.deepEqual(
        await query('--since', records[1]!.time, '--until', until),
        records.filter((_, i) => at[i]! >= at[1]!),
        'the skewed record and every one after it'
      );
    } finally {
      await serving.dispose();
    }

    const out = join(dir.path, 'skewed-back.tgz');
    assert.equal((await runMembershipd(['backup', '--data', target, '--out', out])).code, 0);
    const times = (
      (await readArchive(out)).sections.find((x) => x.section.name === 'SEALBUS_AUDIT')!
        .records as StreamRecord[]
    ).map((x) => Date.parse(x.time!));
    assert.deepEqual(
      times,
      [...times].sort((a, b) => a - b),
      'stored times in order'
    );
    const orig = (
      good.sections.find((x) => x.section.name === 'SEALBUS_AUDIT')!.records as StreamRecord[]
    ).map((x) => Date.parse(x.time!));
    assert.equal(times[1], orig[0], 'the skewed one takes the time before it');
  });

  test('restore --force killed (SIGKILL) at each step of its swap leaves the old store or the new one, whole', async () => {
    const live = join(dir.path, 'live.tgz');
    const good = await readArchive(live);
    // The new state: the same archive without one user (bob-bak).
    const users = (records: unknown[]) =>
      (records as Array<{ key: string; value: string }>).filter(
        (r) => !Buffer.from(r.value, 'base64').toString('utf8').includes('"bob-bak"')
      );
    const { bytes } = await buildArchive(
      {
        created_at: good.manifest.created_at,
        sealbus_version: good.manifest.sealbus_version,
        source: good.manifest.source,
      },
      good.sections.map(({ section, records }) => ({
        name: section.name,
        kind: section.kind,
        records: section.name === 'sealbus_users' ? users(records) : records,
      })) as SectionData[]
    );
    const smaller = join(dir.path, 'smaller.tgz');
    await writeFile(smaller, bytes, { mode: 0o600 });
    const userCount = async (archive: string) =>
      (await readArchive(archive)).sections.find((x) => x.section.name === 'sealbus_users')!.records
        .length;
    assert.equal(await userCount(smaller), (await userCount(live)) - 1);

    for (const [point, expect] of [
      ['swap-1', 'old'],
      ['swap-2', 'old'],
      ['swap-3', 'new'],
    ] as const) {
      const target = join(dir.path, `killed-${point}`);
      let r = await runMembershipd([
        'restore',
        '--data',
        target,
        '--in',
        live,
        '--allow-unauthenticated',
      ]);
      assert.equal(r.code, 0, r.stderr);
      r = await runMembershipd(
        ['restore', '--data', target, '--in', smaller, '--allow-unauthenticated', '--force'],
        { env: { SEALBUS_FAILPOINT: point } }
      );
      assert.equal(r.signal, 'SIGKILL', `${point}: killed (${r.code}: ${r.stderr})`);
      // The next command that opens the store finishes or undoes the swap.
      const out = join(dir.path, `after-${point}.tgz`);
      r = await runMembershipd(['backup', '--data', target, '--out', out]);
      assert.equal(r.code, 0, `${point}: ${r.stderr}`);
      assert.match(
        r.stderr,
        expect === 'old' ? /undid an interrupted restore/ : /finished an interrupted restore/
      );
      assert.equal(
        await userCount(out),
        await userCount(expect === 'old' ? live : smaller),
        `${point}: the ${expect} store, whole`
      );
      await assertSameState(
        await readArchive(expect === 'old' ? live : smaller),
        await readArchive(out)
      );
      const left = await readdir(join(target, 'nats'));
      assert.ok(!left.some((f) => /restoring|\.swap$/.test(f)), `${point}: ${left.join(', ')}`);
    }
  });

  test('a corrupted archive is refused before anything is written', async () => {
    const good = join(dir.path, 'live.tgz');
    const bytes = await readFile(good);
    const cases: Array<[string, Buffer]> = [
      [
        'flipped',
        Buffer.from(bytes.map((b, i) => (i === Math.floor(bytes.length / 2) ? b ^ 0xff : b))),
      ],
      ['truncated', bytes.subarray(0, bytes.length - 40)],
      ['not an archive', Buffer.from('hello\n')],
    ];
    for (const [name, body] of cases) {
      const bad = join(dir.path, `${name.replace(/ /g, '-')}.tgz`);
      await writeFile(bad, body);
      const r = await runMembershipd(['backup', 'inspect', bad]);
      assert.equal(r.code, 1, `${name}: inspect should fail`);
      const dst = join(dir.path, `never-${name.replace(/ /g, '-')}`);
      const rr = await runMembershipd(['restore', '--data', dst, '--in', bad]);
      assert.equal(rr.code, 1, `${name}: ${rr.stdout}`);
      assert.match(rr.stderr, /membershipd restore: /);
      await assert.rejects(stat(dst), `${name}: restore wrote ${dst}`);
    }
  });

  test('encrypted archives: unreadable without the key, refused with a wrong one, restored with it', async () => {
    const key = await keyFile(dir.path, 'archive.key');
    const wrong = await keyFile(dir.path, 'archive-wrong.key');
    const enc = join(dir.path, 'encrypted.tgz');
    let r = await runMembershipd([
      'backup',
      '--data',
      src,
      '--out',
      enc,
      '--archive-key-file',
      key,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /encrypted\)/);
    const bytes = await readFile(enc);
    assert.equal(bytes.subarray(0, 27).toString(), 'SEALBUS-BACKUP-ENCRYPTED-1\n');
    assert.notEqual(bytes[27], 0x1f, 'no gzip stream in the clear');

    r = await runMembershipd(['backup', 'inspect', enc]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /is encrypted: give its key/);
    r = await runMembershipd(['backup', 'inspect', enc, '--archive-key-file', wrong]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /wrong archive key, or the archive is corrupted/);
    const flipped = join(dir.path, 'encrypted-flipped.tgz');
    const altered = Buffer.from(bytes);
    const at = altered.length - 40;
    altered[at] = altered[at]! ^ 0x01;
    await writeFile(flipped, altered);
    r = await runMembershipd(['backup', 'inspect', flipped, '--archive-key-file', key]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /authentication failed/);

    r = await runMembershipd(['backup', 'inspect', enc, '--archive-key-file', key]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /encrypted {2}yes/);
    // With a key given, a plaintext archive (unkeyed checksums: anyone could
    // have written it) is refused.
    r = await runMembershipd([
      'restore',
      '--data',
      join(dir.path, 'never-plain'),
      '--in',
      join(dir.path, 'live.tgz'),
      '--archive-key-file',
      key,
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /is not encrypted, but an archive key was given/);
    assert.deepEqual(
      checksums(await manifestOf(enc, ['--archive-key-file', key])),
      checksums(await manifestOf(join(dir.path, 'live.tgz')))
    );

    const dst = join(dir.path, 'from-encrypted-archive');
    r = await runMembershipd(['restore', '--data', dst, '--in', enc]);
    assert.equal(r.code, 1);
    await assert.rejects(stat(dst), 'nothing written without the key');
    r = await runMembershipd(['restore', '--data', dst, '--in', enc], {
      env: { SEALBUS_BACKUP_KEY: (await readFile(key, 'utf8')).trim() },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /read back, identical/);
  });

  test('restore refuses a data dir that holds a store unless --force', async () => {
    const live = join(dir.path, 'live.tgz');
    const dst = join(dir.path, 'dst');
    const plain = '--allow-unauthenticated';
    let r = await runMembershipd(['restore', '--data', dst, '--in', live, plain]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /already holds a store/);
    r = await runMembershipd(['restore', '--data', dst, '--in', live, '--force', plain]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /read back, identical/);
    // Restored beside the old store and swapped in: nothing left over.
    const left = await readdir(join(dst, 'nats'));
    assert.ok(left.includes('jetstream') && left.includes('store.json'), left.join(' '));
    assert.deepEqual(
      left.filter((f) => /restoring|replaced|lock/.test(f)),
      []
    );
  });

  test('enabling at-rest encryption: backup, fresh dir with a key, restore, serve', async () => {
    const live = join(dir.path, 'live.tgz');
    const key = await keyFile(dir.path, 'enable.key');
    const dst = join(dir.path, 'encrypted');
    let r = await runMembershipd([
      'restore',
      '--data',
      dst,
      '--in',
      live,
      '--at-rest-key-file',
      key,
      '--allow-unauthenticated',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /encrypted at rest/);
    assert.deepEqual(await plaintextHits(dst, [state.handle, state.subject]), []);
    // Encrypted offline backups need the key, and with it read the same state.
    r = await runMembershipd(['backup', '--data', dst, '--out', join(dir.path, 'x.tgz')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /encrypted at rest: give its key/);
    const out = join(dir.path, 'from-encrypted.tgz');
    r = await runMembershipd(['backup', '--data', dst, '--out', out, '--at-rest-key-file', key]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /warning: the store is encrypted at rest but this archive will not be/);
    await assertSameState(await readArchive(live), await readArchive(out));

    await copyFile(join(src, 'admin.id'), join(dst, 'admin.id'));
    const e = await startDaemon({ dataDir: dst, args: ['--at-rest-key-file', key] });
    try {
      assert.equal((await healthz(e)).at_rest, true);
      const admin = new ControlClient({ urls: [e.httpUrl], identity: await adminOf(e) });
      assert.ok((await admin.listUsers()).some((u) => u.handle === state.handle));
      admin.close();
      assert.ok(pidAlive(e.natsPid));
    } finally {
      await e.dispose();
    }
  });
});
