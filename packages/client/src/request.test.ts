// Encrypted request/reply inside a room: `bus.request` and `sub.respond`,
// against a real daemon, with the members who try to misuse it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { headers, type Msg } from 'nats';
import {
  FrameSealer,
  encodePublicIdentity,
  generateIdentity,
  loadIdentity,
  type Identity,
} from '@sealbus/crypto';
import { roomAnswerPrefix, roomAnswerSubject, roomAnswersInbox } from '@sealbus/protocol';
import { startDaemon, waitFor, type TestDaemon } from '@sealbus/testing';
import { ControlClient } from './control.js';
import { SealbusError } from './errors.js';
import { natsOf, openRoomKey } from './internal.js';
import type { RejectedFrame, RoomMessage } from './roomstate.js';
import { Sealbus } from './sealbus.js';

const ENC = { encrypt: true, persist: false, sign: true };
const is = (code: string) => (e: unknown) => e instanceof SealbusError && e.code === code;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('request/reply in a room', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let admin: ControlClient;
  const closers: Array<() => Promise<unknown> | void> = [];
  const user = async (handle: string) => {
    const id = generateIdentity();
    await admin.addUser({ public: encodePublicIdentity(id), handle, role: 'member' });
    return id;
  };
  const bus = async (id: Identity) => {
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

  test('a writer answers; the answer reaches only the requester; others see the request, not the answer', async () => {
    const [alice, bob, carol, dave] = [
      await user('rq-alice'),
      await user('rq-bob'),
      await user('rq-carol'),
      await user('rq-dave'),
    ];
    const [A, B, C, D] = [await bus(alice), await bus(bob), await bus(carol), await bus(dave)];
    const room = await A.createRoom({ subject: 'rq.room', policy: ENC });
    await A.invite(room.id, bob.signPubHex, 'writer');
    await A.invite(room.id, carol.signPubHex, 'writer');
    await A.invite(room.id, dave.signPubHex, 'reader');

    const sub = await B.subscribe(room.id, async (m) => {
      if (m.expectsReply) await sub.respond(m, `pong: ${m.string()}`);
    });
    // carol sees the room (the request) and watches the raw subject for any answer.
    const carolSaw: RoomMessage[] = [];
    await C.subscribe(room.id, (m) => void carolSaw.push(m));
    const rawRoom: Msg[] = [];
    natsOf(C).subscribe(room.subject, { callback: (e, m) => void (!e && rawRoom.push(m)) });
    // dave, a reader, may not answer.
    const daveErrors: unknown[] = [];
    const dsub = await D.subscribe(room.id, async (m) => {
      if (!m.expectsReply) return;
      await dsub.respond(m, 'from a reader').catch((e: unknown) => daveErrors.push(e));
    });

    const answer = await A.request(room.id, 'ping', { timeoutMs: 5_000 });
    assert.equal(answer.string(), 'pong: ping');
    assert.equal(answer.sender, bob.signPubHex);
    assert.equal(answer.room, room.id);
    await waitFor(() => carolSaw.length === 1 && daveErrors.length === 1, {
      what: 'the request seen by the others',
    });
    assert.equal(carolSaw[0]!.string(), 'ping');
    assert.equal(carolSaw[0]!.expectsReply, true);
    await sleep(300);
    assert.equal(rawRoom.length, 1, 'only the request went over the room subject');
    assert.ok(is('NOT_A_WRITER')(daveErrors[0]));
    // Nobody but alice may read alice's answers; alice herself only per
    // room she writes to (no room wildcard: outsiders cannot reach it).
    const refused = (nc: ReturnType<typeof natsOf>, subject: string) =>
      new Promise<string>((resolve) => {
        nc.subscribe(subject, { callback: (e) => void (e && resolve(e.message)) });
        setTimeout(() => resolve('no error'), 3_000);
      });
    assert.match(
      await refused(natsOf(D), roomAnswersInbox(room.id, alice.signPubHex)),
      /permissions violation/i
    );
    assert.match(
      await refused(natsOf(A), `sealbus.reply.*.${alice.signPubHex.slice(0, 32)}.*`),
      /permissions violation/i
    );
    // A message that is not a request cannot be answered.
    const plain: RoomMessage[] = [];
    const psub = await C.subscribe(room.id, (m) => void plain.push(m));
    await A.publish(room.id, 'just a message');
    await waitFor(() => plain.length === 1, { what: 'a plain message' });
    assert.equal(plain[0]!.expectsReply, undefined);
    assert.equal(carolSaw.at(-1)!.string(), 'just a message', 'both subscriptions got it');
    await assert.rejects(psub.respond(plain[0]!, 'no'), is('BAD_INPUT'));
    await psub.stop();
    // Several requests at once, each answered with its own.
    const many = await Promise.all(
      [...Array(20).keys()].map((i) => A.request(room.id, `n${i}`).then((m) => m.string()))
    );
    assert.deepEqual(
      many,
      [...Array(20).keys()].map((i) => `pong: n${i}`)
    );
  });

  test('timeouts, nobody listening, persisted rooms and bad input are typed errors', async () => {
    const [erin, fred] = [await user('rq-erin'), await user('rq-fred')];
    const E = await bus(erin);
    const F = await bus(fred);
    const quiet = await E.createRoom({ subject: 'rq.quiet', policy: ENC });
    await assert.rejects(E.request(quiet.id, 'anyone?', { timeoutMs: 2_000 }), is('NO_RESPONDERS'));
    await E.invite(quiet.id, fred.signPubHex, 'reader');
    await F.subscribe(quiet.id, () => {}); // listens, never answers
    const t0 = Date.now();
    await assert.rejects(E.request(quiet.id, 'hello?', { timeoutMs: 400 }), is('TIMEOUT'));
    assert.ok(Date.now() - t0 < 3_000);
    const kept = await E.createRoom({
      subject: 'rq.kept',
      policy: { encrypt: true, persist: true, sign: true },
    });
    await assert.rejects(E.request(kept.id, 'stored?'), is('UNSUPPORTED'));
    await assert.rejects(E.request(quiet.id, 'x', { timeoutMs: 0 }), is('BAD_INPUT'));
    await assert.rejects(E.request(quiet.id, 'x', { timeoutMs: 61_000 }), is('BAD_INPUT'));
    await assert.rejects(E.request(quiet.id, 42 as never), is('BAD_INPUT'));
    await assert.rejects(F.request(quiet.id, 'a reader asks'), is('NOT_A_WRITER'));
  });

  test('a forged "no responders" does not cut a request short: the real answer still comes', async () => {
    const [alice, bob, mallory] = [
      await user('r3-alice'),
      await user('r3-bob'),
      await user('r3-mallory'),
    ];
    const [A, B, M] = [await bus(alice), await bus(bob), await bus(mallory)];
    const room = await A.createRoom({ subject: 'r3.room', policy: ENC });
    await A.invite(room.id, bob.signPubHex, 'writer');
    await A.invite(room.id, mallory.signPubHex, 'writer');
    const bsub = await B.subscribe(room.id, async (m) => {
      if (!m.expectsReply) return;
      await sleep(300);
      await bsub.respond(m, 'the real answer');
    });
    await M.publish(room.id, 'hi'); // mallory's connection has the room's grants now
    const mnc = natsOf(M);
    mnc.subscribe(room.subject, {
      callback: (e, m: Msg) => {
        if (!e && m.reply?.startsWith(roomAnswerPrefix(room.id, alice.signPubHex)))
          mnc.publish(m.reply, new Uint8Array(0), { headers: headers(503, 'No Responders') });
      },
    });
    await mnc.flush();
    assert.equal(
      (await A.request(room.id, 'anyone?', { timeoutMs: 3_000 })).string(),
      'the real answer'
    );
  });

  test('a member cannot pass off an answer to another request, or have answers sent elsewhere', async () => {
    const [alice, bob, mallory] = [
      await user('rqx-alice'),
      await user('rqx-bob'),
      await user('rqx-mallory'),
    ];
    const [A, B, M] = [await bus(alice), await bus(bob), await bus(mallory)];
    const room = await A.createRoom({ subject: 'rqx.room', policy: ENC });
    await A.invite(room.id, bob.signPubHex, 'writer');
    await A.invite(room.id, mallory.signPubHex, 'writer');
    // bob answers mallory's questions only.
    const bobSaw: RoomMessage[] = [];
    const bsub = await B.subscribe(room.id, async (m) => {
      bobSaw.push(m);
      if (m.expectsReply && m.sender === mallory.signPubHex) await bsub.respond(m, 'yes');
    });
    // (The first use of the room renews mallory's connection: take it after.)
    await M.publish(room.id, 'hello');
    const mnc = natsOf(M);
    // mallory keeps the raw answer frame bob sends her.
    const captured: Uint8Array[] = [];
    mnc.subscribe(roomAnswersInbox(room.id, mallory.signPubHex), {
      callback: (e, m) => void (!e && captured.push(m.data)),
    });
    await mnc.flush();
    assert.equal((await M.request(room.id, 'is it safe?')).string(), 'yes');
    await waitFor(() => captured.length === 1, { what: 'the captured answer' });

    // alice asks; mallory, who received the request, answers it with bob's
    // answer to her own question (validly sealed and signed by bob).
    const rejected: RejectedFrame[] = [];
    A.on('rejected', (r) => rejected.push(r));
    mnc.subscribe(room.subject, {
      callback: (e, m) => {
        if (!e && m.reply?.startsWith(roomAnswerPrefix(room.id, alice.signPubHex)))
          mnc.publish(m.reply, captured[0]!);
      },
    });
    await mnc.flush();
    await assert.rejects(A.request(room.id, 'should I pay?', { timeoutMs: 1_500 }), is('TIMEOUT'));
    assert.ok(
      rejected.some((r) => r.code === 'MALFORMED' && /not bound/.test(r.reason)),
      JSON.stringify(rejected)
    );

    // mallory sends a request whose reply subject is not her own inbox
    // (alice's, or a control subject): bob's SDK delivers it as a plain
    // message and will not answer it.
    const mctl = new ControlClient({ urls: [d.httpUrl], identity: mallory });
    closers.push(() => mctl.close());
    const key = openRoomKey((await mctl.myKeys(room.id)).keys[0]!.sealed_key, mallory);
    const sealer = new FrameSealer(room.id, mallory.signSeed);
    const before = bobSaw.length;
    const redirects = [
      roomAnswerSubject(room.id, alice.signPubHex, 'x'),
      `_INBOX_${alice.signPubHex.slice(0, 32)}.r.x`,
      `sealbus.append.${room.id}`,
      `${roomAnswerPrefix(room.id, mallory.signPubHex)}a.b`,
    ];
    for (const reply of redirects)
      mnc.publish(
        room.subject,
        sealer.seal(new TextEncoder().encode(`answer at ${reply}`), {
          epoch: 0,
          key,
          sign: true,
        }),
        { reply }
      );
    await waitFor(() => bobSaw.length === before + redirects.length, {
      what: 'the redirected requests',
    });
    for (const m of bobSaw.slice(before)) {
      assert.equal(m.expectsReply, undefined);
      await assert.rejects(bsub.respond(m, 'no'), is('BAD_INPUT'));
    }
  });
});
