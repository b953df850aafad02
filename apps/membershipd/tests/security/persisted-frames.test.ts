// Attack replay: a writer of the same room silently dropping another
// member's persisted frames. Before, a frame's Nats-Msg-Id was
// `session.seq`: having seen one, the writer pre-published junk under the
// next ids, and the victim's publishes resolved OK but were dropped as
// duplicates. Now the id is random per frame.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { headers, type NatsConnection } from 'nats';
import { ControlClient, Sealbus } from '@sealbus/client';
import { roomStreamName } from '@sealbus/protocol';
import { startDaemon, waitFor, type TestDaemon } from '@sealbus/testing';
import { APPEND_ID_HEADER, appendSubject } from '@sealbus/protocol';
import { adminOf, enrol, natsAs, nodeStore } from '../helpers.js';

const PERSISTED = { encrypt: true, persist: true, sign: true };
const enc = (s: string) => new TextEncoder().encode(s);

describe('persisted frames: message ids cannot be pre-empted', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let adminCtl: ControlClient;
  let nc: NatsConnection;
  const buses: Sealbus[] = [];
  const conns: NatsConnection[] = [];

  before(async () => {
    d = await startDaemon();
    adminCtl = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    const s = await nodeStore(d);
    ({ app: nc } = s);
    await s.nc.close();
  });
  after(async () => {
    for (const b of buses) await b.close().catch(() => {});
    for (const c of conns) await c.close().catch(() => {});
    adminCtl?.close();
    await nc?.close();
    await d?.dispose();
  });

  const connect = async (handle: string) => {
    const { id, ctl } = await enrol(adminCtl, d, handle);
    ctl.close();
    const bus = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity: id,
    });
    buses.push(bus);
    return { id, bus };
  };

  test('a writer that saw a frame id cannot make the next frames drop as duplicates', async () => {
    const victim = await connect('frames-victim');
    const attacker = await connect('frames-attacker');
    const reader = await connect('frames-reader');
    const room = await victim.bus.createRoom({ subject: 'frames.room', policy: PERSISTED });
    await victim.bus.invite(room.id, attacker.id.signPubHex, 'writer');
    await victim.bus.invite(room.id, reader.id.signPubHex, 'reader');
    await victim.bus.publish(room.id, enc('v1'));

    const jsm = await nc.jetstreamManager();
    const stream = roomStreamName(room.id);
    // The stored id of the victim's first frame: random, and scoped to its sender.
    const seen = (await jsm.streams.getMessage(stream, { seq: 1 })).header.get('Nats-Msg-Id');
    const [owner, id] = seen.split('.');
    assert.equal(owner, victim.id.signPubHex, 'scoped to the sender');
    assert.match(id ?? '', /^[0-9a-f]{32}$/, 'random, not session.seq');

    // The attacker tries every id it can derive from it: straight into the
    // stream (it has no grant there) and through the append service.
    const raw = await natsAs(d, attacker.id, { maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    conns.push(raw);
    const guesses = [id!];
    for (let n = 0; n < 8; n++)
      guesses.push((BigInt(`0x${id}`) + BigInt(n + 1)).toString(16).padStart(32, '0'));
    for (const g of guesses) {
      const h = headers();
      h.set('Nats-Msg-Id', `${victim.id.signPubHex}.${g}`);
      raw.publish(room.subject, enc('junk'), { headers: h });
      const a = headers();
      a.set(APPEND_ID_HEADER, g);
      a.set('Nats-Msg-Id', `${victim.id.signPubHex}.${g}`);
      raw.publish(appendSubject(room.id), enc('junk'), { headers: a });
    }
    await raw.flush().catch(() => {});

    for (const text of ['v2', 'v3', 'v4']) await victim.bus.publish(room.id, enc(text));
    const ids = new Set<string>();
    const info = await jsm.streams.info(stream);
    for (let seq = 1; seq <= info.state.last_seq; seq++)
      ids.add((await jsm.streams.getMessage(stream, { seq })).header.get('Nats-Msg-Id'));
    assert.equal(ids.size, info.state.messages, 'every stored message has its own id');

    // The reader gets all four of the victim's frames; the junk is rejected.
    const got: string[] = [];
    const rejected: string[] = [];
    reader.bus.on('rejected', (r) => rejected.push(r.code));
    const sub = await reader.bus.subscribe(
      room.id,
      (m) => void got.push(new TextDecoder().decode(m.data)),
      { from: 'start' }
    );
    await waitFor(() => got.length >= 4, { timeoutMs: 20_000, what: "the victim's frames" });
    await sub.stop();
    assert.deepEqual(got, ['v1', 'v2', 'v3', 'v4']);
    // None of the junk was stored; the reader had nothing to refuse.
    assert.equal(info.state.messages, 4);
    assert.equal(rejected.length, 0);
  });
});
