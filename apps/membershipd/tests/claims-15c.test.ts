import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, copyFile, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, nkeyAuthenticator, type NatsConnection } from 'nats';
import {
  encodePublicIdentity,
  generateIdentity,
  loadIdentity,
  natsUserKey,
  type Identity,
} from '@sealbus/crypto';
import {
  ControlClient,
  Sealbus,
  TrustError,
  type RejectedFrame,
  type RoomMessage,
} from '@sealbus/client';
import { deliveredStreamSeq, natsOf } from '@sealbus/client/internal';
import {
  memberDeliverSubject,
  memberDurableName,
  roomStreamName,
  userEventsSubject,
  type RoomPolicy,
} from '@sealbus/protocol';
import {
  freePort,
  freePorts,
  pidAlive,
  runMembershipd,
  startDaemon,
  tempDir,
  waitFor,
  type TempDir,
  type TestDaemon,
} from '@sealbus/testing';
import { nodeUsers } from '../src/dataplane/keys.js';
import {
  adminOf,
  enrol,
  natsAs,
  rawRequest,
  serverConnectionsOf,
  signedHeaders,
} from './helpers.js';
import { LyingProxy, type Q } from './security/lying-proxy.js';

/**
 * Documented promises (docs/CLAIMS.md, "Claims without a test" → "Testable
 * with one daemon") asserted against one shared daemon, a daemon of their
 * own where the claim is about stopping and restoring one (B-37), and a lone
 * cluster node (D-24). Deliveries are dropped, repeated and captured by a
 * loopback TCP proxy that speaks enough of the NATS protocol to pick out one
 * message; the control plane lies through the proxy of the security tests.
 */

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
const ENC: RoomPolicy = { encrypt: true, persist: false, sign: true };
const PERSISTED: RoomPolicy = { encrypt: true, persist: true, sign: true };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const text = (m: RoomMessage) => new TextDecoder().decode(m.data);

/** A message nats-server sends a client (MSG or HMSG), as the tap sees it. */
interface NatsMsg {
  subject: string;
  reply: string | undefined;
  /** The header block of an HMSG ('' for a MSG). */
  headers: string;
}
type Verdict = 'pass' | 'drop' | 'twice';

/**
 * Splits what nats-server sends into protocol operations and forwards them,
 * asking `decide` about each MSG/HMSG: pass it, drop it, or send it twice.
 */
function natsFilter(forward: (b: Buffer) => void, decide: (m: NatsMsg) => Verdict) {
  let pending: Buffer = Buffer.alloc(0);
  return (chunk: Buffer) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    for (;;) {
      const eol = pending.indexOf('\r\n');
      if (eol < 0) return;
      const args = pending
        .subarray(0, eol)
        .toString('latin1')
        .split(/[ \t]+/);
      const op = args[0]!.toUpperCase();
      if (op !== 'MSG' && op !== 'HMSG') {
        forward(Buffer.from(pending.subarray(0, eol + 2)));
        pending = pending.subarray(eol + 2);
        continue;
      }
      const size = Number(args[args.length - 1]);
      const need = eol + 2 + size + 2;
      if (pending.length < need) return;
      const frame = Buffer.from(pending.subarray(0, need));
      pending = pending.subarray(need);
      const hdrLen = op === 'HMSG' ? Number(args[args.length - 2]) : 0;
      const verdict = decide({
        subject: args[1]!,
        reply: args.length === (op === 'HMSG' ? 6 : 5) ? args[3] : undefined,
        headers: frame.subarray(eol + 2, eol + 2 + hdrLen).toString('latin1'),
      });
      if (verdict === 'drop') continue;
      forward(frame);
      if (verdict === 'twice') forward(frame);
    }
  };
}

/**
 * A loopback TCP proxy in front of `target` that records every byte both
 * ways; in front of nats-server (`nats: true`) it can drop or repeat single
 * messages on their way to the client (`onMsg`).
 */
class Tap {
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  /** Client → server bytes. */
  readonly up: Buffer[] = [];
  /** Server → client bytes, as the server sent them. */
  readonly down: Buffer[] = [];
  target = 0;
  onMsg: ((m: NatsMsg) => Verdict) | undefined;

