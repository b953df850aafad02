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

const norm = (ms: MemberRecord[]) => ms.map((m) => `${m.room}:${m.role}`).sort();

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

  test('a record a scan would refuse grants nothing from the cache (and one under the wrong key neither)', async () => {
    const u = hex(32);
    const good = hex(12);
    await other.put(`${good}.${u}`, enc(record(good, u, 'writer')));
    const bad = hex(12);
    await other.put(`${bad}.${u}`, new TextEncoder().encode('{"room":"not a record"'));
    const elsewhere = hex(12);
    // A valid record stored under another room's key.
    await other.put(`${elsewhere}.${u}`, enc(record(hex(12), u, 'owner')));
    const got = await cache.membershipsOf(u);
    assert.ok(got, 'answered from memory');
    assert.deepEqual(norm(got), [`${good}:writer`]);
    // Overwriting a good record with garbage removes the grant.
    await other.put(`${good}.${u}`, new TextEncoder().encode('garbage'));
    assert.deepEqual(norm((await cache.membershipsOf(u)) ?? [{ room: 'x' } as MemberRecord]), []);
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
