// Attack replays from the cold review of the issue-10 work: a removed
// member, an expired member and a removed writer going after a persisted
// room's history and stream; a member choosing its NATS key to be a sign
// key; a member flooding the audit log with refusals. Each reproduced
// against main before its fix.
import { signedCtl } from '../author.js';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Msg, NatsConnection } from 'nats';
import {
  FrameSealer,
  generateIdentity,
  signKeyBinding,
  toHex,
  type Identity,
} from '@sealbus/crypto';
import { ControlClient } from '@sealbus/client';
import {
  appendResultSubject,
  memberDeliverSubject,
  memberDurableName,
  roomStreamName,
  userInboxPrefix,
} from '@sealbus/protocol';
import type { MembershipStore } from '@sealbus/store';
import { startDaemon, waitFor, type TestDaemon } from '@sealbus/testing';
import {
  adminOf,
  appendAnswers,
  appendRaw,
  busOf,
  enrol,
  natsAs,
  nextPermissionError,
  nodeStore,
} from '../helpers.js';
import { sendRaw, signRaw } from './attack.js';

const enc = (s: string) => new TextEncoder().encode(s);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rssMiB = (pid: number) =>
  Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024;

describe('cold review: removed, expired and hostile members', { timeout: 300_000 }, () => {
  let d: TestDaemon;
  let admin: ControlClient;
  let store: MembershipStore;
  let spyApp: NatsConnection;
  const closers: Array<() => Promise<unknown>> = [];

  const user = async (handle: string): Promise<Identity> => (await enrol(admin, d, handle)).id;
  const bus = (id: Identity) => busOf(d, id, closers);
  const raw = async (id: Identity) => {
    const nc = await natsAs(d, id, { maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    closers.push(() => nc.close());
    return nc;
  };
  const consumerExists = async (roomId: string, signPub: string) => {
    const jsm = await spyApp.jetstreamManager();
    try {
      await jsm.consumers.info(roomStreamName(roomId), memberDurableName(signPub));
      return true;
    } catch {
      return false;
    }
  };
  const streamMessages = async (roomId: string) =>
    (await (await spyApp.jetstreamManager()).streams.info(roomStreamName(roomId))).state.messages;

  before(async () => {
    d = await startDaemon();
    admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    const s = await nodeStore(d);
    store = s.store;
    spyApp = s.app;
    closers.push(
      () => s.nc.close(),
      () => s.app.close()
    );
  });
  after(async () => {
    for (const c of closers.reverse()) await c().catch(() => {});
    admin?.close();
    await d?.dispose();
  });

  test('no member may subscribe to its whole inbox prefix (it would cover room deliveries)', async () => {
    const m = await user('prefix-m');
    const nc = await raw(m);
    // Plain inboxes and nats.js request inboxes are the member's.
    const quiet = nextPermissionError(nc, 1_000);
    nc.subscribe(`${userInboxPrefix(m.signPubHex)}.r.x`);
    nc.subscribe(`${userInboxPrefix(m.signPubHex)}.r.x.*`);
    await nc.flush();
    await assert.rejects(quiet, /no permissions violation/);
    const denied = nextPermissionError(nc);
    nc.subscribe(`${userInboxPrefix(m.signPubHex)}.>`);
    assert.match(await denied, /PERMISSIONS_VIOLATION/);
  });

  test('a removed member reads nothing more, even when its consumer is recreated behind the removal', async () => {
    const [o, m] = [await user('rm-owner'), await user('rm-member')];
    const O = await bus(o);
    const room = await O.createRoom({
      subject: 'rm.log',
      policy: { encrypt: false, persist: true, sign: false },
    });
    await O.invite(room.id, m.signPubHex, 'reader');
    await O.publish(room.id, enc('before'));
    await O.removeMember(room.id, m.signPubHex);
    assert.equal(await consumerExists(room.id, m.signPubHex), false);

    // The cursor race: a reset whose membership check passed before the
    // removal creates the consumer after it. The store takes it back.
    await assert.rejects(
      store.rooms.resetCursor((await store.rooms.get(room.id))!, m.signPubHex, 'start'),
      {
        code: 'NOT_FOUND',
      }
    );
    assert.equal(await consumerExists(room.id, m.signPubHex), false);

    // And were a consumer left over, its subject is not the removed member's to read.
    const nc = await raw(m);
    const denied = nextPermissionError(nc);
    const got: Msg[] = [];
    nc.subscribe(memberDeliverSubject(m.signPubHex, room.id), {
      callback: (e, msg) => void (!e && got.push(msg)),
    });
    assert.match(await denied, /PERMISSIONS_VIOLATION/);
    for (const wide of [
      `${userInboxPrefix(m.signPubHex)}.>`,
      `${userInboxPrefix(m.signPubHex)}.room.*`,
    ])
      nc.subscribe(wide, { callback: (e, msg) => void (!e && got.push(msg)) });
    await nc.flush();
    await O.publish(room.id, enc('after'));
    await sleep(500);
    assert.equal(got.length, 0);
  });

  test('an expired member reads nothing published after its membership ended', async () => {
    const [o, m] = [await user('exp-owner'), await user('exp-member')];
    const O = await bus(o);
    const room = await O.createRoom({
      subject: 'exp.log',
      policy: { encrypt: false, persist: true, sign: false },
    });
    const ends = Date.now() + 4_000;
    await O.invite(room.id, m.signPubHex, 'reader', { expiresAt: new Date(ends).toISOString() });
    await O.publish(room.id, enc('in time'));
    // While the membership holds, its deliveries arrive on a raw connection.
    const before = await raw(m);
    const early: string[] = [];
    before.subscribe(memberDeliverSubject(m.signPubHex, room.id), {
      callback: (e, msg) => {
        if (!e && msg.data.length) early.push(msg.subject);
      },
    });
    await before.flush();
    await waitFor(() => early.length >= 1, {
      what: 'a delivery while a member',
      timeoutMs: 10_000,
    });

    await sleep(Math.max(0, ends - Date.now()) + 1_200);
    // The consumer outlives the membership (nothing sweeps it); its
    // deliveries go on, to a subject the former member may not hold.
    assert.equal(await consumerExists(room.id, m.signPubHex), true);
    const after = await raw(m);
    const denied = nextPermissionError(after);
    const late: Msg[] = [];
    after.subscribe(memberDeliverSubject(m.signPubHex, room.id), {
      callback: (e, msg) => void (!e && late.push(msg)),
    });
    assert.match(await denied, /PERMISSIONS_VIOLATION/);
    await O.publish(room.id, enc('after the end'));
    await sleep(500);
    assert.equal(late.filter((x) => x.data.length > 0).length, 0);
  });

  test('a writer removed a moment ago cannot append, not even before the change reaches the data plane', async () => {
    const [o, w] = [await user('rw-owner'), await user('rw-writer')];
    const O = await bus(o);
    const ownerCtl = new ControlClient({ urls: [d.httpUrl], identity: o });
    closers.push(async () => ownerCtl.close());
    const room = await O.createRoom({
      subject: 'rw.log',
      policy: { encrypt: false, persist: true, sign: false },
    });
    await O.invite(room.id, w.signPubHex, 'writer');
    const nc = await raw(w);
    const answers = await appendAnswers(nc, w.signPubHex);
    const append = (n: number) => {
      const frame = new FrameSealer(room.id, w.signSeed).seal(enc(`w ${n}`), {
        epoch: 0,
        key: null,
        sign: false,
      });
      appendRaw(nc, room.id, frame);
    };
    // A first append: the daemon now holds the writer's grant.
    append(0);
    await waitFor(() => answers.length === 1, { what: 'first append answered' });
    assert.equal(answers[0]!.ok, true);
    // Removed; appends fired the instant the removal is answered.
    await signedCtl(ownerCtl, o).removeMember(room.id, w.signPubHex);
    for (let i = 1; i <= 5; i++) append(i);
    await nc.flush().catch(() => {});
    await sleep(1_500);
    assert.equal(await streamMessages(room.id), 1, 'an append after the removal was stored');
    assert.ok(answers.slice(1).every((a) => !a.ok));
  });

  test('a writer flooding the append service gets a bounded backlog, and others keep appending', async () => {
    const [o, w] = [await user('fl-owner'), await user('fl-writer')];
    const O = await bus(o);
    const room = await O.createRoom({
      subject: 'fl.log',
      policy: { encrypt: false, persist: true, sign: false },
    });
    await O.invite(room.id, w.signPubHex, 'writer');
    const nc = await raw(w);
    let answered = 0;
    nc.subscribe(appendResultSubject(w.signPubHex, '*'), { callback: () => void answered++ });
    await nc.flush();
    const frame = new FrameSealer(room.id, w.signSeed).seal(enc('x'.repeat(512)), {
      epoch: 0,
      key: null,
      sign: false,
    });
    const settle = async () => {
      let last = -1;
      await waitFor(
        async () => {
          const seen = answered;
          const settled = seen === last;
          last = seen;
          return settled;
        },
        { what: 'the flood to drain', timeoutMs: 60_000, intervalMs: 1_000 }
      );
    };
    // Bursts far over the per-sender bound, until one outruns the daemon
    // (on a quiet machine a single burst of a few thousand can be stored as
    // fast as it arrives, which proves nothing about the bound). Bounded:
    // at most 5 bursts.
    const BURST = 4_000;
    let sent = 0;
    for (let round = 0; round < 5 && answered === sent; round++) {
      for (let i = 0; i < BURST; i++) appendRaw(nc, room.id, frame);
      sent += BURST;
      await nc.flush();
      if (round === 0) {
        // The owner's own append goes through while the flood drains.
        await O.publish(room.id, enc('owner, during the flood'));
      }
      await settle();
    }
    // What was answered was stored; the rest was dropped unanswered.
    assert.equal(await streamMessages(room.id), answered + 1);
    assert.ok(answered < sent, `all ${sent} queued: the backlog is not bounded`);
  });

  test('writers flooding near-max frames: the daemon holds a bounded backlog in bytes', async () => {
    const o = await user('mem-owner');
    const O = await bus(o);
    const writers: Array<{ nc: NatsConnection; room: string; frame: Uint8Array }> = [];
    for (let i = 0; i < 4; i++) {
      const w = await user(`mem-w${i}`);
      const room = await O.createRoom({
        subject: `mem${i}.log`,
        policy: { encrypt: false, persist: true, sign: false },
      });
      await O.invite(room.id, w.signPubHex, 'writer');
      const frame = new FrameSealer(room.id, w.signSeed).seal(new Uint8Array(1024 * 1024 - 4096), {
        epoch: 0,
        key: null,
        sign: false,
      });
      writers.push({ nc: await raw(w), room: room.id, frame });
    }
    const pid = d.proc.pid!;
    const base = rssMiB(pid);
    let peak = base;
    const timer = setInterval(() => (peak = Math.max(peak, rssMiB(pid))), 25);
    try {
      await Promise.all(
        writers.map(async ({ nc, room, frame }) => {
          for (let i = 0; i < 200; i++) {
            appendRaw(nc, room, frame);
            if (i % 32 === 31) await nc.flush();
          }
          await nc.flush();
        })
      );
      await sleep(4_000);
    } finally {
      clearInterval(timer);
    }
    // 800 MiB sent; before the byte bound the daemon grew by ~350 MiB on this.
    assert.ok(peak - base < 200, `daemon RSS grew by ${(peak - base).toFixed(0)} MiB`);
  });

  test('a frame the writer may send but the stream cannot take is refused at once, not retried forever', async () => {
    const [o, w] = [await user('big-owner'), await user('big-writer')];
    const O = await bus(o);
    const room = await O.createRoom({
      subject: 'big.log',
      policy: { encrypt: false, persist: true, sign: false },
    });
    await O.invite(room.id, w.signPubHex, 'writer');
    const nc = await raw(w);
    const answers = await appendAnswers(nc, w.signPubHex);
    const sealer = new FrameSealer(room.id, w.signSeed);
    const overhead =
      sealer.seal(new Uint8Array(10), { epoch: 0, key: null, sign: false }).length - 10;
    // Fits the writer's own publish (its header is ~70 bytes), not the store's.
    const frame = sealer.seal(new Uint8Array(nc.info!.max_payload - 80 - overhead), {
      epoch: 0,
      key: null,
      sign: false,
    });
    for (let i = 0; i < 3; i++) {
      appendRaw(nc, room.id, frame);
    }
    await nc.flush();
    await waitFor(() => answers.length === 3, { what: 'three answers', timeoutMs: 10_000 });
    assert.deepEqual(
      answers.map((a) => [a.ok, a.code]),
      Array(3).fill([false, 'MALFORMED'])
    );
  });

  test('a NATS key claim racing a registration of the same key as a sign key: never both', async () => {
    const self = new URL(d.httpUrl).host;
    let both = 0;
    for (let i = 0; i < 12; i++) {
      const fresh = generateIdentity();
      await admin.addUser({ sign_pub: fresh.signPubHex, handle: `race-f${i}`, role: 'member' });
      const x = generateIdentity();
      const binding = signKeyBinding({ ...fresh, natsPub: x.signPub });
      const body = JSON.stringify({
        kex_pub: fresh.kexPubHex,
        nats_pub: x.signPubHex,
        binding: toHex(binding),
      });
      const [claim, add] = await Promise.allSettled([
        sendRaw(d.httpUrl, 'PUT', '/me/keys', signRaw(fresh, 'PUT', self, '/me/keys', body), body),
        admin.addUser({ sign_pub: x.signPubHex, handle: `race-x${i}`, role: 'member' }),
      ]);
      if (claim.status === 'fulfilled' && claim.value.status === 200 && add.status === 'fulfilled')
        both++;
      // Whatever won, the callout treats a registered sign key as one.
      if (add.status === 'fulfilled')
        assert.equal((await store.userByNatsKey(x.signPubHex)).kind, 'sign_key');
    }
    assert.equal(both, 0, `${both} of 12 races left a key both a sign key and a NATS key`);
  });

  test("a member cannot make its NATS key a sign key: its own, or anyone's", async () => {
    const [m, other] = [await user('keys-m'), await user('keys-other')];
    // Unbound registrations, completed by the user itself with PUT /me/keys.
    const fresh = generateIdentity();
    await admin.addUser({ sign_pub: fresh.signPubHex, handle: 'keys-fresh', role: 'member' });
    const self = new URL(d.httpUrl).host;
    const putKeys = (natsPub: Uint8Array) => {
      const binding = signKeyBinding({ ...fresh, natsPub });
      const body = JSON.stringify({
        kex_pub: fresh.kexPubHex,
        nats_pub: toHex(natsPub),
        binding: toHex(binding),
      });
      return sendRaw(
        d.httpUrl,
        'PUT',
        '/me/keys',
        signRaw(fresh, 'PUT', self, '/me/keys', body),
        body
      );
    };
    // Its own sign key as its NATS key: refused.
    const own = await putKeys(fresh.signPub);
    assert.deepEqual([own.status, own.code], [400, 'INVALID'], JSON.stringify(own.json));
    // Another user's sign key: refused (binding valid, claim not).
    const theirs = await putKeys(other.signPub);
    assert.deepEqual([theirs.status, theirs.code], [409, 'CONFLICT'], JSON.stringify(theirs.json));
    assert.equal((await store.getUser(fresh.signPubHex))!.bound, false);
    // Registering a sign key that is someone's NATS key: refused too.
    const mRec = (await store.getUser(m.signPubHex))!;
    await assert.rejects(
      admin.addUser({ sign_pub: mRec.nats_pub!, handle: 'keys-clash', role: 'member' }),
      { status: 409 }
    );
    // And the callout never admits a registered sign key, whatever the index says.
    const found = await store.userByNatsKey(m.signPubHex);
    assert.equal(found.kind, 'sign_key');
  });

  test('a member flooding refused requests cannot grow the audit log without bound', async () => {
    const { id: m } = await enrol(admin, d, 'flood-m');
    const self = new URL(d.httpUrl).host;
    const before = (await store.audit.tail(100_000)).length;
    const N = 120;
    for (let i = 0; i < N; i++) {
      const id = generateIdentity();
      const body = JSON.stringify({ sign_pub: id.signPubHex, handle: `f${i}`, role: 'admin' });
      const r = await sendRaw(
        d.httpUrl,
        'POST',
        '/users',
        signRaw(m, 'POST', self, '/users', body),
        body
      );
      assert.deepEqual([r.status, r.code], [403, 'FORBIDDEN']);
    }
    const added = (await store.audit.tail(100_000)).slice(before);
    const denials = added.filter((r) => r.actor === m.signPubHex && r.outcome === 'denied');
    assert.ok(denials.length >= 1, 'refusals are on the record');
    assert.ok(denials.length <= 25, `${denials.length} of ${N} refusals written`);
    // Changes are never budgeted: the admin's next one is on the record.
    const x = generateIdentity();
    await admin.addUser({ sign_pub: x.signPubHex, handle: 'after-flood', role: 'member' });
    const recs = (await store.audit.tail(100_000)).filter((r) => r.target === x.signPubHex);
    assert.deepEqual(
      recs.map((r) => [r.action, r.outcome]),
      [
        ['user.add', 'intent'],
        ['user.add', 'ok'],
      ]
    );
  });
});
