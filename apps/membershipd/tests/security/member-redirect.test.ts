import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { headers as natsHeaders, type Msg, type NatsConnection } from 'nats';
import { FrameSealer, generateIdentity, type Identity } from '@sealbus/crypto';
import { ControlClient, type RoomMessage } from '@sealbus/client';
import {
  APPEND_ID_HEADER,
  appendResultSubject,
  appendSubject,
  memberDeliverSubject,
  userEventsSubject,
  userInboxPrefix,
} from '@sealbus/protocol';
import { startDaemon, waitFor, type TestDaemon } from '@sealbus/testing';
import { adminOf, busOf, natsAs, nodeStore } from '../helpers.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Attacker: a member (a writer of its own persisted and ephemeral rooms)
 * holding nothing but the grants the callout gave it. It tries every way a
 * publish can make the server publish for it — JetStream API calls, acks,
 * reply subjects on the subjects it may write — aimed at another user's
 * events and inbox, another room, and the control state. The required
 * outcome: the server publishes nothing for it outside its own inbox prefix.
 * Spies in both accounts (the daemon's own users) watch everything.
 */
describe('attacker: a member tries to make the server publish for it', { timeout: 300_000 }, () => {
  let d: TestDaemon;
  let admin: ControlClient;
  let spyApp: NatsConnection;
  let spyControl: NatsConnection;
  const seenApp: Msg[] = [];
  const seenControl: Msg[] = [];
  const closers: Array<() => Promise<unknown>> = [];

  const user = async (handle: string): Promise<Identity> => {
    const id = generateIdentity();
    await admin.addUser({ sign_pub: id.signPubHex, kex_pub: id.kexPubHex, handle, role: 'member' });
    return id;
  };
  const bus = (id: Identity) => busOf(d, id, closers);

  before(async () => {
    d = await startDaemon();
    admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    const s = await nodeStore(d);
    spyControl = s.nc;
    spyApp = s.app;
    closers.push(
      () => s.nc.close(),
      () => s.app.close()
    );
    spyApp.subscribe('>', { callback: (_e, m) => void seenApp.push(m) });
    spyControl.subscribe('>', { callback: (_e, m) => void seenControl.push(m) });
    await spyApp.flush();
    await spyControl.flush();
  });
  after(async () => {
    for (const c of closers.reverse()) await c().catch(() => {});
    admin?.close();
    await d?.dispose();
  });

  test('no reply subject, API call or ack a member can send makes the server publish outside its inbox', async () => {
    const [mallory, victim] = [await user('mallory'), await user('victim')];
    const [M, V] = [await bus(mallory), await bus(victim)];
    const persisted = await M.createRoom({
      subject: 'm.persisted',
      policy: { encrypt: true, persist: true, sign: true },
    });
    const ephemeral = await M.createRoom({
      subject: 'm.ephemeral',
      policy: { encrypt: true, persist: false, sign: true },
    });
    const vRoom = await V.createRoom({
      subject: 'v.persisted',
      policy: { encrypt: true, persist: true, sign: true },
    });
    await V.publish(vRoom.id, enc('victim history'));
    await M.publish(persisted.id, enc('a real frame'));

    // Targets the server must never be made to publish onto.
    const targets = [
      userEventsSubject(victim.signPubHex),
      `${userInboxPrefix(victim.signPubHex)}.stolen`,
      memberDeliverSubject(victim.signPubHex, vRoom.id),
      'v.persisted',
      'sealbus.ctl.change',
      '$KV.sealbus_users.evil',
      'SEALBUS_AUDIT.user.revoke',
    ];
    const raw = await natsAs(d, mallory, { maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    closers.push(() => raw.close());
    const stream = `ROOM_${persisted.id}`;
    const durable = `m_${mallory.signPubHex.slice(0, 32)}`;
    const h = natsHeaders();
    h.set(APPEND_ID_HEADER, 'ab'.repeat(16));
    const mark = seenApp.length;
    const markControl = seenControl.length;
    for (const reply of targets) {
      // Subjects it may publish to, each with a hostile reply subject.
      raw.publish(appendSubject(persisted.id), enc('junk'), { reply, headers: h });
      raw.publish('m.ephemeral', enc('junk'), { reply });
      // Subjects it may not publish to (refused by the server; a reply must not leak either).
      for (const api of [
        `$JS.API.CONSUMER.MSG.NEXT.${stream}.${durable}`,
        `$JS.API.CONSUMER.INFO.${stream}.${durable}`,
        `$JS.API.STREAM.INFO.${stream}`,
        `$JS.ACK.${stream}.${durable}.1.1.1.1.0`,
        'm.persisted',
        `$JS.FC.${stream}.x.y`,
      ])
        raw.publish(api, enc('{"batch":10}'), { reply });
    }
    await raw.flush().catch(() => {});
    await sleep(1_500);
    for (const t of targets)
      assert.ok(
        !seenApp.slice(mark).some((m) => m.subject === t),
        `the server published onto ${t} in account APP`
      );
    for (const t of targets)
      assert.ok(
        !seenControl.some((m) => m.subject === t),
        `something reached ${t} in account SEALBUS`
      );
    // In SEALBUS nothing but the append requests arrived from the member
    // (nobody else publishes meanwhile).
    // The daemon's own traffic is left out: its caches' heartbeats (stream
    // info of the users and members buckets every 100 ms), their replies and
    // the API advisories nats-server publishes for them.
    const own = new Set<string>();
    for (const m of seenControl.slice(markControl))
      if (m.subject.startsWith('$JS.API.STREAM.INFO.KV_sealbus_') && m.reply) own.add(m.reply);
    const fromMember = seenControl
      .slice(markControl)
      .filter(
        (m) =>
          !m.subject.startsWith('$JS.API.STREAM.INFO.KV_sealbus_') &&
          m.subject !== '$JS.EVENT.ADVISORY.API' &&
          !own.has(m.subject)
      );
    assert.ok(fromMember.length > 0, 'the spy sees the service requests (control)');
    assert.ok(
      fromMember.every((m) => m.subject === appendSubject(persisted.id)),
      `only its own room: ${[...new Set(fromMember.map((m) => m.subject))].join(', ')}`
    );
    // The victim's room history is untouched and the victim's SDK saw nothing odd.
    const jsm = await spyApp.jetstreamManager();
    assert.equal((await jsm.streams.info(`ROOM_${vRoom.id}`)).state.messages, 1);
    assert.equal((await jsm.streams.info(stream)).state.messages, 1, 'junk is not appended');
    void ephemeral;
  });

  test('a writer cannot append a frame that names another sender, nor pre-empt its ids', async () => {
    const [w, v, r] = [await user('writer-w'), await user('writer-v'), await user('reader-r')];
    const [W, V, R] = [await bus(w), await bus(v), await bus(r)];
    const room = await V.createRoom({
      subject: 'shared.log',
      policy: { encrypt: false, persist: true, sign: false },
    });
    await V.invite(room.id, w.signPubHex, 'writer');
    await V.invite(room.id, r.signPubHex, 'reader');
    const raw = await natsAs(d, w, { maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    closers.push(() => raw.close());
    const answers: Array<{ ok: boolean; code?: string }> = [];
    raw.subscribe(appendResultSubject(w.signPubHex, '*'), {
      callback: (_e, m) => void answers.push(JSON.parse(dec(m.data))),
    });
    await raw.flush();
    void W;

    // An unsigned frame whose sender bytes name v.
    const forged = new FrameSealer(room.id, w.signSeed).seal(enc('as v'), {
      epoch: 0,
      key: null,
      sign: false,
    });
    forged.set(v.signPub, 18);
    const h = natsHeaders();
    h.set(APPEND_ID_HEADER, 'cd'.repeat(16));
    raw.publish(appendSubject(room.id), forged, { headers: h });
    await waitFor(() => answers.length === 1, { what: 'an answer to the forged append' });
    assert.deepEqual([answers[0]!.ok, answers[0]!.code], [false, 'WRONG_SENDER']);

    // w pre-publishes its own frames under many ids; v's publishes still land.
    for (let i = 0; i < 5; i++) {
      const own = new FrameSealer(room.id, w.signSeed).seal(enc(`w ${i}`), {
        epoch: 0,
        key: null,
        sign: false,
      });
      const hh = natsHeaders();
      hh.set(APPEND_ID_HEADER, String(i).repeat(32));
      raw.publish(appendSubject(room.id), own, { headers: hh });
    }
    await waitFor(() => answers.length === 6, { what: 'w appends answered' });
    for (let i = 0; i < 3; i++) await V.publish(room.id, enc(`v ${i}`));
    const got: RoomMessage[] = [];
    const sub = await R.subscribe(room.id, (m) => void got.push(m), { from: 'start' });
    await waitFor(() => got.length === 8, { what: 'all frames' });
    await sub.stop();
    const bySender = (s: string) => got.filter((m) => m.sender === s).map((m) => dec(m.data));
    assert.deepEqual(bySender(v.signPubHex), ['v 0', 'v 1', 'v 2']);
    assert.equal(bySender(w.signPubHex).length, 5);
  });

  test('a reader cannot append; a removed writer is refused within a second', async () => {
    const [o, rd, wr] = [await user('owner-x'), await user('reader-x'), await user('writer-x')];
    const [O, RD, WR] = [await bus(o), await bus(rd), await bus(wr)];
    const room = await O.createRoom({
      subject: 'x.log',
      policy: { encrypt: true, persist: true, sign: true },
    });
    await O.invite(room.id, rd.signPubHex, 'reader');
    await O.invite(room.id, wr.signPubHex, 'writer');
    await assert.rejects(RD.publish(room.id, enc('nope')), { code: 'NOT_A_WRITER' });
    await WR.publish(room.id, enc('allowed'));
    await O.removeMember(room.id, wr.signPubHex);
    await sleep(1_100);
    await assert.rejects(WR.publish(room.id, enc('after removal')));
    const jsm = await spyApp.jetstreamManager();
    assert.equal((await jsm.streams.info(`ROOM_${room.id}`)).state.messages, 1);
  });
});
