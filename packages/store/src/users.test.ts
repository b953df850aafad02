import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type NatsConnection } from 'nats';
import {
  CryptoError,
  encodePublicIdentity,
  generateIdentity,
  publicIdentityOf,
  signKeyBinding,
  toHex,
  type Identity,
} from '@sealbus/crypto';
import { startNats, type TestNats } from '@sealbus/testing';
import { StoreError } from './errors.js';
import { encodeJson } from './kv.js';
import { MembershipStore } from './store.js';

const isStore = (code: string) => (e: unknown) => e instanceof StoreError && e.code === code;
const isCrypto = (code: string) => (e: unknown) => e instanceof CryptoError && e.code === code;
const keysOf = (id: Identity) => ({
  kex_pub: id.kexPubHex,
  nats_pub: id.natsPubHex,
  binding: toHex(signKeyBinding(id)),
});

describe('users: bindings and the NATS key index', { timeout: 60_000 }, () => {
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

  test('a token registers a bound user, found by its NATS key in O(1) reads', async () => {
    const id = generateIdentity();
    const u = await store.addUser({
      public: encodePublicIdentity(id),
      handle: 'tok',
      role: 'member',
    });
    assert.equal(u.sign_pub, id.signPubHex);
    assert.equal(u.kex_pub, id.kexPubHex);
    assert.equal(u.nats_pub, id.natsPubHex);
    assert.equal(u.binding, publicIdentityOf(id).bindingHex);
    assert.equal(u.bound, true);
    const found = await store.userByNatsKey(id.natsPubHex);
    assert.equal(found.kind, 'user');
    assert.equal(found.kind === 'user' && found.user.sign_pub, id.signPubHex);
    // Its sign key presented as a NATS key is recognised as such.
    const asSign = await store.userByNatsKey(id.signPubHex);
    assert.equal(asSign.kind, 'sign_key');
    assert.equal((await store.userByNatsKey(generateIdentity().natsPubHex)).kind, 'unknown');

    // O(1): the reads a lookup makes, counted on the wire (every KV read is
    // one JetStream API request, seen by a second connection subscribed to
    // $JS.API.>, and one reply on the store's connection), are the same
    // with 1 user as with 200.
    const spy = await connect({ servers: nats.url });
    try {
      const seen: string[] = [];
      spy.subscribe('$JS.API.>', { callback: (_err, m) => void seen.push(m.subject) });
      await spy.flush();
      const reads = async (natsPub: string) => {
        await spy.flush(); // the copies of earlier requests are in, and left out
        seen.length = 0;
        const s0 = nc.stats();
        const r = await store.userByNatsKey(natsPub);
        const s1 = nc.stats();
        // Every request was answered, so the server had copied it to the
        // spy already: its PONG comes after them.
        await spy.flush();
        assert.equal(r.kind, 'user');
        return {
          requests: [...seen].sort(),
          sent: s1.outMsgs - s0.outMsgs,
          received: s1.inMsgs - s0.inMsgs,
        };
      };
      assert.equal((await store.listUsers()).length, 1, 'the only user so far');
      const one = await reads(id.natsPubHex);
      assert.deepEqual([one.sent, one.received], [one.requests.length, one.requests.length]);
      const others: Identity[] = [];
      for (let i = 0; i < 199; i += 50) {
        const batch = Array.from({ length: Math.min(50, 199 - i) }, () => generateIdentity());
        await Promise.all(
          batch.map((o, j) =>
            store.addUser({
              public: encodePublicIdentity(o),
              handle: `tok${i + j}`,
              role: 'member',
            })
          )
        );
        others.push(...batch);
      }
      assert.equal((await store.listUsers()).length, 200);
      assert.deepEqual(await reads(id.natsPubHex), one, 'the first user, among 200');
      const last = await reads(others.at(-1)!.natsPubHex);
      assert.deepEqual(
        [last.requests.length, last.sent, last.received],
        [one.requests.length, one.sent, one.received],
        'the last user, among 200'
      );
      // And a handful: the sign-key check, the index row, the owner's record.
      assert.ok(one.requests.length >= 1 && one.requests.length <= 3, one.requests.join(' '));
    } finally {
      await spy.close();
    }
  });

  test('a bad binding or token is refused with a typed error and nothing is written', async () => {
    const id = generateIdentity();
    const other = generateIdentity();
    const raw = Buffer.from(encodePublicIdentity(id).slice(6), 'base64url');
    raw[40]! ^= 1; // kex_pub no longer what the binding covers
    await assert.rejects(
      store.addUser({ public: 'sbid1.' + raw.toString('base64url'), handle: 'x', role: 'member' }),
      isCrypto('BAD_BINDING')
    );
    await assert.rejects(
      store.addUser({ public: 'sbid1.short', handle: 'x', role: 'member' }),
      isCrypto('BAD_TOKEN')
    );
    await assert.rejects(
      store.addUser({
        sign_pub: id.signPubHex,
        ...keysOf(id),
        nats_pub: other.natsPubHex,
        handle: 'x',
        role: 'member',
      }),
      isCrypto('BAD_BINDING')
    );
    await assert.rejects(
      store.addUser({
        public: encodePublicIdentity(id),
        sign_pub: id.signPubHex,
        handle: 'x',
        role: 'member',
      }),
      isStore('INVALID')
    );
    assert.equal(await store.getUser(id.signPubHex), null);
    assert.equal(await store.bucket('natsKeys').get(id.natsPubHex), null);
    assert.equal(await store.bucket('natsKeys').get(other.natsPubHex), null);
  });

  test('an unbound user binds itself; the same keys again change nothing; other keys conflict', async () => {
    const id = generateIdentity();
    const u = await store.addUser({ sign_pub: id.signPubHex, handle: 'legacy', role: 'member' });
    assert.deepEqual([u.kex_pub, u.nats_pub, u.binding, u.bound], [null, null, null, false]);
    assert.equal((await store.userByNatsKey(id.natsPubHex)).kind, 'unknown');
    const first = await store.setUserKeys(id.signPubHex, keysOf(id));
    assert.equal(first.changed, true);
    assert.equal(first.user.bound, true);
    assert.equal(first.user.nats_pub, id.natsPubHex);
    const again = await store.setUserKeys(id.signPubHex, keysOf(id));
    assert.equal(again.changed, false);
    const found = await store.userByNatsKey(id.natsPubHex);
    assert.ok(found.kind === 'user' && found.user.sign_pub === id.signPubHex);

    // A binding signed by someone else for this record is refused.
    const other = generateIdentity();
    await assert.rejects(store.setUserKeys(id.signPubHex, keysOf(other)), isCrypto('BAD_BINDING'));
    // A different kex_pub than the registered one: conflict, record unchanged.
    const k = generateIdentity();
    const withKex = await store.addUser({
      sign_pub: k.signPubHex,
      kex_pub: generateIdentity().kexPubHex,
      handle: 'haskex',
      role: 'member',
    });
    await assert.rejects(store.setUserKeys(k.signPubHex, keysOf(k)), isStore('CONFLICT'));
    assert.deepEqual(await store.getUser(k.signPubHex), withKex);
  });

  test("nobody can claim another active user's NATS key", async () => {
    const victim = generateIdentity();
    await store.addUser({ public: encodePublicIdentity(victim), handle: 'victim', role: 'member' });
    const squatter = generateIdentity();
    await store.addUser({ sign_pub: squatter.signPubHex, handle: 'squatter', role: 'member' });
    // The squatter signs a binding naming the victim's NATS key: a valid
    // signature of its own, but the key is taken.
    const claim = { ...squatter, natsPub: victim.natsPub };
    await assert.rejects(
      store.setUserKeys(squatter.signPubHex, {
        kex_pub: squatter.kexPubHex,
        nats_pub: victim.natsPubHex,
        binding: toHex(signKeyBinding(claim)),
      }),
      isStore('CONFLICT')
    );
    const found = await store.userByNatsKey(victim.natsPubHex);
    assert.ok(found.kind === 'user' && found.user.sign_pub === victim.signPubHex);
    assert.equal((await store.getUser(squatter.signPubHex))!.bound, false);
  });

  test('rows written before bindings existed parse as unbound; the index can be rebuilt', async () => {
    const old = generateIdentity();
    await store.bucket('users').create(
      old.signPubHex,
      encodeJson({
        sign_pub: old.signPubHex,
        kex_pub: old.kexPubHex,
        handle: 'old',
        role: 'member',
        status: 'active',
        created_at: new Date().toISOString(),
        revoked_at: null,
      })
    );
    const u = await store.getUser(old.signPubHex);
    assert.deepEqual([u!.nats_pub, u!.binding, u!.bound, u!.expires_at], [null, null, false, null]);
    assert.equal((await store.userByNatsKey(old.signPubHex)).kind, 'sign_key');
    // A bound row whose index entry is missing (an archive from before the index).
    const bound = generateIdentity();
    await store.addUser({ public: encodePublicIdentity(bound), handle: 'b', role: 'member' });
    await store.bucket('natsKeys').purge(bound.natsPubHex);
    assert.equal((await store.userByNatsKey(bound.natsPubHex)).kind, 'unknown');
    assert.ok((await store.rebuildNatsKeyIndex()) >= 1);
    assert.equal((await store.userByNatsKey(bound.natsPubHex)).kind, 'user');
  });

  test('a stored row claiming bound without its keys is corrupt, not trusted', async () => {
    const id = generateIdentity();
    await store.bucket('users').create(
      id.signPubHex,
      encodeJson({
        sign_pub: id.signPubHex,
        kex_pub: null,
        nats_pub: null,
        binding: null,
        bound: true,
        handle: 'liar',
        role: 'member',
        status: 'active',
        created_at: new Date().toISOString(),
        revoked_at: null,
        expires_at: null,
      })
    );
    await assert.rejects(store.getUser(id.signPubHex), isStore('CORRUPT'));
    await store.bucket('users').purge(id.signPubHex);
  });
});
