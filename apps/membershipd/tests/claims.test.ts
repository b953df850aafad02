import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, hkdfSync, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { connect as tcpConnect } from 'node:net';
import { networkInterfaces } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { connect, nkeyAuthenticator, type NatsConnection } from 'nats';
import { fromSeed } from 'nkeys.js';
import * as tar from 'tar-stream';
import { resolveNatsServerBinary } from '@sealbus/natsd';
import {
  generateIdentity,
  loadIdentity,
  natsUserKey,
  nkeySeedFromRaw,
  saveIdentity,
  userNkeyFromPublic,
  type Identity,
} from '@sealbus/crypto';
import { ControlClient, Sealbus, type PossibleLoss, type RoomMessage } from '@sealbus/client';
import { authorNext, authorStatement, natsOf, StatementChain } from '@sealbus/client/internal';
import {
  roomStreamName,
  userEventsSubject,
  type AuditRecord,
  type RoomPolicy,
  type SignedStatement,
} from '@sealbus/protocol';
import {
  runClientcheck,
  runMembershipd,
  startDaemon,
  tempDir,
  waitFor,
  type TempDir,
  type TestDaemon,
} from '@sealbus/testing';
import { adminOf, enrol, natsAs, rawRequest, signedHeaders } from './helpers.js';

/**
 * Documented promises (docs/CLAIMS.md) that had no test, each asserted here
 * against one real daemon (restarted, backed up and restored along the way)
 * and its CLI.
 */

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'tests', 'fixtures');
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const text = (m: RoomMessage) => new TextDecoder().decode(m.data);
const EPHEMERAL_PLAIN: RoomPolicy = { encrypt: false, persist: false, sign: true };
const PERSISTED: RoomPolicy = { encrypt: true, persist: true, sign: true };

/** A nats-server stand-in that records each invocation (arguments and environment), then runs the real one. */
async function recordingNatsServer(
  dir: string,
  real: string
): Promise<{ bin: string; log: string }> {
  const bin = join(dir, 'nats-server-recorder.sh');
  const log = join(dir, 'nats-server-invocations.log');
  await writeFile(
    bin,
    `#!/bin/sh\n{ printf 'ARGS %s\\n' "$*"; env; printf 'END\\n'; } >> '${log}'\nexec '${real}' "$@"\n`,
    { mode: 0o700 }
  );
  return { bin, log };
}

/** Every invocation the recorder saw: its arguments and its environment lines. */
async function invocations(log: string): Promise<Array<{ args: string; env: string[] }>> {
  const out: Array<{ args: string; env: string[] }> = [];
  let cur: { args: string; env: string[] } | undefined;
  for (const line of (await readFile(log, 'utf8')).split('\n')) {
    if (line.startsWith('ARGS ')) out.push((cur = { args: line.slice(5), env: [] }));
    else if (line === 'END') cur = undefined;
    else if (cur) cur.env.push(line);
  }
  return out;
}

/** The NATS users of a node, derived the way the README says: HKDF-SHA256(internal sign seed, info "sealbus/<label>"). */
function documentedNodeUser(internal: Identity, label: string): string {
  const raw = new Uint8Array(
    hkdfSync('sha256', internal.signSeed, new Uint8Array(0), `sealbus/${label}`, 32)
  );
  return fromSeed(new TextEncoder().encode(nkeySeedFromRaw('user', raw))).getPublicKey();
}

/** Path → mode, size and SHA-256 of everything under `dir` (directories by mode only). */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    const p = join(e.parentPath ?? e.path, e.name);
    const st = await stat(p);
    const rel = p.slice(dir.length);
    out[rel] = e.isFile()
      ? `${(st.mode & 0o7777).toString(8)} ${st.size} ${createHash('sha256')
          .update(await readFile(p))
          .digest('hex')}`
      : `${(st.mode & 0o7777).toString(8)} ${e.isDirectory() ? 'dir' : 'other'}`;
  }
  return out;
}

/** The entries of a gzip tar, name → content. */
async function tarEntries(gz: Uint8Array): Promise<Map<string, Buffer>> {
  const entries = new Map<string, Buffer>();
  const extract = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => chunks.push(c as Buffer));
      stream.on('end', () => {
        entries.set(header.name, Buffer.concat(chunks));
        next();
      });
      stream.resume();
    });
    extract.on('finish', resolve);
    extract.on('error', reject);
  });
  extract.end(gunzipSync(gz));
  await done;
  return entries;
}

