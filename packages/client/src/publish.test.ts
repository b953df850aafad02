import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DiscardPolicy, connect, headers, type NatsConnection } from 'nats';
import { startNats, type TestNats } from '@sealbus/testing';
import { PublishError } from './errors.js';
import { publishPersisted } from './publish.js';

const isCode = (code: string) => (e: unknown) => e instanceof PublishError && e.code === code;

describe('publishPersisted', { timeout: 60_000 }, () => {
  let nats: TestNats;
  let nc: NatsConnection;
  const stream = 'ROOM_T';
  const subject = 'room.t';
  const frame = (n: number) => new Uint8Array(n).fill(7);
  const count = async () =>
    (await (await nc.jetstreamManager()).streams.info(stream)).state.messages;
  const send = (f: Uint8Array, msgID?: string) =>
    publishPersisted(nc.jetstream(), {
      room: 't',
      subject,
      frame: f,
      deadline: Date.now() + 20_000,
      attemptMs: 2_000,
      closed: () => nc.isClosed(),
      ...(msgID ? { msgID } : {}),
    });

  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
    await (
      await nc.jetstreamManager()
    ).streams.add({
      name: stream,
      subjects: [subject],
      max_bytes: 16 * 1024,
      discard: DiscardPolicy.New,
      duplicate_window: 120_000_000_000,
    });
  });
  after(async () => {
    await nc?.close();
    await nats?.dispose();
  });

  test('each frame gets its own random message id', async () => {
    await send(frame(10));
    await send(frame(10));
    const jsm = await nc.jetstreamManager();
    const a = await jsm.streams.getMessage(stream, { seq: 1 });
    const b = await jsm.streams.getMessage(stream, { seq: 2 });
    const ids = [a.header.get('Nats-Msg-Id'), b.header.get('Nats-Msg-Id')];
    for (const id of ids) assert.match(id, /^[0-9a-f]{32}$/);
    assert.notEqual(ids[0], ids[1]);
  });

  test('a duplicate ack on the first attempt is DUPLICATE, and nothing is stored', async () => {
    // Another writer got the id first (it could if ids were predictable).
    const h = headers();
    h.set('Nats-Msg-Id', 'taken');
    await nc.jetstream().publish(subject, frame(3), { headers: h });
    const before = await count();
    await assert.rejects(send(frame(10), 'taken'), isCode('DUPLICATE'));
    assert.equal(await count(), before);
  });

  test('a full stream (discard new) is ROOM_FULL at once, not retried for the whole deadline', async () => {
    let sent = 0;
    const t0 = Date.now();
    let err: unknown;
    for (; sent < 100; sent++) {
      try {
        await send(frame(1024));
      } catch (e) {
        err = e;
        break;
      }
    }
    assert.ok(isCode('ROOM_FULL')(err), String(err));
    assert.ok(sent > 5 && sent < 17, `refused after ${sent} frames`);
    assert.ok(Date.now() - t0 < 10_000);
    const n = await count();
    await assert.rejects(send(frame(1024)), isCode('ROOM_FULL'));
    assert.equal(await count(), n);
  });
});
