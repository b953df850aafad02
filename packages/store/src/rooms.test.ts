import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type NatsConnection } from 'nats';
import { startNats, type TestNats } from '@sealbus/testing';
import { StoreError } from './errors.js';
import { MembershipStore } from './store.js';
import { testKey, withStatements } from './testkit.js';

const key = testKey;
const sealed = (n: number) => Buffer.alloc(80, n).toString('base64');
const isCode = (code: string) => (e: unknown) => e instanceof StoreError && e.code === code;
const ENC = { encrypt: true, persist: false, sign: true };

describe(
  'rooms, members, sealed keys, nonces and audit on a real nats-server',
  { timeout: 60_000 },
  () => {
    let nats: TestNats;
    let nc: NatsConnection;
    let store: MembershipStore;
    let signed: ReturnType<typeof withStatements>;

    before(async () => {
      nats = await startNats();
      nc = await connect({ servers: nats.url });
      store = await MembershipStore.open(nc);
      signed = withStatements(store);
      signed = withStatements(store);
    });
    after(async () => {
      await nc?.close();
      await nats?.dispose();
    });

    test('create: owner membership, epoch-0 key, unique subject', async () => {
      const room = await signed.create({
        subject: 'chat.one',
        policy: ENC,
        owner: key(1),
        sealedKey: sealed(1),
      });
      assert.match(room.id, /^[0-9a-f]{24}$/);
      assert.equal(room.epoch, 0);
      assert.deepEqual(await store.rooms.get(room.id), room);
      assert.equal((await store.rooms.membership(room.id, key(1)))?.role, 'owner');
      assert.deepEqual(
        (await store.rooms.keysOf(room.id, key(1))).map((k) => [k.epoch, k.sealed_key]),
        [[0, sealed(1)]]
      );
      await assert.rejects(
        signed.create({
          subject: 'chat.one',
          policy: ENC,
          owner: key(2),
          sealedKey: sealed(2),
        }),
        isCode('CONFLICT')
      );
      await assert.rejects(
        signed.create({ subject: 'chat.two', policy: ENC, owner: key(2) }),
        isCode('INVALID')
      );
      const mine = await store.rooms.roomsOf(key(1));
      assert.deepEqual(
        mine.map((r) => [r.room.id, r.role]),
        [[room.id, 'owner']]
      );
    });

    test('add, remove (marks rekey), rekey with exact coverage and the next epoch only', async () => {
      const room = await signed.create({
        subject: 'chat.rekey',
        policy: ENC,
        owner: key(1),
        sealedKey: sealed(1),
      });
      await signed.addMember(room, {
        signPub: key(2),
        role: 'writer',
        sealedKey: sealed(2),
        addedBy: key(1),
      });
      await signed.addMember(room, {
        signPub: key(3),
        role: 'reader',
        sealedKey: sealed(3),
        addedBy: key(1),
      });
      await assert.rejects(
        signed.addMember(room, {
          signPub: key(3),
          role: 'writer',
          sealedKey: sealed(9),
          addedBy: key(1),
        }),
        isCode('CONFLICT')
      );
      assert.equal(
        (await store.rooms.membership(room.id, key(3)))?.role,
        'reader',
        'conflicting add changed nothing'
      );
      assert.deepEqual((await store.rooms.members(room.id)).map((m) => m.role).sort(), [
        'owner',
        'reader',
        'writer',
      ]);

      const after = await signed.removeMember(room, key(3));
      assert.equal(after.needs_rekey, true);
      assert.equal(await store.rooms.membership(room.id, key(3)), null);
      assert.deepEqual(await store.rooms.roomsOf(key(3)), []);
      await assert.rejects(signed.removeMember(room, key(1)), isCode('INVALID'));

      const keysFor = (ks: number[]) => Object.fromEntries(ks.map((k) => [key(k), sealed(10 + k)]));
      await assert.rejects(
        signed.rekey(room.id, 2, keysFor([1, 2])),
        isCode('CONFLICT'),
        'skipping an epoch'
      );
      await assert.rejects(
        signed.rekey(room.id, 1, keysFor([1])),
        isCode('BAD_STATEMENT'),
        'a member missing'
      );
      await assert.rejects(
        signed.rekey(room.id, 1, keysFor([1, 2, 3])),
        isCode('BAD_STATEMENT'),
        'a removed member'
      );
      assert.equal((await store.rooms.get(room.id))?.epoch, 0, 'failed rekeys changed nothing');
      assert.deepEqual(
        (await store.rooms.keysOf(room.id, key(2))).map((k) => k.epoch),
        [0]
      );

      const rotated = await signed.rekey(room.id, 1, keysFor([1, 2]));
      assert.equal(rotated.epoch, 1);
      assert.equal(rotated.needs_rekey, false);
      assert.deepEqual(
        (await store.rooms.keysOf(room.id, key(2))).map((k) => k.epoch),
        [0, 1]
      );
      await assert.rejects(
        signed.rekey(room.id, 1, keysFor([1, 2])),
        isCode('CONFLICT'),
        'same epoch twice'
      );
    });

    test('two concurrent rekeys to the same epoch: one wins, nothing of the loser remains', async () => {
      const room = await signed.create({
        subject: 'chat.race',
        policy: ENC,
        owner: key(4),
        sealedKey: sealed(4),
      });
      const results = await Promise.allSettled([
        signed.rekey(room.id, 1, { [key(4)]: sealed(41) }),
        signed.rekey(room.id, 1, { [key(4)]: sealed(42) }),
      ]);
      const ok = results.filter((r) => r.status === 'fulfilled');
      assert.equal(ok.length, 1);
      const keys = await store.rooms.keysOf(room.id, key(4));
      assert.equal(keys.length, 2);
      assert.equal((await store.rooms.get(room.id))?.epoch, 1);
    });

    test('unencrypted rooms carry no keys', async () => {
      const room = await signed.create({
        subject: 'plain.x',
        policy: { encrypt: false, persist: false, sign: true },
        owner: key(5),
      });
      await assert.rejects(
        signed.addMember(room, {
          signPub: key(6),
          role: 'reader',
          sealedKey: sealed(6),
          addedBy: key(5),
        }),
        isCode('INVALID')
      );
      await signed.addMember(room, { signPub: key(6), role: 'reader', addedBy: key(5) });
      await assert.rejects(signed.rekey(room.id, 1, {}), isCode('INVALID'));
    });

    test('nonces are single-use', async () => {
      assert.equal(await store.consumeNonce(key(1), 'AAAAAAAAAAAAAAAAAAAAAA'), true);
      assert.equal(await store.consumeNonce(key(1), 'AAAAAAAAAAAAAAAAAAAAAA'), false);
      assert.equal(await store.consumeNonce(key(2), 'AAAAAAAAAAAAAAAAAAAAAA'), true, 'per key');
      await assert.rejects(store.consumeNonce(key(1), 'bad nonce!'), isCode('INVALID'));
    });

    test('audit: append and tail, oldest first; a repeated request id is a second record', async () => {
      const rec = (i: number) => ({
        time: new Date().toISOString(),
        request_id: `req-${i}`,
        actor: key(1),
        via: 'http' as const,
        action: 'user.add',
        target: key(i),
        outcome: 'ok' as const,
      });
      for (let i = 0; i < 5; i++) await store.audit.append(rec(i));
      // The same record again (same request id) is another append, not a
      // retry: the message id is the store's own, random per append.
      await store.audit.append(rec(4));
      const tail = await store.audit.tail(3);
      assert.deepEqual(
        tail.map((r) => r.request_id),
        ['req-3', 'req-4', 'req-4']
      );
      assert.equal((await store.audit.tail(100)).length, 6);
      await assert.rejects(
        store.audit.append({ ...rec(9), action: 'Bad Action' }),
        isCode('INVALID')
      );
    });
  }
);

