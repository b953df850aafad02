// Attack replay: a member filling the disk through its own persisted room
// (before: no size limit, purge denied, every nonce write then failed and
// the whole control plane answered 503), and a user creating rooms without
// end. Limits here: 64 KiB per room stream, 2 owned rooms per user.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from 'nats';
import { generateIdentity } from '@sealbus/crypto';
import { ControlClient, ControlError, PublishError, Sealbus } from '@sealbus/client';
import { roomStreamName } from '@sealbus/protocol';
import type { MembershipStore } from '@sealbus/store';
import { startDaemon, waitFor, type TestDaemon } from '@sealbus/testing';
import { adminOf, enrol, nodeStore } from '../helpers.js';

const PERSISTED = { encrypt: true, persist: true, sign: true };
const PLAIN = { encrypt: false, persist: false, sign: true };
const ROOM_MAX_BYTES = 64 * 1024;

describe('storage limits: room size and rooms per user', { timeout: 180_000 }, () => {
  let d: TestDaemon;
  let adminCtl: ControlClient;
  let store: MembershipStore;
  let nc: NatsConnection;
  let control: NatsConnection;
  const buses: Sealbus[] = [];
  const ctls: ControlClient[] = [];

  before(async () => {
    d = await startDaemon({ args: ['--room-max-bytes', '64KiB', '--max-rooms-per-user', '2'] });
    adminCtl = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    const s = await nodeStore(d);
    ({ store, app: nc } = s);
    control = s.nc;
  });
  after(async () => {
    for (const b of buses) await b.close().catch(() => {});
    for (const c of ctls) c.close();
    adminCtl?.close();
    await nc?.close();
    await control?.close();
    await d?.dispose();
  });

  const member = async (handle: string) => {
    const { id, ctl } = await enrol(adminCtl, d, handle);
    ctls.push(ctl);
    const bus = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity: id,
      publishTimeoutMs: 10_000,
    });
    buses.push(bus);
    return { id, ctl, bus };
  };

  test('a member floods its room: ROOM_FULL, signed requests keep succeeding, history intact', async () => {
    const flooder = await member('flooder');
    const reader = await member('reader');
    const room = await flooder.bus.createRoom({ subject: 'flood.room', policy: PERSISTED });
    await flooder.bus.invite(room.id, reader.id.signPubHex, 'reader');
    const jsm = await nc.jetstreamManager();
    const cfg = (await jsm.streams.info(roomStreamName(room.id))).config;
    assert.deepEqual([cfg.max_bytes, cfg.discard], [ROOM_MAX_BYTES, 'new']);

    const payload = new Uint8Array(2048).fill(0x61);
    let stored = 0;
    let refusal: unknown;
    const t0 = Date.now();
    for (let i = 0; i < 200; i++) {
      try {
        await flooder.bus.publish(room.id, payload);
        stored++;
      } catch (err) {
        refusal = err;
        break;
      }
    }
    assert.ok(refusal instanceof PublishError, String(refusal));
    assert.equal(refusal.code, 'ROOM_FULL');
    assert.ok(stored >= 20 && stored < 32, `${stored} frames fit in 64 KiB`);
    assert.ok(Date.now() - t0 < 30_000, 'refused at once, not retried');
    // Every later attempt is refused as well, promptly.
    const t1 = Date.now();
    await assert.rejects(
      flooder.bus.publish(room.id, payload),
      (e: unknown) => e instanceof PublishError && e.code === 'ROOM_FULL'
    );
    assert.ok(Date.now() - t1 < 5_000);

    // The control plane is untouched: reads, a change (nonce + audit
    // writes), the flooder's own requests.
    const fresh = generateIdentity();
    await adminCtl.addUser({
      sign_pub: fresh.signPubHex,
      kex_pub: fresh.kexPubHex,
      handle: 'after-flood',
      role: 'member',
    });
    assert.ok((await adminCtl.listUsers()).some((u) => u.sign_pub === fresh.signPubHex));
    assert.equal((await flooder.ctl.me()).sign_pub, flooder.id.signPubHex);
    const audited = await store.audit.tail(1);
    assert.deepEqual([audited[0]!.action, audited[0]!.target], ['user.add', fresh.signPubHex]);
    // Another room of the same owner is not affected.
    const other = await flooder.bus.createRoom({ subject: 'flood.other', policy: PERSISTED });
    await flooder.bus.publish(other.id, payload);

    // History intact: exactly what was acknowledged, from sequence 1, readable.
    const state = (await jsm.streams.info(roomStreamName(room.id))).state;
    assert.deepEqual([state.messages, state.first_seq, state.last_seq], [stored, 1, stored]);
    const got: number[] = [];
    const sub = await reader.bus.subscribe(room.id, (m) => void got.push(m.data.length), {
      from: 'start',
    });
    await waitFor(() => got.length >= stored, { timeoutMs: 20_000, what: 'the whole history' });
    await sub.stop();
    assert.equal(got.length, stored);
    assert.ok(got.every((n) => n === payload.length));
  });

  test('ROOM_QUOTA: a user owning the limit gets 403 on POST /rooms, nothing written; memberships do not count', async () => {
    const host = await member('quota-host');
    const user = await member('quota-user');
    // Belonging to other people's rooms uses none of the user's own allowance.
    for (const subject of ['quota.host.a', 'quota.host.b']) {
      const r = await host.bus.createRoom({ subject, policy: PLAIN });
      await host.bus.invite(r.id, user.id.signPubHex, 'writer');
    }
    const mine = [
      await user.bus.createRoom({ subject: 'quota.mine.a', policy: PLAIN }),
      await user.bus.createRoom({ subject: 'quota.mine.b', policy: PLAIN }),
    ];
    const memberships = async () => (await store.rooms.membershipsOf(user.id.signPubHex)).length;
    assert.equal(await memberships(), 4);
    const auditBefore = (await store.audit.tail(100_000)).length;
    await assert.rejects(
      user.bus.createRoom({ subject: 'quota.mine.c', policy: PERSISTED }),
      (e: unknown) => e instanceof ControlError && e.status === 403 && e.code === 'ROOM_QUOTA'
    );
    assert.equal(await memberships(), 4, 'no room, no membership written');
    assert.equal(await store.rooms.get('quota.mine.c'), null);
    const records = await store.audit.tail(100_000);
    assert.equal(records.length, auditBefore + 1);
    assert.deepEqual(
      [records.at(-1)!.action, records.at(-1)!.outcome, records.at(-1)!.detail?.reason],
      ['room.create', 'denied', 'room quota']
    );
    // The subject was not claimed: another user can take it.
    const third = await member('quota-third');
    await third.bus.createRoom({ subject: 'quota.mine.c', policy: PLAIN });
    // Quota counts current ownership: after a delete the user may create again.
    await user.bus.deleteRoom(mine[0]!.id);
    await user.bus.createRoom({ subject: 'quota.mine.d', policy: PLAIN });
  });
});

