// New permissions without loss: a client renews its NATS connection
// make-before-break whenever it starts using a room its connection predates,
// and its other rooms keep every message meanwhile.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { encodePublicIdentity, generateIdentity, loadIdentity } from '@sealbus/crypto';
import { startDaemon, waitFor, type TestDaemon } from '@sealbus/testing';
import { ControlClient } from './control.js';
import { natsOf, renewalsOf } from './internal.js';
import type { PossibleLoss, RejectedFrame, RoomMessage } from './roomstate.js';
import { SealbusError } from './errors.js';
import { Sealbus } from './sealbus.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('connection renewal is make-before-break', { timeout: 180_000 }, () => {
  let d: TestDaemon;
  let admin: ControlClient;
  const closers: Array<() => Promise<unknown> | void> = [];
  const user = async (handle: string) => {
    const id = generateIdentity();
    await admin.addUser({ public: encodePublicIdentity(id), handle, role: 'member' });
    return id;
  };
  const bus = async (id: ReturnType<typeof generateIdentity>) => {
    const b = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity: id,
    });
    closers.push(() => b.close());
    return b;
  };

  before(async () => {
    d = await startDaemon();
    admin = new ControlClient({
      urls: [d.httpUrl],
      identity: await loadIdentity(join(d.dataDir, 'admin.id')),
    });
  });
  after(async () => {
    for (const c of closers.reverse()) await Promise.resolve(c()).catch(() => {});
    admin?.close();
    await d?.dispose();
  });

  test('300 messages at ~150/s while the receiver creates and uses five rooms: 300 received, no loss', async () => {
    const [alice, bob] = [await user('renew-alice'), await user('renew-bob')];
    const A = await bus(alice);
    const B = await bus(bob);
    const losses: PossibleLoss[] = [];
    const rejected: RejectedFrame[] = [];
    const refreshes: string[] = [];
    B.on('loss', (l) => losses.push(l));
    B.on('rejected', (r) => rejected.push(r));
    B.on('refresh', (why) => refreshes.push(why));

    // The room the traffic runs in (ephemeral: what is missed is gone), and a
    // persisted one read at the same time.
    const live = await A.createRoom({
      subject: 'renew.live',
      policy: { encrypt: true, persist: false, sign: true },
    });
    const kept = await A.createRoom({
      subject: 'renew.kept',
      policy: { encrypt: true, persist: true, sign: true },
    });
    await A.invite(live.id, bob.signPubHex, 'reader');
    await A.invite(kept.id, bob.signPubHex, 'reader');
    const got = new Map<string, number>();
    const keptGot: string[] = [];
    const count = (m: RoomMessage) => void got.set(m.string(), (got.get(m.string()) ?? 0) + 1);
    await B.subscribe(live.id, count);
    await B.subscribe(kept.id, (m) => void keptGot.push(m.string()), { from: 'new' });
    const renewalsBefore = renewalsOf(B);
    const refreshesBefore = refreshes.length;
    const firstConnection = natsOf(B);

    const N = 300;
    const K = 60;
    const sending = (async () => {
      const t0 = Date.now();
      for (let i = 0; i < N; i++) {
        // ~150/s, paced against the clock so a slow moment does not bunch up.
        const due = t0 + (i * 1000) / 150;
        if (due > Date.now()) await sleep(due - Date.now());
        await A.publish(live.id, `m${i}`);
        if (i % 5 === 0 && i / 5 < K) await A.publish(kept.id, `k${i / 5}`);
      }
      return Date.now() - t0;
    })();

    // Meanwhile bob creates five rooms and uses each (subscribe, publish,
    // receive his own message): every first use renews his connection.
    const own: string[] = [];
    const using = (async () => {
      for (let r = 0; r < 5; r++) {
        await sleep(250);
        const room = await B.createRoom({
          subject: `renew.own${r}`,
          policy: { encrypt: true, persist: r % 2 === 1, sign: true },
        });
        const sub = await B.subscribe(room.id, (m) => void own.push(m.string()));
        await B.publish(room.id, `own${r}`);
        await waitFor(() => own.includes(`own${r}`), { what: `own message in room ${r}` });
        await sub.stop();
      }
    })();

    const [sendMs] = await Promise.all([sending, using]);
    await waitFor(() => got.size >= N && keptGot.length >= K, {
      what: 'every message',
      timeoutMs: 15_000,
    }).catch(() => {});
    await sleep(300); // any late duplicate would show now
    const renewals = renewalsOf(B) - renewalsBefore;
    console.log(
      `renewal: ${got.size}/${N} live and ${keptGot.length}/${K} persisted received in ${sendMs} ms ` +
        `across ${renewals} renewals; loss events ${losses.length}, rejected ${rejected.length}`
    );

    assert.ok(renewals >= 5, `the connection was renewed for each new room (${renewals})`);
    assert.equal(refreshes.length - refreshesBefore, renewals);
    assert.notEqual(natsOf(B), firstConnection, 'the client is on a new connection');
    assert.equal(firstConnection.isClosed(), true, 'the old connection was let go');
    assert.deepEqual(
      [...Array(N).keys()].filter((i) => !got.has(`m${i}`)),
      [],
      'no live message missed'
    );
    assert.deepEqual(
      [...got].filter(([, n]) => n !== 1),
      [],
      'each live message delivered once'
    );
    assert.deepEqual(
      keptGot,
      [...Array(K).keys()].map((i) => `k${i}`),
      'persisted: each once, in order'
    );
    assert.deepEqual(losses, []);
    assert.deepEqual(rejected, []);
    assert.deepEqual(own, ['own0', 'own1', 'own2', 'own3', 'own4']);
  });

  test('a renewal while publishing: a sender renewing mid-stream keeps its frames in order', async () => {
    const [carol, dave] = [await user('renew-carol'), await user('renew-dave')];
    const C = await bus(carol);
    const D = await bus(dave);
    const losses: PossibleLoss[] = [];
    const rejected: RejectedFrame[] = [];
    D.on('loss', (l) => losses.push(l));
    D.on('rejected', (r) => rejected.push(r));
    const room = await C.createRoom({
      subject: 'renew.order',
      policy: { encrypt: true, persist: false, sign: true },
    });
    await C.invite(room.id, dave.signPubHex, 'reader');
    const got: string[] = [];
    await D.subscribe(room.id, (m) => void got.push(m.string()));
    const N = 400;
    const renewing = (async () => {
      for (let i = 0; i < 4; i++) {
        await sleep(40);
        await C.refreshConnection('test');
      }
    })();
    for (let i = 0; i < N; i++) {
      await C.publish(room.id, `c${i}`);
      if (i % 20 === 0) await sleep(5);
    }
    await renewing;
    await waitFor(() => got.length >= N, { what: 'every frame', timeoutMs: 10_000 }).catch(
      () => {}
    );
    assert.ok(renewalsOf(C) >= 4);
    assert.deepEqual(
      got,
      [...Array(N).keys()].map((i) => `c${i}`)
    );
    assert.deepEqual(losses, []);
    assert.deepEqual(rejected, []);
  });

  test("a subscription made while the room's last one stops still gets the room", async () => {
    const [alice, bob] = [await user('r2-alice'), await user('r2-bob')];
    const A = await bus(alice);
    const B = await bus(bob);
    const room = await A.createRoom({
      subject: 'r2.room',
      policy: { encrypt: true, persist: false, sign: true },
    });
    await A.invite(room.id, bob.signPubHex, 'reader');
    const first = await B.subscribe(room.id, () => {});
    const got: string[] = [];
    const [second] = await Promise.all([
      B.subscribe(room.id, (m) => void got.push(m.string())),
      first.stop(),
    ]);
    await A.publish(room.id, 'after the swap');
    await waitFor(() => got.length === 1, { what: 'the message' }).catch(() => {});
    await second.stop();
    assert.deepEqual(got, ['after the swap']);
  });

  test('after close(), nothing opens a connection again: calls are CLOSED', async () => {
    const [alice, bob] = [await user('r1-alice'), await user('r1-bob')];
    const A = await bus(alice);
    const B = await bus(bob);
    const room = await A.createRoom({
      subject: 'r1.room',
      policy: { encrypt: true, persist: false, sign: true },
    });
    await A.invite(room.id, bob.signPubHex, 'writer');
    await sleep(300); // member.added reached B: its next use of the room would renew
    await B.close();
    await assert.rejects(
      B.publish(room.id, 'late'),
      (e: unknown) => e instanceof SealbusError && e.code === 'CLOSED'
    );
    await assert.rejects(
      B.refreshConnection('late'),
      (e: unknown) => e instanceof SealbusError && e.code === 'CLOSED'
    );
    assert.equal(natsOf(B).isClosed(), true, 'no connection was opened after close()');
  });
});