/** Listening TCP sockets on `port` from /proc/net/tcp{,6}: their local addresses (hex, as the kernel writes them). */
async function listeners(port: number): Promise<string[]> {
  const out: string[] = [];
  const portHex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const rows = (await readFile(f, 'utf8').catch(() => '')).split('\n').slice(1);
    for (const row of rows) {
      const cols = row.trim().split(/\s+/);
      const [addr, p] = (cols[1] ?? '').split(':');
      if (cols[3] === '0A' && p === portHex && addr) out.push(addr);
    }
  }
  return out;
}
const LOOPBACK_HEX = new Set([
  '0100007F', // 127.0.0.1
  '00000000000000000000000001000000', // ::1
  '0000000000000000FFFF00000100007F', // ::ffff:127.0.0.1
]);

/** `connect()` to host:port: 'connected' or the error code. */
function tryConnect(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = tcpConnect({ host, port, timeout: 3_000 });
    s.once('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.once('timeout', () => {
      s.destroy();
      resolve('timeout');
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

describe('documented claims, one daemon', { timeout: 600_000 }, () => {
  let dir: TempDir;
  let data: string;
  let d: TestDaemon | undefined;
  let recorder: { bin: string; log: string };
  let admin: ControlClient;
  const atRestKey = randomBytes(32).toString('base64');
  const probe = randomBytes(8).toString('hex');
  const closers: Array<() => Promise<unknown> | void> = [];

  /** The node: encrypted at rest (key from the environment), metrics on a wildcard address, nats-server run through the recorder. */
  const startNode = async (args: string[] = []): Promise<TestDaemon> => {
    d = await startDaemon({
      dataDir: data,
      args: ['--metrics', '0.0.0.0:0', ...args],
      env: {
        SEALBUS_AT_REST_KEY: atRestKey,
        NATS_SERVER_BIN: recorder.bin,
        SEALBUS_CLAIMS_PROBE: probe,
      },
    });
    admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    return d;
  };
  const node = (): TestDaemon => {
    assert.ok(d, 'the node is running');
    return d;
  };
  const bus = async (id: Identity, on: TestDaemon = node()): Promise<Sealbus> => {
    const b = await Sealbus.connect({
      natsServers: [on.natsUrl],
      controlUrls: [on.httpUrl],
      identity: id,
    });
    closers.push(() => b.close());
    return b;
  };
  /** A registered (bound) member with its own control client. */
  const member = async (handle: string) => {
    const m = await enrol(admin, node(), handle);
    closers.push(() => m.ctl.close());
    return m;
  };
  const closeAll = async () => {
    for (const c of closers.splice(0).reverse()) await Promise.resolve(c()).catch(() => {});
  };
  /** The node's own NATS connection in account APP (room streams), as its daemon makes it. */
  const appConn = async (): Promise<NatsConnection> => {
    const internal = await loadIdentity(join(data, 'internal.id'));
    const nc = await connect({
      servers: node().natsUrl,
      authenticator: nkeyAuthenticator(
        new TextEncoder().encode(
          nkeySeedFromRaw(
            'user',
            new Uint8Array(
              hkdfSync('sha256', internal.signSeed, new Uint8Array(0), 'sealbus/node-app', 32)
            )
          )
        )
      ),
    });
    closers.push(() => nc.close());
    return nc;
  };
  const streamMaxBytes = async (nc: NatsConnection, roomId: string): Promise<number> =>
    (await (await nc.jetstreamManager()).streams.info(roomStreamName(roomId))).config.max_bytes;
  const auditTail = async (): Promise<AuditRecord[]> => {
    const r = await runMembershipd(['audit', 'tail', '--data', data, '-n', '100000', '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as AuditRecord[];
  };

  before(async () => {
    dir = await tempDir('sealbus-claims-');
    data = join(dir.path, 'data');
    recorder = await recordingNatsServer(dir.path, resolveNatsServerBinary().path);
    await startNode();
  });
  after(async () => {
    await closeAll();
    admin?.close();
    await d?.dispose();
    await dir?.remove();
  });

  test('R-11, R-15: serve --help gives the documented defaults; with none given a node runs on them (room stream 256MiB, APP 10GiB, 100 rooms per user)', async () => {
    const help = await runMembershipd(['serve', '--help']);
    assert.equal(help.code, 0, help.stderr);
    const flag = (name: string): string => {
      const line = help.stdout.split('\n').find((l) => l.trimStart().startsWith(`${name} `));
      assert.ok(line, `serve --help lists ${name}`);
      return line;
    };
    assert.match(flag('--http'), /\(default: 127\.0\.0\.1:8470\)$/);
    assert.match(flag('--nats-port'), /\(default: 4222\)$/);
    assert.match(flag('--log-level'), /trace\|debug\|info\|warn\|error \(default: "info"\)$/);
    assert.match(flag('--nats-server-bin'), /\(default: the one `npm run setup` chose\)$/);
    assert.match(flag('--max-rooms-per-user'), /\(default: 100\)$/);
    assert.match(flag('--room-max-bytes'), /\(default: 256MiB\)$/);
    assert.match(flag('--app-max-bytes'), /\(default: 10GiB\)$/);

    // The node was started without any of the three limit flags.
    const app = await appConn();
    const account = await (await app.jetstreamManager()).getAccountInfo();
    const lowered = node().logs.find((l) => /default --app-max-bytes does not fit/.test(l.msg));
    assert.equal(
      account.limits.max_storage,
      lowered ? lowered.app_max_bytes : 10 * GiB,
      'APP JetStream storage: 10GiB (or half the free space, logged, on a small disk)'
    );
    const owner = await member('defaults-owner');
    const b = await bus(owner.id);
    const persisted = await b.createRoom({
      subject: 'claims.defaults.persisted',
      policy: PERSISTED,
    });
    assert.equal(await streamMaxBytes(app, persisted.id), 256 * MiB);

    // 100 rooms per user: the 100th is made, the 101st is ROOM_QUOTA.
    let made = 1;
    while (made < 100) {
      await b.createRoom({ subject: `claims.defaults.q${made}`, policy: EPHEMERAL_PLAIN });
      made++;
    }
    await assert.rejects(
      b.createRoom({ subject: 'claims.defaults.q100', policy: EPHEMERAL_PLAIN }),
      (e: { status?: number; code?: string; message?: string }) =>
        e.status === 403 && e.code === 'ROOM_QUOTA' && /\(100\)/.test(String(e.message))
    );
  });

  test('R-29: a metrics listener on a non-loopback address is logged as a warning', async () => {
    const warned = node().logs.filter((l) => /metrics listen beyond loopback/.test(l.msg));
    assert.equal(warned.length, 1, 'one warning at start');
    assert.equal(warned[0]!.level, 40, 'at level warn');
    assert.equal(warned[0]!.metrics, '0.0.0.0');
    // and the listener is there (the warning is about a real exposure)
    const nodeJson = JSON.parse(await readFile(join(data, 'node.json'), 'utf8'));
    const res = await fetch(`${nodeJson.metrics_url}/metrics`);
    assert.equal(res.status, 200);
    await res.text();
  });

  test('R-117, R-11: by default the embedded nats-server listens on 127.0.0.1 only (its config, its listening sockets, a non-loopback address of this host refused)', async () => {
    const conf = await readFile(join(data, 'nats', 'nats-server.conf'), 'utf8');
    assert.match(conf, /^"?host"?: "127\.0\.0\.1"$/m);
    assert.match(conf, new RegExp(`^"?port"?: ${node().natsPort}$`, 'm'));
    const bound = await listeners(node().natsPort);
    assert.ok(bound.length > 0, 'nats-server listens');
    for (const a of bound) assert.ok(LOOPBACK_HEX.has(a), `listening on ${a}`);
    // This host's own non-loopback addresses (nothing else is contacted).
    const own = Object.values(networkInterfaces())
      .flat()
      .filter((i) => i && !i.internal && !i.address.startsWith('fe80'))
      .map((i) => i!.address);
    for (const a of own)
      assert.equal(await tryConnect(a, node().natsPort), 'ECONNREFUSED', `NATS on ${a}`);
    assert.equal(await tryConnect('127.0.0.1', node().natsPort), 'connected');
  });

  test('D-40: the auth timeout nats-server runs with is 12 s (a callout answered late in an election still admits)', async () => {
    const conf = await readFile(join(data, 'nats', 'nats-server.conf'), 'utf8');
    const at = conf.search(/^"?authorization"?: \{/m);
    assert.ok(at >= 0, 'an authorization block');
    const block = conf.slice(at);
    const timeout = /^\s*"?timeout"?: (\d+)$/m.exec(block);
    assert.equal(timeout?.[1], '12', 'authorization timeout');
    assert.ok(
      block.indexOf(timeout![0]) < block.search(/"?auth_callout"?: \{/),
      "the timeout is the authorization block's own"
    );
  });

  test("R-145: the daemon's NATS users are derived from internal.id under their own labels; no sign key is a NATS key", async () => {
    const conf = await readFile(join(data, 'nats', 'nats-server.conf'), 'utf8');
    const inConfig = new Set(conf.match(/\bU[A-Z2-7]{55}\b/g) ?? []);
    const internal = await loadIdentity(join(data, 'internal.id'));
    const adminId = await loadIdentity(join(data, 'admin.id'));
    const derived = ['node-internal', 'node-app', 'callout-service', 'system'].map((l) =>
      documentedNodeUser(internal, l)
    );
    assert.deepEqual([...inConfig].sort(), [...derived].sort(), 'the nkey users are exactly these');
    for (const [who, id] of [
      ['internal.id', internal],
      ['admin.id', adminId],
    ] as const) {
      const signAsNkey = userNkeyFromPublic(id.signPub);
      assert.ok(!inConfig.has(signAsNkey), `${who}'s sign key is not a NATS user`);
      assert.ok(
        !inConfig.has(natsUserKey(id).publicKey),
        `${who}'s client NATS key is not a node user`
      );
    }
    // No sign key authenticates: the internal identity's sign seed as an nkey is refused.
    await assert.rejects(
      connect({
        servers: node().natsUrl,
        authenticator: nkeyAuthenticator(
          new TextEncoder().encode(nkeySeedFromRaw('user', internal.signSeed))
        ),
        maxReconnectAttempts: 0,
        reconnect: false,
      }).then((nc) => nc.close()),
      /Authorization Violation|AUTHORIZATION_VIOLATION/i
    );
  });

  test("R-169: SEALBUS_AT_REST_KEY is dropped from the daemon's environment once read (a later child inherits everything else, not it; the initial environment still shows it)", async () => {
    const seen = await invocations(recorder.log);
    // nats-server --version, run by the daemon after it read the key, inherits its whole environment.
    const versionProbes = seen.filter((i) => i.args === '--version');
    assert.ok(
      versionProbes.some((i) => i.env.includes(`SEALBUS_CLAIMS_PROBE=${probe}`)),
      "a child inherited the daemon's environment"
    );
    for (const i of seen) {
      assert.ok(!i.env.some((l) => l.startsWith('SEALBUS_AT_REST_KEY=')), `variable in ${i.args}`);
      assert.ok(!i.env.some((l) => l.includes(atRestKey)), `the key in ${i.args}`);
    }
    // The server itself gets only the derived key.
    const server = seen.find((i) => i.args.startsWith('-c '));
    assert.ok(server, 'nats-server ran through the recorder');
    assert.ok(server.env.some((l) => /^SEALBUS_JS_KEY=sbk[0-9a-f]{64}$/.test(l)));
    // As documented: the initial environment (/proc/PID/environ) is not rewritten.
    const environ = (await readFile(`/proc/${node().proc.pid}/environ`, 'utf8')).split('\0');
    assert.ok(environ.includes(`SEALBUS_AT_REST_KEY=${atRestKey}`));
    const health = (await (await fetch(`${node().httpUrl}/healthz`)).json()) as {
      at_rest: boolean;
    };
    assert.equal(health.at_rest, true);
  });

  test('R-42: Content-Digest is sha-256 over the raw body bytes, checked before the body is parsed', async () => {
    const a = await adminOf(node());
    const url = `${node().httpUrl}/users`;
    const fresh = generateIdentity();
    const valid = JSON.stringify({ sign_pub: fresh.signPubHex, handle: 'digest', role: 'member' });
    // Not JSON, under a digest of other bytes: the digest error, not a parse error.
    const notJson = '{"sign_pub": not json';
    const wrong = await rawRequest(
      node().httpUrl,
      'POST',
      '/users',
      signedHeaders(a, 'POST', url, valid),
      notJson
    );
    assert.equal(wrong.status, 401);
    assert.equal(wrong.json.error.code, 'DIGEST_MISMATCH');
    // The same bytes under their own digest reach the parser.
    const own = await rawRequest(
      node().httpUrl,
      'POST',
      '/users',
      signedHeaders(a, 'POST', url, notJson),
      notJson
    );
    assert.equal(own.status, 400);
    assert.equal(own.json.error.code, 'BAD_JSON');
    // Raw bytes: the same JSON value spaced differently does not match the compact form's digest ...
    const spaced = `{ "sign_pub" : "${fresh.signPubHex}", "handle" : "digest", "role" : "member" }`;
    const reformatted = await rawRequest(
      node().httpUrl,
      'POST',
      '/users',
      signedHeaders(a, 'POST', url, valid),
      spaced
    );
    assert.equal(reformatted.json.error?.code, 'DIGEST_MISMATCH');
    // ... and its own sha-256, as RFC 9530 writes it, is accepted.
    const headers = signedHeaders(a, 'POST', url, spaced);
    assert.equal(
      headers['content-digest'],
      `sha-256=:${createHash('sha256').update(spaced).digest('base64')}:`
    );
    const ok = await rawRequest(node().httpUrl, 'POST', '/users', headers, spaced);
    assert.equal(ok.status, 201, JSON.stringify(ok.json));
  });

  test('R-59: GET /rooms/{id}/statements?after=N gives a member the owner-signed statements with seq > N, as stored, and the head seq', async () => {
    const owner = await member('statements-owner');
    const [b, c, outsider] = [
      await member('statements-b'),
      await member('statements-c'),
      await member('statements-outsider'),
    ];
    const room = randomBytes(12).toString('hex');
    const subject = 'claims.statements';
    const posted: SignedStatement[] = [
      authorStatement(owner.id.signSeed, null, {
        room,
        subject,
        policy: EPHEMERAL_PLAIN,
        owner: owner.id.signPubHex,
        epoch: 0,
        key: null,
        members: [[owner.id.signPubHex, 'owner']],
      }),
    ];
    await owner.ctl.createRoom({
      id: room,
      subject,
      policy: EPHEMERAL_PLAIN,
      statement: posted[0]!,
    });
    for (const m of [b, c]) {
      const chain = StatementChain.fromStatements(
        room,
        (await owner.ctl.statements(room)).statements
      );
      const next = authorNext(owner.id.signSeed, chain, {
        epoch: 0,
        key: null,
        members: [...chain.members(), [m.id.signPubHex, 'reader']],
      });
      await owner.ctl.addMember(room, {
        sign_pub: m.id.signPubHex,
        role: 'reader',
        statement: next,
      });
      posted.push(next);
    }
    const get = (who: { id: Identity }, query: string) => {
      const path = `/rooms/${room}/statements${query}`;
      return rawRequest(
        node().httpUrl,
        'GET',
        path,
        signedHeaders(who.id, 'GET', `${node().httpUrl}${path}`)
      );
    };
    const stored = posted.map((s, seq) => ({ seq, statement: s.statement, sig: s.sig }));
    for (const [after, want] of [
      ['', stored],
      ['?after=0', stored.slice(1)],
      ['?after=1', stored.slice(2)],
      ['?after=2', []],
      ['?after=7', []],
    ] as const) {
      const r = await get(b, after);
      assert.equal(r.status, 200, after);
      // The bytes the owner signed, exactly (statement text and signature as posted).
      assert.deepEqual(r.json, { id: room, head: 2, statements: want }, `statements${after}`);
    }
    const refused = await get(outsider, '?after=0');
    assert.equal(refused.status, 403);
    assert.equal(refused.json.error.code, 'NOT_A_MEMBER');
  });

  test('C-9: events to a user carry a random id, so two alike are still two', async () => {
    const [a, b, c, e] = [
      await member('events-a'),
      await member('events-b'),
      await member('events-c'),
      await member('events-e'),
    ];
    const A = await bus(a.id);
    const room = await A.createRoom({ subject: 'claims.events', policy: EPHEMERAL_PLAIN });
    await A.invite(room.id, b.id.signPubHex, 'reader');
    const nc = await natsAs(node(), b.id);
    closers.push(() => nc.close());
    const events: Array<Record<string, unknown>> = [];
    nc.subscribe(userEventsSubject(b.id.signPubHex), {
      callback: (_e, m) => void events.push(JSON.parse(new TextDecoder().decode(m.data))),
    });
    await nc.flush();
    // Two invitations of others: b is told twice the same thing.
    await A.invite(room.id, c.id.signPubHex, 'reader');
    await A.invite(room.id, e.id.signPubHex, 'reader');
    const changed = await waitFor(
      () => {
        const r = events.filter((x) => x.type === 'room.changed' && x.room === room.id);
        return r.length >= 2 ? r : undefined;
      },
      { timeoutMs: 10_000, what: 'two room.changed events' }
    );
    assert.equal(changed.length, 2);
    const [x, y] = changed as [Record<string, unknown>, Record<string, unknown>];
    const { id: idX, ...restX } = x;
    const { id: idY, ...restY } = y;
    assert.deepEqual(restX, restY, 'alike but for their id');
    assert.match(String(idX), /^[0-9a-f]{16}$/);
    assert.match(String(idY), /^[0-9a-f]{16}$/);
    assert.notEqual(idX, idY);
  });

  test("K-32: the SDK emits loss with the missing range when a sender's sequence jumps", async () => {
    const [a, b] = [await member('loss-a'), await member('loss-b')];
    const A = await bus(a.id);
    const B = await bus(b.id);
    const room = await A.createRoom({
      subject: 'claims.loss',
      policy: { encrypt: true, persist: false, sign: true },
    });
    await A.invite(room.id, b.id.signPubHex, 'reader');
    const got: RoomMessage[] = [];
    const losses: PossibleLoss[] = [];
    B.on('loss', (l) => losses.push(l));
    await B.subscribe(room.id, (m) => void got.push(m));
    await A.publish(room.id, 'one');
    await waitFor(() => got.length === 1, { timeoutMs: 10_000, what: 'the first message' });
    assert.deepEqual(losses, [], 'no loss while the sequence is dense');
    // The writer's next two frames (seq 2, 3) never leave its connection.
    const nc = natsOf(A);
    const publish = nc.publish.bind(nc);
    let dropped = 0;
    nc.publish = (subject, payload, opts) => {
      if (subject === room.subject && dropped < 2) {
        dropped++;
        return;
      }
      publish(subject, payload, opts);
    };
    try {
      for (const m of ['two', 'three', 'four']) await A.publish(room.id, m);
      await waitFor(() => got.length === 2, { timeoutMs: 10_000, what: 'the fourth message' });
    } finally {
      nc.publish = publish;
    }
    assert.equal(dropped, 2);
    assert.deepEqual(got.map(text), ['one', 'four']);
    assert.deepEqual(losses, [
      { room: room.id, sender: a.id.signPubHex, session: got[0]!.session, from: 2, to: 3 },
    ]);
  });

  test('B-50: a member moving its own reading position (POST /rooms/{id}/cursor) is not on the audit log', async () => {
    const [a, b] = [await member('cursor-a'), await member('cursor-b')];
    const A = await bus(a.id);
    const room = await A.createRoom({ subject: 'claims.cursor', policy: PERSISTED });
    await A.invite(room.id, b.id.signPubHex, 'reader');
    await A.publish(room.id, 'one');
    const before = await auditTail();
    for (const at of [{ from: 'start' }, { from: 'new' }, { after: 1 }] as const) {
      const r = await b.ctl.cursor(room.id, at);
      assert.equal(r.id, room.id);
    }
    const during = await auditTail();
    assert.deepEqual(during.slice(before.length), [], 'nothing recorded');
    // The log does record this member's audited requests: a refused delete.
    await assert.rejects(b.ctl.deleteRoom(room.id), { status: 403 });
    const afterDenied = await auditTail();
    assert.deepEqual(
      afterDenied.slice(during.length).map((r) => [r.actor, r.action, r.outcome]),
      [[b.id.signPubHex, 'room.delete', 'denied']]
    );
  });

  test('R-131: identity new FILE writes a 0600 identity and prints its sign_pub, kex_pub and nats_pub', async () => {
    const file = join(dir.path, 'alice.id');
    const r = await runMembershipd(['identity', 'new', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const id = await loadIdentity(file);
    assert.deepEqual(r.stdout.trim().split('\n'), [
      file,
      `sign_pub ${id.signPubHex}`,
      `kex_pub  ${id.kexPubHex}`,
      `nats_pub ${id.natsPubHex}`,
    ]);
    // nats_pub is the derived NATS key (never the sign key).
    assert.equal(userNkeyFromPublic(id.natsPub), natsUserKey(id).publicKey);
    assert.notEqual(id.natsPubHex, id.signPubHex);
    const j = await runMembershipd(['identity', 'new', join(dir.path, 'bob.id'), '-o', 'json']);
    assert.equal(j.code, 0, j.stderr);
    const bob = await loadIdentity(join(dir.path, 'bob.id'));
    assert.deepEqual(JSON.parse(j.stdout), {
      file: join(dir.path, 'bob.id'),
      sign_pub: bob.signPubHex,
      kex_pub: bob.kexPubHex,
      nats_pub: bob.natsPubHex,
    });
    // It never overwrites.
    const again = await runMembershipd(['identity', 'new', file]);
    assert.equal(again.code, 1);
    assert.deepEqual(await loadIdentity(file), id);
  });

  test('R-207: clientcheck creates a fresh room (random subject suffix) and deletes it at the end, unless --keep-room', async () => {
    const user = await member('clientcheck');
    const file = join(dir.path, 'clientcheck.id');
    await saveIdentity(file, user.id);
    const run = async (...extra: string[]) => {
      const r = await runClientcheck([
        '--identity-file',
        file,
        '--nats-seeds',
        node().natsUrl,
        '--ctrl-seeds',
        node().httpUrl,
        '--messages',
        '3',
        '--json',
        ...extra,
      ]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { room: string; subject: string };
    };
    const first = await run();
    assert.match(first.subject, /^clientcheck\.[0-9a-f]{12}$/);
    assert.deepEqual(await user.ctl.listMyRooms(), [], 'deleted at the end');
    await assert.rejects(user.ctl.getRoom(first.room), { status: 404 });
    const kept = await run('--keep-room');
    assert.match(kept.subject, /^clientcheck\.[0-9a-f]{12}$/);
    assert.notEqual(kept.subject, first.subject, 'a fresh subject each run');
    assert.deepEqual(
      (await user.ctl.listMyRooms()).map((r) => [r.id, r.subject, r.role]),
      [[kept.room, kept.subject, 'owner']]
    );
  });

  test('R-189, B-16: a backup archive holds no identity file (admin.id, internal.id, callout.key) and not the at-rest key', async () => {
    const out = join(dir.path, 'secrets-check.tgz');
    const r = await runMembershipd(['backup', '--data', data, '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const gz = await readFile(out);
    const entries = await tarEntries(gz);
    assert.ok(entries.has('manifest.json'), [...entries.keys()].join(','));
    for (const name of entries.keys())
      assert.ok(!/(^|\/)(admin\.id|internal\.id|callout\.key)$|\.id$/.test(name), name);
    const ids = await Promise.all(
      ['admin.id', 'internal.id'].map(async (f) =>
        JSON.parse(await readFile(join(data, f), 'utf8'))
      )
    );
    const callout = JSON.parse(await readFile(join(data, 'callout.key'), 'utf8'));
    const secrets: Array<[string, string]> = [
      ...ids.flatMap((s, i): Array<[string, string]> => [
        [`${['admin', 'internal'][i]} sign_priv`, s.sign_priv],
        [`${['admin', 'internal'][i]} kex_priv`, s.kex_priv],
      ]),
      ['callout issuer_seed', callout.issuer_seed],
      ['callout xkey_seed', callout.xkey_seed],
      ['at-rest key', atRestKey],
      ['at-rest key (hex)', Buffer.from(atRestKey).toString('hex')],
    ];
    const haystacks: Array<[string, Buffer]> = [
      ['archive bytes', gz],
      ['tar bytes', gunzipSync(gz)],
      ...[...entries].map(([n, b]): [string, Buffer] => [n, b]),
    ];
    for (const [where, bytes] of haystacks)
      for (const [what, secret] of secrets) {
        assert.ok(secret.length >= 16, what);
        assert.ok(!bytes.includes(secret), `${what} found in ${where}`);
        assert.ok(
          !bytes.includes(Buffer.from(secret, 'utf8').toString('base64')),
          `${what} (base64) in ${where}`
        );
      }
  });

  test('R-190, B-29, B-38: after a restore (here under a new at-rest key), members read their persisted rooms from the start again', async () => {
    const [a, b] = [await member('restore-a'), await member('restore-b')];
    const A = await bus(a.id);
    const room = await A.createRoom({ subject: 'claims.restore', policy: PERSISTED });
    await A.invite(room.id, b.id.signPubHex, 'reader');
    for (const m of ['one', 'two', 'three']) await A.publish(room.id, m);
    const B = await bus(b.id);
    const read = async (on: Sealbus, until: number, quietMs = 0): Promise<string[]> => {
      const got: RoomMessage[] = [];
      const sub = await on.subscribe(room.id, (m) => void got.push(m)); // `from` omitted
      await waitFor(() => got.length >= until, { timeoutMs: 15_000, what: `${until} messages` });
      await sleep(quietMs);
      await sub.stop();
      return got.map(text);
    };
    // Before: b's position is kept (a second reading resumes after what it read).
    assert.deepEqual(await read(B, 3), ['one', 'two', 'three']);
    await A.publish(room.id, 'four');
    assert.deepEqual(await read(B, 1, 1_000), ['four']);
    await closeAll();

    const archive = join(dir.path, 'restore.tgz');
    const r = await runMembershipd(['backup', '--data', data, '--out', archive]);
    assert.equal(r.code, 0, r.stderr);
    admin.close();
    await node().stop();
    d = undefined;
    const restored = join(dir.path, 'restored');
    // The at-rest drill: restored into a fresh dir under a new key.
    const newKey = join(dir.path, 'new-at-rest.key');
    await writeFile(newKey, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
    const rr = await runMembershipd([
      'restore',
      '--data',
      restored,
      '--in',
      archive,
      '--allow-unauthenticated',
      '--at-rest-key-file',
      newKey,
    ]);
    assert.equal(rr.code, 0, rr.stderr);
    await copyFile(join(data, 'admin.id'), join(restored, 'admin.id'));
    await chmod(join(restored, 'admin.id'), 0o600);
    const R = await startDaemon({ dataDir: restored, args: ['--at-rest-key-file', newKey] });
    try {
      const health = (await (await fetch(`${R.httpUrl}/healthz`)).json()) as { at_rest: boolean };
      assert.equal(health.at_rest, true);
      const B2 = await bus(b.id, R);
      assert.deepEqual(await read(B2, 4), ['one', 'two', 'three', 'four']);
    } finally {
      await closeAll();
      await R.dispose();
    }
  });

  test('R-163: streams made before --room-max-bytes (or under another value) keep their configuration across a restart with a new value', async () => {
    if (!d) await startNode();
    const a = await member('limits-a');
    const A = await bus(a.id);
    const capped = await A.createRoom({ subject: 'claims.limits.capped', policy: PERSISTED });
    const old = await A.createRoom({ subject: 'claims.limits.old', policy: PERSISTED });
    let app = await appConn();
    assert.equal(await streamMaxBytes(app, capped.id), 256 * MiB);
    // As a stream made before the flag existed: no max_bytes at all.
    const jsm = await app.jetstreamManager();
    const cfg = (await jsm.streams.info(roomStreamName(old.id))).config;
    await jsm.streams.update(roomStreamName(old.id), { ...cfg, max_bytes: -1 });
    await A.publish(old.id, 'history');
    await closeAll();
    admin.close();
    await node().stop();
    await startNode(['--room-max-bytes', '1MiB']);
    app = await appConn();
    assert.equal(await streamMaxBytes(app, capped.id), 256 * MiB, 'kept its 256MiB');
    assert.equal(await streamMaxBytes(app, old.id), -1, 'kept no cap');
    const A2 = await bus(a.id);
    const fresh = await A2.createRoom({ subject: 'claims.limits.fresh', policy: PERSISTED });
    assert.equal(
      await streamMaxBytes(app, fresh.id),
      1 * MiB,
      'the new value applies to new rooms'
    );
    await closeAll();
  });

  test('R-194: a failed migrate leaves the data dir as it was, but for the expired nonces nats-server drops when it opens the 0.1 store', async () => {
    const legacy = join(dir.path, 'legacy');
    await mkdir(join(legacy, 'nats'), { recursive: true, mode: 0o700 });
    execFileSync('tar', ['-xzf', join(FIXTURES, 'v0.1-store.tgz'), '-C', join(legacy, 'nats')]);
    // A nats-server that opens the 0.1 store but fails on the staging store,
    // leaving a half-made store there as a crashed server would.
    const real = resolveNatsServerBinary().path;
    const stage = join(legacy, 'nats', 'jetstream.restoring');
    const failing = join(dir.path, 'nats-server-fails-on-stage.sh');
    const log = join(dir.path, 'stage-failures.log');
    await writeFile(
      failing,
      `#!/bin/sh\nif [ "$1" = "-c" ] && grep -q 'jetstream.restoring' "$2"; then\n` +
        `  mkdir -p '${stage}/jetstream/SEALBUS' && echo partial > '${stage}/jetstream/SEALBUS/junk'\n` +
        `  echo staging >> '${log}'; echo 'claims test: this server fails' >&2; exit 1\nfi\n` +
        `exec '${real}' "$@"\n`,
      { mode: 0o700 }
    );
    const beforeRun = await snapshot(legacy);
    const m = await runMembershipd(['migrate', '--data', legacy, '--nats-server-bin', failing]);
    assert.equal(m.code, 1, m.stdout + m.stderr);
    assert.match(m.stderr, /migration failed, nothing changed/);
    assert.equal(
      (await readFile(log, 'utf8')).trim(),
      'staging',
      'it failed past reading the 0.1 store'
    );
    assert.ok(!existsSync(stage), 'no staging store left');
    // Byte for byte, but for one thing: reading the 0.1 store starts
    // nats-server on it, which applies the nonces bucket's 10-minute max age
    // and drops the fixture's long-expired nonces (their message block and
    // its index shrink). Every other file, and the bucket's config, is as it was.
    const afterRun = await snapshot(legacy);
    const expiry = /\/KV_sealbus_nonces\/msgs\/(\d+\.blk|index\.db)$/;
    const changed = Object.keys(beforeRun).filter((k) => afterRun[k] !== beforeRun[k]);
    assert.deepEqual(Object.keys(afterRun).sort(), Object.keys(beforeRun).sort(), 'the same files');
    for (const k of changed) {
      assert.match(k, expiry, `${k} changed`);
      const size = (v: string | undefined) => Number(v?.split(' ')[1]);
      assert.ok(size(afterRun[k]) < size(beforeRun[k]), `${k} only shrank`);
    }
  });
});