// Attack replay, account-wide: many members each filling persisted rooms.
// Every room stream reserves its cap of account APP's JetStream storage
// (`--app-max-bytes`), so with 256 KiB for APP and 64 KiB per room, the
// fifth persisted room is refused (507 STORAGE_FULL) while everything in
// account SEALBUS (users, nonces, audit) keeps taking writes.
describe(
  'storage limits: account APP is capped apart from the control state',
  { timeout: 180_000 },
  () => {
    let d: TestDaemon;
    let adminCtl: ControlClient;
    const buses: Sealbus[] = [];

    before(async () => {
      d = await startDaemon({
        args: [
          '--app-max-bytes',
          '256KiB',
          '--room-max-bytes',
          '64KiB',
          '--max-rooms-per-user',
          '10',
        ],
      });
      adminCtl = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    });
    after(async () => {
      for (const b of buses) await b.close().catch(() => {});
      adminCtl?.close();
      await d?.dispose();
    });

    test('rooms fill their share of APP; the fifth persisted room is 507 STORAGE_FULL; control writes go on', async () => {
      const { id, ctl } = await enrol(adminCtl, d, 'app-filler');
      ctl.close();
      const bus = await Sealbus.connect({
        natsServers: [d.natsUrl],
        controlUrls: [d.httpUrl],
        identity: id,
        publishTimeoutMs: 10_000,
      });
      buses.push(bus);
      const payload = new Uint8Array(4096).fill(0x62);
      let full = 0;
      for (let r = 0; r < 4; r++) {
        const room = await bus.createRoom({ subject: `app.fill.r${r}`, policy: PERSISTED });
        for (let i = 0; i < 40; i++) {
          try {
            await bus.publish(room.id, payload);
          } catch (err) {
            assert.ok(err instanceof PublishError && err.code === 'ROOM_FULL', String(err));
            full++;
            break;
          }
        }
      }
      assert.equal(full, 4, 'every room filled up to its own cap');
      await assert.rejects(
        bus.createRoom({ subject: 'app.fill.r4', policy: PERSISTED }),
        (e: unknown) => e instanceof ControlError && e.status === 507 && e.code === 'STORAGE_FULL'
      );
      // Ephemeral rooms need no storage; control-plane writes (nonces, users,
      // audit) live in SEALBUS and keep succeeding.
      await bus.createRoom({ subject: 'app.fill.ephemeral', policy: PLAIN });
      for (let i = 0; i < 5; i++) {
        const u = generateIdentity();
        await adminCtl.addUser({
          sign_pub: u.signPubHex,
          kex_pub: u.kexPubHex,
          handle: `after-full-${i}`,
          role: 'member',
        });
      }
      assert.ok((await adminCtl.listUsers()).length >= 7);
    });
  }
);
