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
import { encodePublicIdentity, generateIdentity, signKeyBinding, toHex } from '@sealbus/crypto';
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

  test('NATS keys (the callout read): the store answer from memory for users, sign keys, unknown and revoked keys, a moved index row, rows written around the store; unreadable ones left to the store', async () => {
    const rawUsers: KV = await writer.jetstream().views.kv('sealbus_users', { bindOnly: true });
    const rawIndex: KV = await writer.jetstream().views.kv('sealbus_nats_keys', { bindOnly: true });
    const settle = () => sleep(USER_CACHE_BOUND_MS + 50);
    /** The cache's answer, which must be the store's (read without a cache, by the other connection). */
    const both = async (natsPub: string) => {
      const mem = cache.lookupNatsKey(natsPub);
      const direct = await other.userByNatsKey(natsPub);
      const via = await store.userByNatsKey(natsPub);
      const who = (l: typeof direct | undefined) =>
        l === undefined
          ? 'undefined'
          : l.kind === 'unknown'
            ? 'unknown'
            : `${l.kind}:${l.user.sign_pub}:${l.user.status}`;
      assert.equal(who(via), who(direct), 'through the store with its cache');
      return { mem: who(mem), direct: who(direct) };
    };
    const x = generateIdentity();
    await other.addUser({ public: encodePublicIdentity(x), handle: 'x', role: 'member' });
    await settle();
    const hits0 = cache.stats.hits;
    assert.deepEqual(await both(x.natsPubHex), {
      mem: `user:${x.signPubHex}:active`,
      direct: `user:${x.signPubHex}:active`,
    });
    assert.deepEqual(await both(x.signPubHex), {
      mem: `sign_key:${x.signPubHex}:active`,
      direct: `sign_key:${x.signPubHex}:active`,
    });
    assert.deepEqual(await both(hex(32)), { mem: 'unknown', direct: 'unknown' });
    assert.ok(cache.stats.hits >= hits0 + 3, 'answered from memory');
    // Revoked: still the user (the callout refuses it for its status).
    await other.revokeUser(x.signPubHex);
    await settle();
    assert.deepEqual(await both(x.natsPubHex), {
      mem: `user:${x.signPubHex}:revoked`,
      direct: `user:${x.signPubHex}:revoked`,
    });
    // The revoked user's key taken over by another (the store moves the
    // row): two records name the key, the index says whose it is.
    const y = generateIdentity();
    await other.addUser({ sign_pub: y.signPubHex, handle: 'y', role: 'member' });
    await other.setUserKeys(y.signPubHex, {
      kex_pub: y.kexPubHex,
      nats_pub: x.natsPubHex,
      binding: toHex(signKeyBinding({ ...y, natsPub: x.natsPub })),
    });
    await settle();
    assert.deepEqual(await both(x.natsPubHex), {
      mem: `user:${y.signPubHex}:active`,
      direct: `user:${y.signPubHex}:active`,
    });
    // Written around the store: an index row pointing a key at a user whose
    // record names another key counts for nothing; a row pointing the
    // taken key back at the revoked user is not a way in for that record.
    const stray = hex(32);
    await rawIndex.put(stray, new TextEncoder().encode(JSON.stringify({ sign_pub: y.signPubHex })));
    await rawIndex.put(
      x.natsPubHex,
      new TextEncoder().encode(JSON.stringify({ sign_pub: x.signPubHex }))
    );
    await settle();
    assert.deepEqual(await both(stray), { mem: 'unknown', direct: 'unknown' });
    assert.deepEqual(await both(x.natsPubHex), {
      mem: `user:${x.signPubHex}:revoked`,
      direct: `user:${x.signPubHex}:revoked`,
    });
    // A record naming a key with no row (the row deleted around the store): nobody.
    await rawIndex.delete(x.natsPubHex);
    await settle();
    assert.deepEqual(await both(x.natsPubHex), { mem: 'unknown', direct: 'unknown' });
    // Rows and records the store cannot read: the cache steps aside, the store throws.
    await rawIndex.put(stray, new TextEncoder().encode('not json'));
    const broken = hex(32);
    await rawIndex.put(
      broken,
      new TextEncoder().encode(JSON.stringify({ sign_pub: x.signPubHex.slice(2) + 'zz' }))
    );
    await settle();
    assert.equal(cache.lookupNatsKey(stray), undefined);
    assert.equal(cache.lookupNatsKey(broken), undefined);
    await assert.rejects(store.userByNatsKey(stray));
    await assert.rejects(store.userByNatsKey(broken));
    const owner = generateIdentity();
    await rawIndex.put(
      owner.natsPubHex,
      new TextEncoder().encode(JSON.stringify({ sign_pub: owner.signPubHex }))
    );
    await rawUsers.put(owner.signPubHex, new TextEncoder().encode('{"half": "a record"'));
    await settle();
    assert.equal(cache.lookupNatsKey(owner.natsPubHex), undefined);
    await assert.rejects(store.userByNatsKey(owner.natsPubHex));
    for (const k of [stray, broken, owner.natsPubHex]) await rawIndex.delete(k);
    await rawUsers.delete(owner.signPubHex);
    await settle();
    assert.deepEqual(await both(stray), { mem: 'unknown', direct: 'unknown' });
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
