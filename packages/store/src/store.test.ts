import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type NatsConnection } from 'nats';
import { startNats, type TestNats } from '@sealbus/testing';
import { StoreError } from './errors.js';
import { casUpdate, encodeJson } from './kv.js';
import { MembershipStore } from './store.js';

const key = (n: number) => n.toString(16).padStart(2, '0').repeat(32);
const isCode = (code: string) => (e: unknown) => e instanceof StoreError && e.code === code;

describe('MembershipStore on a real nats-server', { timeout: 60_000 }, () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let store: MembershipStore;

  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
    store = await MembershipStore.open(nc, { replicas: 1 });
  });
  after(async () => {
    await nc?.close();
    await nats?.dispose();
  });

  test('creates every bucket', async () => {
    const jsm = await nc.jetstreamManager();
    const names = (await jsm.streams.names().next()).sort();
    assert.deepEqual(names, [
      'KV_sealbus_members',
      'KV_sealbus_nats_keys',
      'KV_sealbus_nonces',
      'KV_sealbus_room_keys',
      'KV_sealbus_rooms',
      'KV_sealbus_rooms_by_member',
      'KV_sealbus_users',
      'SEALBUS_AUDIT',
    ]);
    const audit = await jsm.streams.info('SEALBUS_AUDIT');
    assert.equal(audit.config.deny_delete, true);
    assert.equal(audit.config.deny_purge, true);
    const nonces = await jsm.streams.info('KV_sealbus_nonces');
    assert.ok(nonces.config.max_age > 0, 'nonces bucket has a TTL');
    assert.equal(nonces.config.num_replicas, 1);
  });

  test('add is create-only: a re-add changes nothing, not even the role', async () => {
    const u = await store.addUser({
      sign_pub: key(1).toUpperCase(),
      handle: 'alice',
      role: 'member',
    });
    assert.equal(u.sign_pub, key(1));
    assert.equal(u.status, 'active');
    assert.equal(u.revoked_at, null);
    assert.equal(u.kex_pub, null);
    await assert.rejects(
      store.addUser({ sign_pub: key(1), handle: 'mallory', role: 'admin' }),
      isCode('CONFLICT')
    );
    assert.deepEqual(await store.getUser(key(1)), u);
  });

  test('invalid input is refused before anything is written', async () => {
    const before = (await store.listUsers()).length;
    for (const bad of [
      { sign_pub: 'abc', handle: 'x', role: 'member' },
      { sign_pub: key(2), handle: 'x', role: 'root' },
      { sign_pub: key(2), handle: 'has space', role: 'member' },
      { sign_pub: key(2), kex_pub: 'zz', handle: 'x', role: 'member' },
    ]) {
      await assert.rejects(store.addUser(bad as never), isCode('INVALID'));
    }
    assert.equal((await store.listUsers()).length, before);
    assert.equal(await store.getUser(key(2)), null);
    await assert.rejects(store.getUser('nothex'), isCode('INVALID'));
  });

  test('revoke flips status with revoked_at, keeps the row, and is idempotent', async () => {
    await store.addUser({ sign_pub: key(3), kex_pub: key(4), handle: 'bob', role: 'admin' });
    assert.equal(await store.isAuthorized(key(3)), true);
    const t = new Date('2026-11-23T12:00:00Z');
    const r1 = await store.revokeUser(key(3), t);
    assert.equal(r1.changed, true);
    assert.equal(r1.user.status, 'revoked');
    assert.equal(r1.user.revoked_at, t.toISOString());
    assert.equal(r1.user.role, 'admin');
    assert.equal(await store.isAuthorized(key(3)), false);
    const r2 = await store.revokeUser(key(3));
    assert.equal(r2.changed, false);
    assert.equal(r2.user.revoked_at, t.toISOString());
    const listed = (await store.listUsers()).find((u) => u.sign_pub === key(3));
    assert.equal(listed?.status, 'revoked', 'list includes revoked users');
    // a revoked key stays registered: re-adding it is still a conflict
    await assert.rejects(
      store.addUser({ sign_pub: key(3), handle: 'bob', role: 'member' }),
      isCode('CONFLICT')
    );
    await assert.rejects(store.revokeUser(key(99)), isCode('NOT_FOUND'));
    assert.equal(await store.isAuthorized(key(99)), false);
  });

  test('concurrent create-only adds of one key: exactly one wins', async () => {
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        store.addUser({ sign_pub: key(5), handle: `h${i}`, role: 'member' })
      )
    );
    const won = results.filter((r) => r.status === 'fulfilled');
    assert.equal(won.length, 1);
    for (const r of results) if (r.status === 'rejected') assert.ok(isCode('CONFLICT')(r.reason));
    const winner = (won[0] as PromiseFulfilledResult<{ handle: string }>).value.handle;
    assert.equal((await store.getUser(key(5)))?.handle, winner);
  });

  test('two writers doing read-modify-write with CAS lose no update', async () => {
    const kv = store.bucket('rooms');
    await kv.put('cas-counter', encodeJson({ n: 0 }));
    const parse = (raw: unknown) => raw as { n: number };
    let retried = 0;
    const writer = async () => {
      for (let i = 0; i < 40; i++) {
        await casUpdate(kv, 'cas-counter', parse, (c) => ({ n: c.n + 1 }), 'counter', {
          maxAttempts: 100,
        });
      }
    };
    const origUpdate = kv.update.bind(kv);
    kv.update = async (...args: Parameters<typeof kv.update>) => {
      try {
        return await origUpdate(...args);
      } catch (err) {
        retried++;
        throw err;
      }
    };
    await Promise.all([writer(), writer()]);
    kv.update = origUpdate;
    const e = await kv.get('cas-counter');
    assert.equal(JSON.parse(new TextDecoder().decode(e!.value)).n, 80);
    assert.ok(
      retried > 0,
      'the writers really did collide (the test would prove nothing otherwise)'
    );
  });

  test('a corrupt stored row is an error, not a silent skip', async () => {
    await store.bucket('users').put(key(6), new TextEncoder().encode('{"sign_pub": 1'));
    await assert.rejects(store.getUser(key(6)), isCode('CORRUPT'));
    await assert.rejects(store.listUsers(), isCode('CORRUPT'));
    await store.bucket('users').purge(key(6));
  });

  test('data survives a nats-server restart', async () => {
    await store.addUser({ sign_pub: key(7), handle: 'carol', role: 'member' });
    await nc.close();
    await nats.restart();
    nc = await connect({ servers: nats.url });
    store = await MembershipStore.open(nc, { bindOnly: true });
    assert.equal((await store.getUser(key(7)))?.handle, 'carol');
    assert.equal((await store.getUser(key(1)))?.handle, 'alice');
  });
});

describe('opening', { timeout: 60_000 }, () => {
  test('bind-only on a fresh server is NOT_INITIALIZED and creates nothing', async () => {
    await using nats = await startNats();
    const nc = await connect({ servers: nats.url });
    try {
      await assert.rejects(MembershipStore.open(nc, { bindOnly: true }), isCode('NOT_INITIALIZED'));
      const jsm = await nc.jetstreamManager();
      assert.deepEqual(await jsm.streams.names().next(), []);
    } finally {
      await nc.close();
    }
  });

  test('without JetStream, opening gives up with UNAVAILABLE once the budget is spent', async () => {
    await using nats = await startNats({ jetstream: false });
    const nc = await connect({ servers: nats.url });
    try {
      const t0 = Date.now();
      await assert.rejects(
        MembershipStore.open(nc, { bootstrapBudgetMs: 1_500, attemptTimeoutMs: 300 }),
        isCode('UNAVAILABLE')
      );
      const took = Date.now() - t0;
      assert.ok(took >= 1_400 && took < 10_000, `gave up after ${took} ms`);
    } finally {
      await nc.close();
    }
  });
});
