// The member cache against a real nats-server: every lookup right after an
// acknowledged write (by another connection: another node's writer) sees
// it, as a scan does; records a scan would refuse grant nothing; a watch
// whose consumer is deleted under it is rebuilt, and lookups meanwhile
// scan rather than answer stale.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect, type KV, type NatsConnection } from 'nats';
import type { MemberRecord } from '@sealbus/protocol';
import { startNats, waitFor, type TestNats } from '@sealbus/testing';
import type { MemberCache } from './membercache.js';
import { scanMemberships } from './rooms.js';
import { MembershipStore } from './store.js';

const hex = (n: number) => randomBytes(n).toString('hex');
const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

function record(room: string, user: string, role: 'owner' | 'writer' | 'reader'): MemberRecord {
  return {
    room,
    sign_pub: user,
    role,
    subject: `cache.${room}`,
    persist: false,
    added_at: new Date().toISOString(),
    added_by: user,
    expires_at: null,
  };
}

const norm = (ms: readonly MemberRecord[]) => ms.map((m) => `${m.room}:${m.role}`).sort();

describe('member cache', { timeout: 120_000 }, () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let writer: NatsConnection;
  let store: MembershipStore;
  let cache: MemberCache;
  let members: KV;
  let other: KV;

  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
    writer = await connect({ servers: nats.url });
    store = await MembershipStore.open(nc);
    members = store.bucket('members');
    // Writes come from another connection, as another node's would.
    other = await writer.jetstream().views.kv('sealbus_members', { bindOnly: true });
    cache = store.startMemberCache(() => {});
    await waitFor(() => cache.loaded || undefined, { what: 'the cache loaded' });
  });
  after(async () => {
    await cache?.stop();
    await writer?.close();
    await nc?.close();
    await nats?.dispose();
  });

  test('every lookup right after an acknowledged write sees it (puts, role changes, deletes, purges by another connection), as a scan does', async () => {
    const users = Array.from({ length: 5 }, () => hex(32));
    const rooms = Array.from({ length: 20 }, () => hex(12));
    const hits0 = cache.stats.hits;
    let ops = 0;
    for (let i = 0; i < 300; i++) {
      const u = users[i % users.length]!;
      const r = rooms[(i * 7) % rooms.length]!;
      const k = `${r}.${u}`;
      const op = i % 5;
      if (op === 3) await other.delete(k);
      else if (op === 4) await other.purge(k);
      else
        await other.put(k, enc(record(r, u, op === 0 ? 'reader' : op === 1 ? 'writer' : 'owner')));
      ops++;
      // Right after the ack: the cache's answer, then a scan's.
      const viaStore = await store.membershipsOf(u);
      const scanned = await scanMemberships(members, u);
      assert.deepEqual(
        norm(viaStore),
        norm(scanned),
        `after op ${i} (${['reader', 'writer', 'owner', 'delete', 'purge'][op]} ${k})`
      );
    }
    const hits = cache.stats.hits - hits0;
    console.log(
      `# ${ops} writes, ${hits} of ${ops} lookups from memory, misses so far ${cache.stats.misses}`
    );
    assert.ok(hits >= ops * 0.9, `only ${hits} of ${ops} lookups came from the cache`);
  });

  test('unchanged memberships come back as the same frozen list (what the callout remembers grants by); a change to them, and only to them, makes a new one', async () => {
    const [u, v] = [hex(32), hex(32)];
    const [r1, r2] = [hex(12), hex(12)];
    await other.put(`${r1}.${u}`, enc(record(r1, u, 'reader')));
    await other.put(`${r1}.${v}`, enc(record(r1, v, 'reader')));
    const a = await cache.membershipsOf(u);
    assert.ok(a && Object.isFrozen(a));
    assert.equal(await cache.membershipsOf(u), a);
    // Another user's change leaves this user's list as it was.
    await other.put(`${r2}.${v}`, enc(record(r2, v, 'writer')));
    assert.equal(await cache.membershipsOf(u), a);
    assert.deepEqual(
      norm((await cache.membershipsOf(v))!),
      norm([record(r1, v, 'reader'), record(r2, v, 'writer')])
    );
    // A role change of this user's: a new list with it.
    await other.put(`${r1}.${u}`, enc(record(r1, u, 'writer')));
    const b = await cache.membershipsOf(u);
    assert.notEqual(b, a);
    assert.deepEqual(norm(b!), [`${r1}:writer`]);
    assert.deepEqual(norm(a!), [`${r1}:reader`], 'the old list is not changed under its holder');
    await other.delete(`${r1}.${u}`);
    assert.deepEqual(await cache.membershipsOf(u), []);
  });

  test('a record a scan would refuse, or one naming another key, makes the cache step aside: the scan decides (CORRUPT: the callout denies)', async () => {
    const u = hex(32);
    const good = hex(12);
    await other.put(`${good}.${u}`, enc(record(good, u, 'writer')));
    assert.deepEqual(norm((await cache.membershipsOf(u))!), [`${good}:writer`]);
    const bad = hex(12);
    await other.put(`${bad}.${u}`, new TextEncoder().encode('{"room":"not a record"'));
    assert.equal(await cache.membershipsOf(u), null, 'a corrupt record: no answer from memory');
    await assert.rejects(store.membershipsOf(u), /not JSON|CORRUPT/, 'the scan refuses it');
    // Fixed: the cache answers again.
    await other.put(`${bad}.${u}`, enc(record(bad, u, 'reader')));
    assert.deepEqual(
      norm((await cache.membershipsOf(u))!),
      [`${bad}:reader`, `${good}:writer`].sort()
    );
    // A valid record stored under another room's key: the old grant is gone
    // and the cache steps aside.
    await other.put(`${good}.${u}`, enc(record(hex(12), u, 'owner')));
    assert.equal(await cache.membershipsOf(u), null);
    await other.delete(`${good}.${u}`);
    assert.deepEqual(norm((await cache.membershipsOf(u))!), [`${bad}:reader`]);
  });

  test('messages removed under the watch (a filtered stream purge, a message deleted by sequence) or the bucket made again: the cache reloads, never answers from the old map', async () => {
    const jsm = await writer.jetstreamManager();
    const u = hex(32);
    const r1 = hex(12);
    const r2 = hex(12);
    await other.put(`${r1}.${u}`, enc(record(r1, u, 'writer')));
    const ack = await other.put(`${r2}.${u}`, enc(record(r2, u, 'writer')));
    assert.equal((await cache.membershipsOf(u))?.length, 2);
    const loads0 = cache.stats.loads;
    // Deleted by sequence (nats stream rmm): no watch entry says so.
    await jsm.streams.deleteMessage('KV_sealbus_members', ack);
    const after = await store.membershipsOf(u);
    assert.deepEqual(norm(after), [`${r1}:writer`], 'the answer (cache or scan) drops it');
    await waitFor(() => (cache.loaded && cache.stats.loads > loads0) || undefined, {
      what: 'the reload',
    });
    assert.deepEqual(norm((await cache.membershipsOf(u)) ?? []), [`${r1}:writer`]);
    // A filtered purge of one room's memberships.
    await jsm.streams.purge('KV_sealbus_members', { filter: `$KV.sealbus_members.${r1}.>` });
    assert.deepEqual(await store.membershipsOf(u), []);
    await waitFor(() => cache.loaded || undefined, { what: 'loaded again' });
    assert.deepEqual(
      norm((await cache.membershipsOf(u)) ?? [{ room: 'stale' } as MemberRecord]),
      []
    );
  });

  test('the watch consumer deleted under it: lookups stay right (scan or rebuilt cache), and the cache comes back', async () => {
    const u = hex(32);
    const r1 = hex(12);
    await other.put(`${r1}.${u}`, enc(record(r1, u, 'reader')));
    const jsm = await writer.jetstreamManager();
    const loads0 = cache.stats.loads;
    for await (const c of await jsm.consumers.list('KV_sealbus_members'))
      await jsm.consumers.delete('KV_sealbus_members', c.name).catch(() => {});
    // Writes and lookups while the watch is gone or being rebuilt.
    const rooms = [r1];
    for (let i = 0; i < 20; i++) {
      const r = hex(12);
      rooms.push(r);
      await other.put(`${r}.${u}`, enc(record(r, u, 'writer')));
      const got = await store.membershipsOf(u);
      assert.equal(got.length, rooms.length, `lookup ${i}`);
      await new Promise((w) => setTimeout(w, 100));
    }
    await waitFor(
      async () => {
        const r = hex(12);
        await other.put(`${r}.${u}`, enc(record(r, u, 'writer')));
        rooms.push(r);
        const got = await cache.membershipsOf(u);
        return got && got.length === rooms.length ? true : undefined;
      },
      { what: 'the cache answering again', timeoutMs: 30_000 }
    );
    console.log(
      `# watch loads: ${loads0} before, ${cache.stats.loads} after the consumer was deleted`
    );
  });

  test('stopped: the cache says nothing and the store scans', async () => {
    const u = hex(32);
    const r = hex(12);
    await other.put(`${r}.${u}`, enc(record(r, u, 'owner')));
    await cache.stop();
    assert.equal(await cache.membershipsOf(u), null);
    assert.deepEqual(norm(await store.membershipsOf(u)), [`${r}:owner`]);
  });
});