  private constructor(nats: boolean) {
    this.#server = createServer((client) => {
      const upstream = tcpConnect(this.target, '127.0.0.1');
      this.#sockets.add(client).add(upstream);
      const toClient = nats
        ? natsFilter(
            (b) => client.write(b),
            (m) => this.onMsg?.(m) ?? 'pass'
          )
        : (b: Buffer) => void client.write(b);
      client.on('data', (b: Buffer) => {
        this.up.push(b);
        upstream.write(b);
      });
      upstream.on('data', (b: Buffer) => {
        this.down.push(b);
        toClient(b);
      });
      const end = () => {
        client.destroy();
        upstream.destroy();
        this.#sockets.delete(client);
        this.#sockets.delete(upstream);
      };
      for (const s of [client, upstream]) s.on('close', end).on('error', end);
    });
  }

  static async start(port: number, o: { nats?: boolean; target?: number } = {}): Promise<Tap> {
    const t = new Tap(o.nats ?? false);
    t.target = o.target ?? 0;
    await new Promise<void>((resolve, reject) => {
      t.#server.once('error', reject);
      t.#server.listen(port, '127.0.0.1', () => resolve());
    });
    return t;
  }

  get port(): number {
    return (this.#server.address() as { port: number }).port;
  }

  /** Everything captured, both directions. */
  bytes(): Buffer {
    return Buffer.concat([...this.up, ...this.down]);
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise((r) => this.#server.close(r));
  }
}

/**
 * Every way a 32-byte secret could be written in traffic: raw, hex (both
 * cases), and base64 / base64url at each of the three byte alignments it can
 * have inside a longer encoded value (only the characters that depend on the
 * secret's bytes alone).
 */
function encodingsOf(secret: Uint8Array): Array<[string, Buffer]> {
  const s = Buffer.from(secret);
  const out: Array<[string, Buffer]> = [
    ['raw', s],
    ['hex', Buffer.from(s.toString('hex'))],
    ['HEX', Buffer.from(s.toString('hex').toUpperCase())],
  ];
  for (const enc of ['base64', 'base64url'] as const)
    for (let k = 0; k < 3; k++) {
      const all = Buffer.concat([Buffer.alloc(k), s])
        .toString(enc)
        .replace(/=+$/, '');
      const whole = Math.floor((k + s.length) / 3) * 4; // characters of complete groups
      out.push([`${enc}@${k}`, Buffer.from(all.slice(k === 0 ? 0 : 4, whole))]);
    }
  return out;
}

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text (the subset prom-client writes). */
function parseMetrics(body: string): Sample[] {
  const out: Sample[] = [];
  for (const line of body.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `unparsable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of m[2]?.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g) ?? []) labels[k!] = v!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

function sum(samples: Sample[], name: string, labels: Record<string, string>): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

/** waitFor, whose failure says what `state()` is then (not when the wait began). */
async function until(check: () => unknown, timeoutMs: number, what: string, state: () => string) {
  try {
    await waitFor(check, { timeoutMs, what });
  } catch (err) {
    throw new Error(`${(err as Error).message}; ${state()}`, { cause: err });
  }
}

describe('claims without a test (15c): one daemon', { timeout: 240_000 }, () => {
  let d: TestDaemon;
  let admin: ControlClient;
  let adminId: Identity;
  let proxy: LyingProxy;
  let httpTap: Tap;
  let app: NatsConnection;
  let metricsUrl: string;
  const closers: Array<() => Promise<unknown> | void> = [];

  before(async () => {
    const [proxyPort, tapPort, metricsPort] = (await freePorts(3)) as [number, number, number];
    // The HTTP tap forwards bytes as they are: the daemon must accept the
    // name clients sign for through it, as it does the lying proxy's.
    httpTap = await Tap.start(tapPort);
    d = await startDaemon({
      args: [
        '--authority',
        `127.0.0.1:${proxyPort}`,
        '--authority',
        `127.0.0.1:${tapPort}`,
        '--metrics',
        `127.0.0.1:${metricsPort}`,
      ],
    });
    httpTap.target = d.httpPort;
    metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
    proxy = await LyingProxy.start(d.httpUrl, proxyPort);
    adminId = await adminOf(d);
    admin = new ControlClient({ urls: [d.httpUrl], identity: adminId });
    // The node's own connection in account APP: what the daemon (or whoever
    // holds internal.id) may publish there, such as a user's events.
    const users = nodeUsers(await loadIdentity(join(d.dataDir, 'internal.id')));
    app = await connect({
      servers: d.natsUrl,
      authenticator: nkeyAuthenticator(users.app.getSeed()),
    });
  });
  after(async () => {
    for (const c of closers.splice(0).reverse()) await Promise.resolve(c()).catch(() => {});
    await app?.close().catch(() => {});
    admin?.close();
    await proxy?.close();
    await httpTap?.close();
    await d?.dispose();
  });

  const member = async (handle: string) => {
    const m = await enrol(admin, d, handle);
    closers.push(() => m.ctl.close());
    return m.id;
  };
  const bus = async (
    id: Identity,
    o: Partial<Parameters<typeof Sealbus.connect>[0]> = {}
  ): Promise<Sealbus> => {
    const b = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity: id,
      ...o,
    });
    closers.push(() => b.close());
    return b;
  };
  const tap = async (o: { nats?: boolean } = { nats: true }) => {
    const t = await Tap.start(0, { ...o, target: d.natsPort });
    closers.push(() => t.close());
    return t;
  };
  /** Control-plane calls made through the lying proxy that move a reading position, by room. */
  const cursorCalls: Array<{ room: string; body: unknown }> = [];
  const watchCursor = () => {
    proxy.intercept = (q: Q, body: unknown) => {
      const m = /^\/rooms\/([0-9a-f]{24})\/cursor$/.exec(q.path);
      if (q.method === 'POST' && m) cursorCalls.push({ room: m[1]!, body });
      return undefined; // forwarded as it came
    };
  };
  const cursorsOf = (room: string) => cursorCalls.filter((c) => c.room === room).map((c) => c.body);

  /**
   * A persisted room of alice's that bob (a reader) reads through a NATS tap
   * and the lying proxy (which only records here): each frame his consumer
   * delivers goes through `plan(n, seq)` (n counts deliveries from 1), and
   * every delivery and heartbeat is logged in `seen`.
   */
  const persistedSetup = async (tag: string) => {
    const [alice, bob] = [await member(`${tag}-alice`), await member(`${tag}-bob`)];
    const A = await bus(alice);
    const room = await A.createRoom({ subject: `claims15c.${tag}`, policy: PERSISTED });
    await A.invite(room.id, bob.signPubHex, 'reader');
    const t = await tap();
    // A frame keeps its own subject; its ack subject names the stream and
    // bob's consumer. Heartbeats come on the consumer's deliver subject.
    const heartbeats = memberDeliverSubject(bob.signPubHex, room.id);
    const frames = `$JS.ACK.${roomStreamName(room.id)}.${memberDurableName(bob.signPubHex)}.`;
    const seen: string[] = [];
    let n = 0;
    let plan: (n: number, seq: number) => Verdict = () => 'pass';
    t.onMsg = (m) => {
      if (m.subject === heartbeats && /^NATS\/1\.0 100/.test(m.headers)) {
        seen.push(`hb:${/Nats-Last-Stream:\s*(\d+)/i.exec(m.headers)?.[1] ?? '?'}`);
        return 'pass';
      }
      if (!m.reply?.startsWith(frames)) return 'pass';
      const seq = deliveredStreamSeq(m.reply);
      if (seq === null) return 'pass';
      const v = plan(++n, seq);
      seen.push(v === 'pass' ? `${seq}` : `${seq}:${v}`);
      return v;
    };
    watchCursor();
    const B = await bus(bob, {
      natsServers: [`nats://127.0.0.1:${t.port}`],
      controlUrls: [proxy.url],
      statementCheckMs: 0,
    });
    const got: RoomMessage[] = [];
    const rejected: RejectedFrame[] = [];
    const errors: string[] = [];
    B.on('rejected', (r) => rejected.push(r));
    B.on('error', (e) => errors.push(e.message));
    return {
      A,
      B,
      bob,
      room,
      got,
      rejected,
      errors,
      seen,
      /** What the client sent nats-server. */
      sent: () => Buffer.concat(t.up).toString('latin1'),
      setPlan: (p: typeof plan) => (plan = p),
      texts: () => got.map(text),
      state: () =>
        `got ${got.map(text).join()}; deliveries ${seen.join(' ')}; cursor ${JSON.stringify(cursorsOf(room.id))}`,
    };
  };

  test('R-114, K-61: a delivery lost in flight (a skipped stream sequence) makes the SDK ask POST /rooms/{id}/cursor {"after": last processed}; every frame then comes once, in order', async () => {
    const s = await persistedSetup('gap');
    let dropped = 0;
    s.setPlan((n, seq) => (n === 3 ? ((dropped = seq), 'drop') : 'pass'));
    await s.B.subscribe(s.room.id, (m) => void s.got.push(m));
    for (let i = 1; i <= 6; i++) await s.A.publish(s.room.id, `m${i}`);
    await until(() => s.got.length >= 6, 15_000, '6 frames', s.state);
    await sleep(300);
    assert.ok(dropped > 1, `the third delivery was dropped: ${s.state()}`);
    assert.deepEqual(s.texts(), ['m1', 'm2', 'm3', 'm4', 'm5', 'm6']);
    const seqs = s.got.map((m) => m.streamSeq!);
    assert.deepEqual(
      seqs,
      seqs.map((_, i) => seqs[0]! + i),
      'dense, each once'
    );
    assert.deepEqual(cursorsOf(s.room.id), [{ after: dropped - 1 }], s.seen.join(' '));
    // What was lost was delivered again after the resume.
    assert.ok(
      s.seen.includes(`${dropped}:drop`) && s.seen.includes(`${dropped}`),
      s.seen.join(' ')
    );
    assert.deepEqual([s.rejected, s.errors], [[], []]);
    // The consumer's deliveries are not acknowledged: the member has no JetStream grant.
    assert.ok(!s.sent().includes('$JS.'), 'the client sent nothing to JetStream');
  });

  test('K-61: a heartbeat naming a later stream sequence than the last processed (the last frame lost) makes the SDK resume after the last one it processed', async () => {
    const s = await persistedSetup('heartbeat');
    let dropped = 0;
    s.setPlan((n, seq) => (n === 3 ? ((dropped = seq), 'drop') : 'pass'));
    await s.B.subscribe(s.room.id, (m) => void s.got.push(m));
    for (let i = 1; i <= 3; i++) await s.A.publish(s.room.id, `h${i}`);
    // No later frame shows the gap: only the consumer's idle heartbeat (every 2 s) can.
    await until(() => s.got.length >= 3, 12_000, 'the lost last frame', s.state);
    assert.deepEqual(s.texts(), ['h1', 'h2', 'h3']);
    assert.deepEqual(cursorsOf(s.room.id), [{ after: dropped - 1 }]);
    const hb = s.seen.findIndex((x) => x === `hb:${dropped}`);
    assert.ok(
      hb > s.seen.indexOf(`${dropped}:drop`) && s.seen.indexOf(`${dropped}`) > hb,
      `a heartbeat naming ${dropped} came between the loss and the redelivery: ${s.seen.join(' ')}`
    );
    assert.deepEqual([s.rejected, s.errors], [[], []]);
  });

  test('K-61: a frame delivered again (a sequence already processed) is dropped, without a resume', async () => {
    const s = await persistedSetup('again');
    s.setPlan((n) => (n === 2 ? 'twice' : 'pass'));
    await s.B.subscribe(s.room.id, (m) => void s.got.push(m));
    for (let i = 1; i <= 3; i++) await s.A.publish(s.room.id, `a${i}`);
    await until(() => s.got.length >= 3, 10_000, '3 frames', s.state);
    await sleep(1_000);
    assert.ok(
      s.seen.some((x) => x.endsWith(':twice')),
      s.seen.join(' ')
    );
    assert.deepEqual(s.texts(), ['a1', 'a2', 'a3']);
    assert.deepEqual([s.rejected, s.errors, cursorsOf(s.room.id)], [[], [], []]);
  });

  test('K-61: stopping a subscription, or close(), moves the consumer to right after the last frame processed: the next subscribe resumes exactly there', async () => {
    const s = await persistedSetup('stop');
    for (let i = 1; i <= 6; i++) await s.A.publish(s.room.id, `s${i}`);
    /** A handler that holds frame `at` until `open()`; what it was given, with stream sequences. */
    const gate = (at: string) => {
      let open!: () => void;
      const opened = new Promise<void>((r) => (open = r));
      const got: string[] = [];
      const seqs: number[] = [];
      const handler = async (m: RoomMessage) => {
        got.push(text(m));
        seqs.push(m.streamSeq!);
        if (text(m) === at) await opened;
      };
      return { got, seqs, handler, open };
    };
    const frames = () => s.seen.filter((x) => /^\d+$/.test(x)).length;
    const g1 = gate('s3');
    const g2 = gate('s8');
    const state = () => `handed ${[...g1.got, ...g2.got].join()}; ${s.state()}`;
    try {
      // s3 is being processed while s4..s6 are already on the client's socket.
      const sub = await s.B.subscribe(s.room.id, g1.handler);
      await until(() => g1.got.length === 3 && frames() >= 6, 10_000, 's1..s6 delivered', state);
      const stopped = sub.stop();
      g1.open();
      await stopped;
      assert.deepEqual(g1.got, ['s1', 's2', 's3']);

      await s.B.subscribe(s.room.id, g2.handler); // `from` omitted: where it stopped
      await until(() => g2.got.length >= 3, 10_000, 's4..s6', state);
      await sleep(300);
      assert.deepEqual(g2.got, ['s4', 's5', 's6']);
      assert.deepEqual(cursorsOf(s.room.id), [{ after: g1.seqs[2] }], 'stop moved the consumer');

      // close(): the same, with s8 in the handler and s9 in flight.
      for (let i = 7; i <= 9; i++) await s.A.publish(s.room.id, `s${i}`);
      await until(() => g2.got.length === 5 && frames() >= 9, 10_000, 's7..s9 delivered', state);
      const closed = s.B.close();
      g2.open();
      await closed;
      assert.deepEqual(g2.got, ['s4', 's5', 's6', 's7', 's8']);
    } finally {
      g1.open();
      g2.open();
    }
    const B2 = await bus(s.bob);
    const next: string[] = [];
    await B2.subscribe(s.room.id, (m) => void next.push(text(m)));
    await until(
      () => next.length >= 1,
      10_000,
      's9 after close()',
      () => next.join()
    );
    await sleep(500);
    assert.deepEqual(next, ['s9']);
    assert.deepEqual(cursorsOf(s.room.id).slice(1), [{ after: g2.seqs[4] }], 'close() moved it');
  });

  test('K-48: a control plane that does not answer at all (nothing listening; a listener that never answers) does not stop the connect of a bound identity', async () => {
    const id = await member('k48');
    const natsPub = natsUserKey(id).publicKey;
    let asked = 0;
    const silent = createServer((s) => {
      asked++;
      closers.push(() => void s.destroy());
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise((r) => silent.close(r)));
    const deaf = `http://127.0.0.1:${(silent.address() as { port: number }).port}`;
    const refused = `http://127.0.0.1:${await freePort()}`;
    for (const url of [refused, deaf]) {
      const t0 = Date.now();
      const b = await bus(id, { controlUrls: [url], timeoutMs: 1_500 });
      await natsOf(b).flush();
      const onServer = await serverConnectionsOf(d, natsPub);
      assert.ok(onServer.authorised >= 1, `${url}: ${JSON.stringify(onServer)}`);
      assert.ok(Date.now() - t0 < 15_000, `${url}: connected after ${Date.now() - t0} ms`);
      await b.close();
    }
    assert.ok(asked >= 1, 'the silent control plane was asked');
  });

  test("S-5: a user's seeds (Ed25519 seed, X25519 private key) appear nowhere in a session's NATS and HTTP traffic, in any encoding", async () => {
    const sally = generateIdentity();
    // Registered by sign_pub alone: the SDK binds its keys at connect (PUT /me/keys).
    await admin.addUser({ sign_pub: sally.signPubHex, handle: 's5-sally', role: 'member' });
    const bob = await member('s5-bob');
    const nats = await tap({ nats: true });
    const o = {
      natsServers: [`nats://127.0.0.1:${nats.port}`],
      controlUrls: [`http://127.0.0.1:${httpTap.port}`],
    };
    const S = await bus(sally, o);
    const B = await bus(bob);
    const eph = await S.createRoom({ subject: 'claims15c.s5.eph', policy: ENC });
    const per = await S.createRoom({ subject: 'claims15c.s5.per', policy: PERSISTED });
    const got: string[] = [];
    for (const r of [eph, per]) {
      await S.invite(r.id, bob.signPubHex, 'writer');
      await S.subscribe(r.id, (m) => void got.push(text(m)));
    }
    await B.subscribe(eph.id, (m) => void got.push(`bob:${text(m)}`));
    await S.publish(eph.id, 'sally, ephemeral');
    await S.publish(per.id, 'sally, persisted');
    await B.publish(per.id, 'bob, persisted');
    const ref = await S.putBlob(per.id, 'a blob of sally');
    assert.equal(new TextDecoder().decode(await S.getBlob(per.id, ref)), 'a blob of sally');
    await S.rekey(eph.id);
    await S.publish(eph.id, 'sally, epoch 1');
    await until(
      () => got.length >= 6,
      10_000,
      'the messages',
      () => got.join()
    );
    await S.removeMember(per.id, bob.signPubHex);
    await S.close();
    // A second session, already bound.
    const S2 = await bus(sally, o);
    await S2.listMyRooms();
    await S2.close();

    const traffic: Array<[string, Buffer]> = [
      ['NATS', nats.bytes()],
      ['HTTP', httpTap.bytes()], // sally's sessions are the only traffic through it
    ];
    // The capture sees what the session sent: its public keys, in the encodings used.
    const [, natsBytes] = traffic[0]!;
    const [, httpBytes] = traffic[1]!;
    assert.ok(natsBytes.includes(natsUserKey(sally).publicKey), 'the NATS key presented');
    assert.ok(httpBytes.includes(sally.signPubHex), 'requests signed by sally');
    assert.ok(httpBytes.includes('PUT /me/keys'), 'the binding sent');
    assert.ok(httpBytes.includes(sally.kexPubHex), 'the kex public key sent');
    assert.ok(natsBytes.length > 5_000 && httpBytes.length > 10_000, 'a whole session');
    const found: string[] = [];
    for (const [secret, value] of [
      ['Ed25519 seed', sally.signSeed],
      ['X25519 private key', sally.kexPriv],
    ] as const)
      for (const [enc, needle] of encodingsOf(value))
        for (const [where, bytes] of traffic)
          if (bytes.includes(needle)) found.push(`${secret} (${enc}) in ${where}`);
    assert.deepEqual(found, []);
  });

  test('S-64: a control plane that refuses the member the room (403, 404) makes it drop the room, but what it verified stays pinned: a later load of an older chain is ROLLBACK', async () => {
    const [alice, bob, carol] = [
      await member('s64-alice'),
      await member('s64-bob'),
      await member('s64-carol'),
    ];
    const A = await bus(alice);
    const bobCtl = new ControlClient({ urls: [d.httpUrl], identity: bob });
    closers.push(() => bobCtl.close());
    for (const status of [403, 404]) {
      const room = await A.createRoom({ subject: `claims15c.s64.${status}`, policy: ENC });
      await A.invite(room.id, bob.signPubHex, 'writer');
      await A.invite(room.id, carol.signPubHex, 'writer');
      const old = await bobCtl.statements(room.id); // the chain before carol left
      const oldKeys = await bobCtl.myKeys(room.id);
      assert.equal((await A.removeMember(room.id, carol.signPubHex)).epoch, 1);

      const B = await bus(bob, { controlUrls: [proxy.url], statementCheckMs: 0 });
      await B.subscribe(room.id, () => {});
      const verified = B.trustState().rooms[room.id];
      assert.ok(verified && verified.seq! > old.head!, JSON.stringify(verified));
      const removed: string[] = [];
      B.on('removed', (r) => removed.push(r));
      try {
        // The control plane refuses bob the room and announces his removal.
        proxy.intercept = (q) =>
          q.path.startsWith(`/rooms/${room.id}`)
            ? { status, body: { error: { code: 'NOT_A_MEMBER', message: 'not a member' } } }
            : undefined;
        app.publish(
          userEventsSubject(bob.signPubHex),
          new TextEncoder().encode(JSON.stringify({ type: 'member.removed', room: room.id }))
        );
        await app.flush();
        await waitFor(() => removed.includes(room.id), {
          timeoutMs: 10_000,
          what: `bob drops the room (${status})`,
        });

        // Then it serves the room as it was before carol's removal (owner-signed, older).
        proxy.intercept = (q) => {
          if (q.method !== 'GET' || q.path !== `/rooms/${room.id}/statements`) return undefined;
          const after = q.query.has('after') ? Number(q.query.get('after')) : -1;
          const statements = old.statements.filter((x) => x.seq > after);
          return { status: 200, body: { id: room.id, head: old.head, statements } };
        };
        proxy.lie = (q, body) =>
          q.path === `/rooms/${room.id}/keys`
            ? { ...body, epoch: 0, keys: oldKeys.keys }
            : q.method === 'GET' && q.path === `/rooms/${room.id}`
              ? { ...body, epoch: 0 }
              : undefined;
        const outcome = await B.subscribe(room.id, () => {}).then(
          () => 'loaded the older chain',
          (e: unknown) => (e instanceof TrustError ? e.code : String(e))
        );
        assert.equal(outcome, 'ROLLBACK', `after a ${status}`);
        // The same answers to a client that verified nothing: the older chain is all it sees.
        const fresh = await bus(bob, { controlUrls: [proxy.url], statementCheckMs: 0 });
        await fresh.subscribe(room.id, () => {});
        assert.equal(fresh.trustState().rooms[room.id]?.seq, old.head);
        await fresh.close();
      } finally {
        proxy.intercept = undefined;
        proxy.lie = undefined;
      }
      await B.close();
    }
  });

  test('B-60: nats-server\'s own log line on a refused connect, `authentication error - Nkey "U..."`, names the key', async () => {
    const stranger = generateIdentity();
    const revoked = await member('b60-revoked');
    await admin.revokeUser(revoked.signPubHex);
    for (const id of [stranger, revoked]) {
      const key = natsUserKey(id).publicKey;
      assert.match(key, /^U[A-Z2-7]{55}$/);
      await assert.rejects(natsAs(d, id), /Authorization Violation/i);
      await waitFor(
        () =>
          d.logs.some(
            (l) =>
              l.component === 'nats-server' &&
              l.msg.includes(`authentication error - Nkey "${key}"`)
          ),
        { timeoutMs: 5_000, what: `nats-server's line naming ${key}` }
      );
    }
  });

  // Last: it stops nats-server for a while.
  test('B-57: while nats-server does not answer, signed requests are 503 STORE_UNAVAILABLE and sealbus_http_requests_total{status="503"} moves by as many', async () => {
    const scrape = async () => {
      const r = await fetch(metricsUrl);
      assert.equal(r.status, 200);
      return parseMetrics(await r.text());
    };
    const me = () =>
      rawRequest(d.httpUrl, 'GET', '/me', signedHeaders(adminId, 'GET', `${d.httpUrl}/me`));
    assert.equal((await me()).status, 200);
    const series = { route: '/me', method: 'GET', status: '503' };
    const before = await scrape();
    process.kill(d.natsPid, 'SIGSTOP');
    const statuses: string[] = [];
    let during: Sample[];
    try {
      // Each waits out the store's timeout (seconds): three at a time.
      const deadline = Date.now() + 45_000;
      while (statuses.filter((x) => x.startsWith('503')).length < 2 && Date.now() < deadline) {
        const batch = await Promise.all(
          [me(), me(), me()].map((p) => p.catch((e: Error) => ({ status: 0, json: e.message })))
        );
        for (const r of batch)
          statuses.push(
            `${r.status} ${(r.json as { error?: { code?: string } })?.error?.code ?? ''}`.trim()
          );
      }
      during = await scrape();
    } finally {
      process.kill(d.natsPid, 'SIGCONT');
    }
    const refused = statuses.filter((x) => x.startsWith('503'));
    assert.ok(refused.length >= 2, statuses.join(', '));
    assert.deepEqual(new Set(refused), new Set(['503 STORE_UNAVAILABLE']), statuses.join(', '));
    const moved = (labels: Record<string, string>) =>
      sum(during, 'sealbus_http_requests_total', labels) -
      sum(before, 'sealbus_http_requests_total', labels);
    assert.equal(moved(series), refused.length);
    assert.ok(moved({ status: '503' }) >= refused.length);
    await waitFor(async () => (await me()).status === 200, {
      timeoutMs: 45_000,
      intervalMs: 500,
      what: 'the store back',
    });
  });
});