describe('persisted rooms and membership scans', { timeout: 60_000 }, () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let store: MembershipStore;
  let signed: ReturnType<typeof withStatements>;

  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
    store = await MembershipStore.open(nc);
    signed = withStatements(store);
  });
  after(async () => {
    await nc?.close();
    await nats?.dispose();
  });

  test('a persisted room gets an immutable stream and a durable per member', async () => {
    const room = await signed.create({
      subject: 'log.audit-trail',
      policy: { encrypt: true, persist: true, sign: true },
      owner: key(1),
      sealedKey: sealed(1),
    });
    const jsm = await nc.jetstreamManager();
    const info = await jsm.streams.info(`ROOM_${room.id}`);
    assert.deepEqual(info.config.subjects, ['log.audit-trail']);
    assert.equal(info.config.deny_delete, true);
    assert.equal(info.config.deny_purge, true);
    const consumers = async () =>
      (await jsm.consumers.list(`ROOM_${room.id}`).next()).map((c) => c.name).sort();
    assert.deepEqual(await consumers(), [`m_${key(1).slice(0, 32)}`]);
    await signed.addMember(room, {
      signPub: key(2),
      role: 'reader',
      sealedKey: sealed(2),
      addedBy: key(1),
    });
    assert.deepEqual(
      (await consumers()).sort(),
      [`m_${key(1).slice(0, 32)}`, `m_${key(2).slice(0, 32)}`].sort()
    );
    await signed.removeMember(room, key(2));
    assert.deepEqual(await consumers(), [`m_${key(1).slice(0, 32)}`]);
    // history is immutable even for a privileged connection
    const js = nc.jetstream();
    const ack = await js.publish('log.audit-trail', new Uint8Array([1]));
    await assert.rejects(jsm.streams.deleteMessage(`ROOM_${room.id}`, ack.seq), /delete/i);
    await assert.rejects(jsm.streams.purge(`ROOM_${room.id}`), /purge/i);
  });

  test('appendGrantReads answers what rooms.get and rooms.membership answer: a member, a removed member, an unknown room', async () => {
    const room = await signed.create({
      subject: 'log.grant-reads',
      policy: { encrypt: true, persist: true, sign: true },
      owner: key(1),
      sealedKey: sealed(1),
    });
    await signed.addMember(room, {
      signPub: key(2),
      role: 'writer',
      sealedKey: sealed(2),
      addedBy: key(1),
    });
    const both = async (roomId: string, signPub: string) => {
      const fast = await store.appendGrantReads(roomId, signPub);
      assert.deepEqual(fast.room, await store.rooms.get(roomId));
      assert.deepEqual(
        fast.member,
        fast.room ? await store.rooms.membership(roomId, signPub) : null
      );
      return fast;
    };
    const g = await both(room.id, key(2));
    assert.equal(g.room?.id, room.id);
    assert.equal(g.member?.role, 'writer');
    await signed.removeMember(room, key(2));
    assert.equal((await both(room.id, key(2))).member, null);
    assert.deepEqual(await both('0'.repeat(24), key(1)), { room: null, member: null });
  });

  test('membershipsOf reads every membership of a user in one scan', async () => {
    const rooms = [];
    for (let i = 0; i < 25; i++) {
      rooms.push(
        await signed.create({
          subject: `scan.r${i}`,
          policy: { encrypt: false, persist: false, sign: true },
          owner: key(9),
        })
      );
    }
    for (const r of rooms.slice(0, 10))
      await signed.addMember(r, { signPub: key(8), role: 'reader', addedBy: key(9) });
    const mine = await store.rooms.membershipsOf(key(8));
    assert.equal(mine.length, 10);
    assert.ok(
      mine.every(
        (m) => m.role === 'reader' && m.subject.startsWith('scan.r') && m.persist === false
      )
    );
    assert.equal((await store.rooms.membershipsOf(key(9))).length, 25);
    assert.deepEqual(await store.rooms.membershipsOf(key(7)), []);
    await signed.removeMember(rooms[0]!, key(8));
    assert.equal(
      (await store.rooms.membershipsOf(key(8))).length,
      9,
      'deleted memberships are not returned'
    );
  });
});
