import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type NatsConnection } from 'nats';
import { startNats, type TestNats } from '@sealbus/testing';
import { testKey, withStatements } from './testkit.js';
import { MembershipStore } from './store.js';
import type { KvObservation } from './types.js';

const key = testKey;

describe('OpenStoreOptions.observe', { timeout: 60_000 }, () => {
  let nats: TestNats;
  let nc: NatsConnection;

  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
  });
  after(async () => {
    await nc?.close();
    await nats?.dispose();
  });

  test('every KV operation of the store is reported with its bucket, op, latency and outcome', async () => {
    const seen: KvObservation[] = [];
    const store = await MembershipStore.open(nc, { observe: (e) => seen.push(e) });
    assert.equal(seen.length, 0, 'opening is not reported');
    await store.addUser({ sign_pub: key(1), handle: 'alice', role: 'member' });
    await store.getUser(key(1));
    await store.revokeUser(key(1));
    assert.equal(await store.consumeNonce(key(1), 'AAAAAAAAAAAAAAAAAAAAAA'), true);
    assert.equal(await store.consumeNonce(key(1), 'AAAAAAAAAAAAAAAAAAAAAA'), false);
    await store.listUsers();
    await store.membershipsOf(key(1));

    const ops = seen.map((e) => `${e.bucket}:${e.op}:${e.ok}`);
    assert.deepEqual(ops.slice(0, 6), [
      // Is the new sign key someone's NATS key (a sign key never is)? Asked
      // before the write and again after it (a claim may run beside it).
      'sealbus_nats_keys:get:true',
      'sealbus_users:create:true',
      'sealbus_nats_keys:get:true',
      'sealbus_users:get:true',
      'sealbus_users:get:true',
      'sealbus_users:update:true',
    ]);
    assert.deepEqual(ops.slice(6, 8), [
      'sealbus_nonces:create:true',
      // The replay: a create-only write that found the key taken.
      'sealbus_nonces:create:false',
    ]);
    assert.ok(ops.includes('sealbus_users:keys:true'), ops.join(' '));
    assert.ok(ops.includes('sealbus_members:scan:true'), ops.join(' '));
    for (const e of seen) assert.ok(e.seconds >= 0 && e.seconds < 10, `${e.op}: ${e.seconds}`);
  });

  test('an observer that throws never fails the store', async () => {
    let calls = 0;
    const store = await MembershipStore.open(nc, {
      observe: () => {
        calls++;
        throw new Error('observer bug');
      },
    });
    const u = await store.addUser({ sign_pub: key(2), handle: 'bob', role: 'member' });
    assert.deepEqual(await store.getUser(key(2)), u);
    assert.equal((await store.listUsers()).length, 2);
    await withStatements(store).create({
      subject: 'observed.room',
      policy: { encrypt: false, persist: false, sign: true },
      owner: key(2),
    });
    assert.equal((await store.rooms.roomsOf(key(2))).length, 1);
    assert.ok(calls >= 8, `observer called ${calls} times`);
  });
});