describe('claims without a test (15c): a node of its own', { timeout: 180_000 }, () => {
  let dir: TempDir;
  before(async () => {
    dir = await tempDir('sealbus-claims15c-');
  });
  after(async () => {
    await dir?.remove();
  });

  const newKey = async (path: string) => {
    await writeFile(path, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
    return path;
  };

  test('B-37: rotating the at-rest key by RUNBOOK §6 (backup under the old key, restore into a recreated dir under the new one, swap the key files, serve): everything readable, the old key refused', async () => {
    const etc = join(dir.path, 'etc');
    await mkdir(etc, { mode: 0o700 });
    const key = await newKey(join(etc, 'at-rest.key'));
    const K = ['--archive-key-file', await newKey(join(etc, 'backup.key'))];
    const data = join(dir.path, 'sealbus');
    const archives = join(dir.path, 'sealbus-backups');
    await mkdir(archives, { mode: 0o700 });
    const healthz = async (n: TestDaemon) =>
      (await (await fetch(`${n.httpUrl}/healthz`)).json()) as { at_rest?: boolean };

    // A node encrypted under the old key, with a user, a persisted room and its history.
    let n = await startDaemon({ dataDir: data, args: ['--at-rest-key-file', key] });
    const alice = generateIdentity();
    const bob = generateIdentity();
    let roomId: string;
    try {
      assert.equal((await healthz(n)).at_rest, true);
      const ctl = new ControlClient({ urls: [n.httpUrl], identity: await adminOf(n) });
      for (const [id, handle] of [
        [alice, 'b37-alice'],
        [bob, 'b37-bob'],
      ] as const)
        await ctl.addUser({ public: encodePublicIdentity(id), handle, role: 'member' });
      ctl.close();
      const A = await Sealbus.connect({
        natsServers: [n.natsUrl],
        controlUrls: [n.httpUrl],
        identity: alice,
      });
      const room = await A.createRoom({ subject: 'claims15c.b37', policy: PERSISTED });
      roomId = room.id;
      await A.invite(room.id, bob.signPubHex, 'reader');
      await A.publish(room.id, 'before the rotation');
      await A.close();

      // 1. the new key
      await newKey(join(etc, 'at-rest.key.new'));
      // 2. back up (live) with the old key in place, encrypted with $K
      const archive = join(archives, 'sealbus-rotation.sbk');
      const b = await runMembershipd(['backup', '--data', data, '--out', archive, ...K]);
      assert.equal(b.code, 0, b.stderr);
    } finally {
      // 3. stop the service
      await n.stop();
    }
    // 3. move the data directory aside and recreate it
    await rename(data, `${data}.old`);
    await mkdir(data, { mode: 0o700 });
    // 4. restore with the new key; copy the identity files back
    const r = await runMembershipd([
      'restore',
      '--data',
      data,
      '--in',
      join(archives, 'sealbus-rotation.sbk'),
      ...K,
      '--at-rest-key-file',
      join(etc, 'at-rest.key.new'),
    ]);
    assert.equal(r.code, 0, r.stderr);
    for (const f of ['admin.id', 'internal.id', 'callout.key']) {
      await copyFile(join(`${data}.old`, f), join(data, f));
      await chmod(join(data, f), 0o600);
    }
    // 5. swap the key files
    await rename(key, join(etc, 'at-rest.key.old'));
    await rename(join(etc, 'at-rest.key.new'), key);
    // The old key no longer opens the store (it was rewritten under the new one).
    const [hp, np] = (await freePorts(2)) as [number, number];
    const refused = await runMembershipd([
      'serve',
      '--data',
      data,
      '--http',
      `127.0.0.1:${hp}`,
      '--nats-port',
      String(np),
      '--at-rest-key-file',
      join(etc, 'at-rest.key.old'),
    ]);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /wrong at-rest key/);
    // 5. start the service with the same flags as before, check /healthz
    n = await startDaemon({ dataDir: data, args: ['--at-rest-key-file', key] });
    try {
      assert.equal((await healthz(n)).at_rest, true);
      const ctl = new ControlClient({ urls: [n.httpUrl], identity: await adminOf(n) });
      const handles = (await ctl.listUsers()).map((u) => u.handle);
      ctl.close();
      assert.ok(handles.includes('b37-alice') && handles.includes('b37-bob'), handles.join());
      const B = await Sealbus.connect({
        natsServers: [n.natsUrl],
        controlUrls: [n.httpUrl],
        identity: bob,
      });
      try {
        const got: string[] = [];
        await B.subscribe(roomId, (m) => void got.push(text(m)));
        await waitFor(() => got.length >= 1, { timeoutMs: 10_000, what: 'the history' });
        assert.deepEqual(got, ['before the rotation']);
      } finally {
        await B.close();
      }
    } finally {
      await n.dispose();
    }
    // 6. the old key is kept, as are the old data dir and the archive.
    await stat(join(etc, 'at-rest.key.old'));
  });

  test('D-12: admin.id deleted from a node after bring-up: the node starts normally, creates no new admin, and the admin (its file kept elsewhere) still administers', async () => {
    const data = join(dir.path, 'd12');
    const first = await startDaemon({ dataDir: data });
    const kept = join(dir.path, 'd12-admin.id');
    let admins: string[];
    try {
      await copyFile(join(data, 'admin.id'), kept);
      const admin = new ControlClient({
        urls: [first.httpUrl],
        identity: await loadIdentity(kept),
      });
      admins = (await admin.listUsers()).filter((u) => u.role === 'admin').map((u) => u.sign_pub);
      assert.equal(admins.length, 1);
    } finally {
      await first.stop();
    }
    await rename(join(data, 'admin.id'), join(dir.path, 'd12-moved'));
    const again = await startDaemon({ dataDir: data });
    try {
      await assert.rejects(stat(join(data, 'admin.id')), /ENOENT/, 'no admin.id made again');
      assert.ok(
        again.logs.some((l) => l.msg === 'store already has an active admin; no admin #0 created')
      );
      const admin = new ControlClient({
        urls: [again.httpUrl],
        identity: await loadIdentity(kept),
      });
      const who = generateIdentity();
      await admin.addUser({ public: encodePublicIdentity(who), handle: 'd12', role: 'member' });
      const users = await admin.listUsers();
      assert.deepEqual(
        users.filter((u) => u.role === 'admin').map((u) => u.sign_pub),
        admins,
        'the same single admin'
      );
      assert.ok(users.some((u) => u.sign_pub === who.signPubHex));
    } finally {
      await again.stop();
    }
  });

  test('D-24: a lone cluster node whose --bootstrap-budget runs out exits non-zero (the unit restarts it: Restart=on-failure) and leaves no nats-server', async () => {
    const secret = join(dir.path, 'route.secret');
    await writeFile(secret, randomBytes(24).toString('base64url') + '\n', { mode: 0o600 });
    // Its two peers never come: no quorum, the store never becomes ready.
    const [http, nats, cport, p2, p3] = (await freePorts(5)) as [number, ...number[]];
    const t0 = Date.now();
    const r = await runMembershipd(
      [
        'serve',
        '--data',
        join(dir.path, 'lonely'),
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
        '3s',
      ],
      { timeoutMs: 60_000 }
    );
    const took = Date.now() - t0;
    const out = r.stdout + r.stderr;
    assert.equal(r.signal, null);
    assert.notEqual(r.code, 0, out.slice(-2_000));
    assert.equal(r.code, 1, 'START_FAILED');
    assert.match(out, /store not ready yet/);
    assert.match(out, /did not answer within the bootstrap budget/);
    assert.ok(took >= 3_000, `exited after ${took} ms, before its budget`);
    const natsPid = Number(/"nats_pid":(\d+)/.exec(out)?.[1]);
    assert.ok(natsPid > 0, 'nats-server was started');
    await waitFor(() => !pidAlive(natsPid), { timeoutMs: 5_000, what: 'nats-server gone' });
    // systemd restarts a unit that exits non-zero under Restart=on-failure.
    const unit = await readFile(
      join(REPO, 'deploy', 'cluster', 'sealbus-membershipd.service'),
      'utf8'
    );
    assert.match(unit, /^Restart=on-failure$/m);
  });
});
