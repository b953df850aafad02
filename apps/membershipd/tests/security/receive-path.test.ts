// Attack replay (issue 16, item 2): a writer sent copies of its own frame
// with the sender bytes randomised (no cryptography needed); each made the
// receiving SDK refresh the room before checking anything, delaying the next
// real message by 9.2 s for ten frames, and 300 x 1 MB junk frames held
// +610 MB while waiting. Random senders are now refused before any network
// call (signature, AEAD; persisted appends must name their sender), and a
// frame that does need a refresh (an epoch nobody has) waits aside, bounded,
// while the rest go on.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { NatsConnection } from 'nats';
import { FrameSealer, type Identity } from '@sealbus/crypto';
import { ControlClient, type RoomMessage } from '@sealbus/client';
import { openRoomKey } from '@sealbus/client/internal';
import { startDaemon, waitFor, type TestDaemon } from '@sealbus/testing';
import { adminOf, appendAnswers, appendRaw, busOf, enrol, natsAs } from '../helpers.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

describe('receivers a writer cannot stall', { timeout: 180_000 }, () => {
  let d: TestDaemon;
  let admin: ControlClient;
  const closers: Array<() => Promise<unknown>> = [];
  const user = async (h: string): Promise<Identity> => (await enrol(admin, d, h)).id;
  const bus = (id: Identity) => busOf(d, id, closers);

  before(async () => {
    d = await startDaemon();
    admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
  });
  after(async () => {
    for (const c of closers.reverse()) await c().catch(() => {});
    admin?.close();
    await d?.dispose();
  });

  for (const policy of [
    { encrypt: false, persist: false, sign: false },
    { encrypt: true, persist: false, sign: true },
  ]) {
    test(`ten junk frames with random senders do not delay the next real message (${JSON.stringify(policy)})`, async () => {
      const [o, w, r] = [await user('st-o'), await user('st-w'), await user('st-r')];
      const [O, W, R] = [await bus(o), await bus(w), await bus(r)];
      const room = await O.createRoom({ subject: `stall.${policy.encrypt}`, policy });
      await O.invite(room.id, w.signPubHex, 'writer');
      await O.invite(room.id, r.signPubHex, 'reader');
      const got: Array<{ m: RoomMessage; at: number }> = [];
      await R.subscribe(room.id, (m) => void got.push({ m, at: Date.now() }));
      await W.publish(room.id, enc('warm-up'));
      await waitFor(() => got.length === 1, { what: 'warm-up' });
      // The writer's own frame, sender bytes randomised, sent raw.
      const raw: NatsConnection = await natsAs(d, w);
      closers.push(() => raw.close());
      const sealer = new FrameSealer(room.id, w.signSeed);
      // A writer holds the room key: its junk is sealed properly.
      const roomKey = policy.encrypt
        ? openRoomKey((await W.control.myKeys(room.id)).keys[0]!.sealed_key, w)
        : null;
      for (let i = 0; i < 10; i++) {
        const f = sealer.seal(enc(`junk ${i}`), {
          epoch: 0,
          key: roomKey,
          sign: policy.sign,
        });
        f.set(randomBytes(32), 18);
        raw.publish(`stall.${policy.encrypt}`, f);
      }
      await raw.flush();
      const t0 = Date.now();
      await W.publish(room.id, enc('real'));
      await waitFor(() => got.some((g) => dec(g.m.data) === 'real'), {
        what: 'the real message',
        timeoutMs: 10_000,
      });
      const delay = got.find((g) => dec(g.m.data) === 'real')!.at - t0;
      assert.ok(delay < 300, `the real message took ${delay} ms`);
      assert.ok(got.every((g) => g.m.sender === w.signPubHex));
    });
  }

  test('persisted history: frames of epochs nobody has do not stall the reader, and wait bounded', async () => {
    const [o, w, r] = [await user('ep-o'), await user('ep-w'), await user('ep-r')];
    const [O, W, R] = [await bus(o), await bus(w), await bus(r)];
    const room = await O.createRoom({
      subject: 'epochs.log',
      policy: { encrypt: true, persist: true, sign: true },
    });
    await O.invite(room.id, w.signPubHex, 'writer');
    await O.invite(room.id, r.signPubHex, 'reader');
    // The writer's own frames, properly signed, under epochs that do not
    // exist (the append service checks sender and signature, not epochs).
    const raw = await natsAs(d, w);
    closers.push(() => raw.close());
    const answers = await appendAnswers(raw, w.signPubHex);
    const sealer = new FrameSealer(room.id, w.signSeed);
    const N = 40;
    for (let i = 0; i < N; i++) {
      const f = sealer.seal(enc(`bogus ${i}`), {
        epoch: 100 + i,
        key: new Uint8Array(randomBytes(32)),
        sign: true,
      });
      appendRaw(raw, room.id, f);
    }
    await raw.flush();
    await waitFor(() => answers.length === N, { what: 'bogus appends stored' });
    assert.ok(answers.every((a) => a.ok));
    await W.publish(room.id, enc('real'));
    const rejected: string[] = [];
    R.on('rejected', (x) => rejected.push(x.code));
    const got: string[] = [];
    const t0 = Date.now();
    let at = 0;
    await R.subscribe(
      room.id,
      (m) => {
        got.push(dec(m.data));
        if (dec(m.data) === 'real') at = Date.now();
      },
      { from: 'start' }
    );
    await waitFor(() => at > 0, { what: 'the real message', timeoutMs: 30_000 });
    // Before: each bogus frame waited for a refresh (at most one a second).
    assert.ok(at - t0 < 1_500, `the real message came ${at - t0} ms after subscribing`);
    await waitFor(() => rejected.length === N, { what: 'every bogus frame refused' });
    assert.ok(
      rejected.every((c) => c === 'UNKNOWN_EPOCH'),
      rejected.join(',')
    );
    assert.deepEqual(got, ['real']);
  });
});
