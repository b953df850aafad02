// Received frames through the SDK, with signatures checked on a worker
// thread and without: the same messages, in the same order, and the same
// refusals; and the caches of the frame path (subkeys, headers) never carry
// a key across a rekey.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { connect, nkeyAuthenticator, type NatsConnection } from 'nats';
import {
  FrameSealer,
  encodePublicIdentity,
  generateIdentity,
  loadIdentity,
  natsUserKey,
  type Identity,
} from '@sealbus/crypto';
import { startDaemon, waitFor, type TestDaemon } from '@sealbus/testing';
import { ControlClient } from './control.js';
import { openRoomKey } from './keys.js';
import type { RejectedFrame, RoomMessage } from './roomstate.js';
import { Sealbus } from './sealbus.js';
import { VerifyPool } from './verifier.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const flip = (b: Uint8Array, i: number) => Uint8Array.from(b, (v, j) => (j === i ? v ^ 1 : v));

describe('frames through the SDK', { timeout: 180_000 }, () => {
  let d: TestDaemon;
  let admin: ControlClient;
  const closers: Array<() => Promise<unknown> | void> = [];
  const saved = VerifyPool.threads;
  const user = async (handle: string) => {
    const id = generateIdentity();
    await admin.addUser({ public: encodePublicIdentity(id), handle, role: 'member' });
    return id;
  };
  const bus = async (id: Identity, o: { rotationGraceMs?: number } = {}) => {
    const b = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity: id,
      ...o,
    });
    closers.push(() => b.close());
    return b;
  };
  const raw = async (id: Identity): Promise<NatsConnection> => {
    const nc = await connect({
      servers: d.natsUrl,
      authenticator: nkeyAuthenticator(enc(natsUserKey(id).seed)),
      inboxPrefix: `_INBOX_${id.signPubHex.slice(0, 32)}.r`,
    });
    closers.push(() => nc.close());
    return nc;
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
    await VerifyPool.reset();
    VerifyPool.threads = saved;
  });

  for (const threads of [1, 0])
    test(`signed room, ${threads ? 'a verification thread' : 'verified inline'}: genuine frames in order, every forgery and replay refused`, async () => {
      await VerifyPool.reset();
      VerifyPool.threads = threads;
      const [o, r] = [await user(`fo-${threads}`), await user(`fr-${threads}`)];
      const [O, R] = [await bus(o), await bus(r)];
      const room = await O.createRoom({
        subject: `frames.order${threads}`,
        policy: { encrypt: true, persist: false, sign: true },
      });
      await O.invite(room.id, r.signPubHex, 'reader');
      const got: RoomMessage[] = [];
      const rejected: RejectedFrame[] = [];
      R.on('rejected', (x) => rejected.push(x));
      await R.subscribe(room.id, (m) => void got.push(m));
      assert.equal(VerifyPool.shared()?.size ?? 0, threads);
      const key = openRoomKey((await O.control.myKeys(room.id)).keys[0]!.sealed_key, o);
      const nc = await raw(o);
      const s = new FrameSealer(room.id, o.signSeed);
      const want: string[] = [];
      const refusals: string[] = [];
      let replay: Uint8Array | undefined;
      for (let i = 0; i < 1500; i++) {
        const f = s.seal(enc(`m${i}`), { epoch: 0, key, sign: true });
        if (i % 100 === 37) {
          nc.publish(room.subject, flip(f, f.length - 3));
          refusals.push('BAD_SIGNATURE');
        } else if (i % 100 === 61) {
          nc.publish(room.subject, flip(f, 90));
          refusals.push('BAD_SIGNATURE');
        } else {
          nc.publish(room.subject, f);
          want.push(`m${i}`);
          if (i === 500) replay = f;
        }
        if (i === 900) {
          nc.publish(room.subject, replay!);
          refusals.push('REPLAYED');
        }
        if (i % 250 === 249) await nc.flush();
      }
      await nc.flush();
      await waitFor(() => got.length >= want.length && rejected.length >= refusals.length, {
        timeoutMs: 30_000,
        what: `all frames (${got.length}/${want.length}, ${rejected.length}/${refusals.length})`,
      });
      assert.deepEqual(
        got.map((m) => dec(m.data)),
        want,
        'each genuine frame once, in order'
      );
      assert.deepEqual(
        got.map((m) => m.seq),
        got.map((m) => Number(dec(m.data).slice(1)) + 1)
      );
      assert.deepEqual(
        rejected.map((x) => x.code),
        refusals
      );
      assert.ok(rejected.every((x) => x.sender === o.signPubHex));
    });

  test('rekey: the sender follows the new key, the old one opens nothing new, old frames are refused', async () => {
    await VerifyPool.reset();
    VerifyPool.threads = 1;
    const [o, m, x] = [await user('rk-owner'), await user('rk-member'), await user('rk-stays')];
    const [O, M] = [await bus(o), await bus(m)];
    // No grace: a live frame of the old epoch is refused as soon as the rotation is known.
    const X = await bus(x, { rotationGraceMs: 0 });
    const room = await O.createRoom({
      subject: 'frames.rekey',
      policy: { encrypt: true, persist: false, sign: true },
    });
    await O.invite(room.id, m.signPubHex);
    await O.invite(room.id, x.signPubHex, 'reader');
    const got: RoomMessage[] = [];
    const rejected: RejectedFrame[] = [];
    X.on('rejected', (r) => rejected.push(r));
    await X.subscribe(room.id, (msg) => void got.push(msg));
    await M.subscribe(room.id, () => {});
    const key0 = openRoomKey((await O.control.myKeys(room.id)).keys[0]!.sealed_key, o);
    for (let i = 0; i < 50; i++) await O.publish(room.id, enc(`e0-${i}`));
    await waitFor(() => got.length === 50, { what: 'epoch 0 messages' });

    const { epoch } = await O.removeMember(room.id, m.signPubHex);
    assert.equal(epoch, 1);
    const key1 = openRoomKey(
      (await O.control.myKeys(room.id)).keys.find((k) => k.epoch === 1)!.sealed_key,
      o
    );
    assert.notDeepEqual(key1, key0);
    // The same client, the same frame session: its cached subkey and header
    // must follow. (The first frame waits for the reader to learn epoch 1:
    // frames of an epoch it has not heard of wait for a refresh, few at a time.)
    await O.publish(room.id, enc('e1-0'));
    await waitFor(() => got.length === 51, { what: 'the first epoch 1 message' });
    for (let i = 1; i < 50; i++) await O.publish(room.id, enc(`e1-${i}`));
    await waitFor(() => got.length === 100, { what: 'epoch 1 messages' });
    assert.deepEqual(
      got.map((g) => [g.epoch, dec(g.data)]),
      [
        ...Array.from({ length: 50 }, (_, i) => [0, `e0-${i}`]),
        ...Array.from({ length: 50 }, (_, i) => [1, `e1-${i}`]),
      ]
    );
    assert.equal(new Set(got.map((g) => g.session)).size, 1, 'one frame session throughout');
    assert.equal(rejected.length, 0, JSON.stringify(rejected));

    // What the removed member could still make with the old key: refused.
    const nc = await raw(o);
    const s = new FrameSealer(room.id, o.signSeed);
    nc.publish(
      room.subject,
      s.seal(enc('old key, new epoch'), { epoch: 1, key: key0, sign: true })
    );
    nc.publish(room.subject, s.seal(enc('old epoch'), { epoch: 0, key: key0, sign: true }));
    // And the new key still opens what it should, after those.
    nc.publish(room.subject, s.seal(enc('new key'), { epoch: 1, key: key1, sign: true }));
    await nc.flush();
    await waitFor(() => rejected.length >= 2 && got.length >= 101, { what: 'the verdicts' });
    assert.deepEqual(
      rejected.map((r) => r.code),
      ['DECRYPT_FAILED', 'STALE_EPOCH']
    );
    assert.equal(dec(got[100]!.data), 'new key');
    assert.equal(got.length, 101);
  });
});
