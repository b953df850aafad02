// The user cache against a real nats-server. Who stands on the other side:
// an admin on another node revoking a key (the revocation must be in every
// answer given more than the bound after its acknowledgement), a writer of
// a record the store would refuse (the store decides), and a stream that
// stops answering (a leader election: the cache stops vouching once its
// bound has passed, and the store is read instead).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, type JetStreamManager, type KV, type NatsConnection } from 'nats';
import { startNats, waitFor, type TestNats } from '@sealbus/testing';
import { MembershipStore } from './store.js';
import { USER_CACHE_BOUND_MS, UserCache } from './usercache.js';

const hex = (n: number) => randomBytes(n).toString('hex');

describe('user cache', { timeout: 120_000 }, () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let writer: NatsConnection;
  let store: MembershipStore;
  let other: MembershipStore;
  let cache: UserCache;

  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
    writer = await connect({ servers: nats.url });
    store = await MembershipStore.open(nc);
    // Changes come from another connection, as another node's would.
    other = await MembershipStore.open(writer, { bindOnly: true });
    cache = store.startUserCache(() => {});
    await waitFor(() => cache.lookup('0'.repeat(64)) !== undefined || undefined, {
      what: 'the user cache proved current',
    });
  });
  after(async () => {
    await cache?.stop();
    await writer?.close();
    await nc?.close();
    await nats?.dispose();
  });

  test('a revocation acknowledged elsewhere is in every answer asked for more than the bound later; lookups come from memory', async () => {
    const late: string[] = [];
    const hits0 = cache.stats.hits;
    let lookups = 0;
    for (let round = 0; round < 5; round++) {
      const key = hex(32);
      await other.addUser({ sign_pub: key, handle: `u${round}`, role: 'member' });
      await sleep(USER_CACHE_BOUND_MS + 50);
      assert.equal((await store.userForRequest(key))?.status, 'active', 'added');
      const acked = await other.revokeUser(key).then(() => performance.now());
      // Look it up as fast as possible for twice the bound.
      while (performance.now() - acked < 2 * USER_CACHE_BOUND_MS) {
        const askedAt = performance.now();
        const u = await store.userForRequest(key);
        lookups++;
        // Let I/O in between, as a server between requests does.
        await new Promise((r) => setImmediate(r));
        if (askedAt - acked > USER_CACHE_BOUND_MS && u?.status !== 'revoked')
          late.push(`round ${round}: active ${(askedAt - acked).toFixed(0)} ms after the ack`);
      }
    }
    assert.deepEqual(late, []);
    const hits = cache.stats.hits - hits0;
    console.log(`# ${lookups} lookups around 5 revocations: ${hits} from memory`);
    assert.ok(hits >= lookups * 0.5, `only ${hits} of ${lookups} lookups came from the cache`);
  });

  test('a change through this store is in the very next answer (read-your-writes on one node, not the bound)', async () => {
    for (let i = 0; i < 20; i++) {
      const key = hex(32);
      await store.addUser({ sign_pub: key, handle: `ryw${i}`, role: 'member' });
      assert.equal((await store.userForRequest(key))?.status, 'active', `added ${i}`);
      await sleep(120);
      assert.notEqual(cache.lookup(key), undefined, 'vouching again after a heartbeat');
      await store.revokeUser(key);
      assert.equal((await store.userForRequest(key))?.status, 'revoked', `revoked ${i}`);
    }
  });

  test('unknown keys are null from memory; a record the store would refuse makes the cache step aside (CORRUPT)', async () => {
    await waitFor(() => cache.lookup(hex(32)) === null || undefined, { what: 'null from memory' });
    assert.equal(cache.lookup('not hex'), undefined, 'the store judges bad keys');
    const key = hex(32);
    const users: KV = await writer.jetstream().views.kv('sealbus_users', { bindOnly: true });
    await users.put(key, new TextEncoder().encode('{"sign_pub": "half a record"'));
    await sleep(USER_CACHE_BOUND_MS + 50);
    assert.equal(cache.lookup(key), undefined);
    await assert.rejects(store.userForRequest(key), /not JSON|CORRUPT/);
    await users.delete(key);
    await waitFor(() => cache.lookup(key) === null || undefined, { what: 'deleted: null again' });
  });

  test('a stream that stops answering: the cache stops vouching once the bound has passed, and vouches again after', async () => {
    // The same watch, with a stream-info call that can be held (what a
    // leader election does to it); NATS itself is real.
    const jsm = await nc.jetstreamManager();
    let hold = false;
    const held: JetStreamManager = Object.create(jsm);
    const streams = Object.create(jsm.streams) as typeof jsm.streams;
    streams.info = (...a: Parameters<typeof jsm.streams.info>) =>
      hold ? new Promise(() => {}) : jsm.streams.info(...a);
    Object.defineProperty(held, 'streams', { value: streams });
    const c = new UserCache(store.bucket('users'), held, 'sealbus_users', () => {});
    c.start(50);
    try {
      await waitFor(() => c.lookup(hex(32)) === null || undefined, { what: 'vouching' });
      hold = true;
      const t0 = performance.now();
      await waitFor(() => c.lookup(hex(32)) === undefined || undefined, {
        what: 'no longer vouching',
        intervalMs: 10,
      });
      const after = performance.now() - t0;
      assert.ok(
        after <= USER_CACHE_BOUND_MS + 150,
        `vouched ${after.toFixed(0)} ms after the stall`
      );
      // A change while it cannot prove itself: never served stale.
      const key = hex(32);
      await other.addUser({ sign_pub: key, handle: 'during-stall', role: 'member' });
      await other.revokeUser(key);
      await sleep(USER_CACHE_BOUND_MS);
      assert.equal(c.lookup(key), undefined);
      hold = false;
      await waitFor(() => c.lookup(key)?.status === 'revoked' || undefined, { what: 'back' });
    } finally {
      await c.stop();
    }
  });

  test('the bucket purged and made again under the watch: the cache reloads, never answers from the old map', async () => {
    const key = hex(32);
    await other.addUser({ sign_pub: key, handle: 'purged', role: 'member' });
    await waitFor(() => cache.lookup(key)?.status === 'active' || undefined, { what: 'cached' });
    const jsm = await writer.jetstreamManager();
    const loads = cache.stats.loads;
    await jsm.streams.purge('KV_sealbus_users');
    await sleep(USER_CACHE_BOUND_MS + 50);
    // Purged: no message says so to a watch; the cache must not answer "active".
    assert.notEqual(cache.lookup(key)?.status, 'active');
    assert.equal(await store.userForRequest(key), null);
    await waitFor(() => cache.stats.loads > loads || undefined, { what: 'reloaded' });
    await waitFor(() => cache.lookup(key) === null || undefined, { what: 'vouching again' });
  });
});
