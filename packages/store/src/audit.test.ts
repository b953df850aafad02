import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, type NatsConnection } from 'nats';
import type { AuditRecord } from '@sealbus/protocol';
import { startNats, type TestNats } from '@sealbus/testing';
import { AUDIT_STREAM, AuditLog } from './audit.js';
import { StoreError } from './errors.js';
import { MembershipStore } from './store.js';

const A = 'aa'.repeat(32);
const B = 'bb'.repeat(32);
const ACTIONS = ['user.add', 'user.revoke', 'room.create', 'room.member.add'];
const isCode = (code: string) => (e: unknown) => e instanceof StoreError && e.code === code;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('AuditLog.query', { timeout: 60_000 }, () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let store: MembershipStore;
  const early: AuditRecord[] = [];
  const late: AuditRecord[] = [];
  let t1 = 0;
  let n = 0;

  const append = async (into: AuditRecord[]) => {
    const i = n++;
    const r: AuditRecord = {
      time: new Date().toISOString(),
      request_id: `req-${i}`,
      actor: [A, B, null][i % 3]!,
      via: i % 3 === 2 ? 'cli' : 'http',
      action: ACTIONS[i % 4]!,
      target: null,
      outcome: i % 5 === 0 ? 'denied' : 'ok',
    };
    await store.audit.append(r);
    into.push(r);
  };

  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
    store = await MembershipStore.open(nc);
  });
  after(async () => {
    await nc?.close();
    await nats?.dispose();
  });

  test('an empty log answers nothing', async () => {
    assert.deepEqual(await store.audit.query({ since: 0 }), { records: [], truncated: false });
  });

  test('filters combine; times split the log where the records say; oldest first', async () => {
    // Enough records for several batches of reads.
    for (let i = 0; i < 150; i++) await append(early);
    await sleep(1_100);
    t1 = Date.now();
    await sleep(20);
    for (let i = 0; i < 25; i++) await append(late);
    const all = [...early, ...late];

    const q = async (o: Parameters<typeof store.audit.query>[0]) => store.audit.query(o);
    assert.deepEqual((await q({ limit: 1000 })).records, all);
    assert.deepEqual(await store.audit.tail(1000), all);
    const first100 = await q({});
    assert.equal(first100.records.length, 100, 'default limit');
    assert.equal(first100.truncated, true);
    assert.deepEqual(first100.records, all.slice(0, 100));

    assert.deepEqual((await q({ since: t1, limit: 1000 })).records, late);
    assert.deepEqual((await q({ until: t1, limit: 1000 })).records, early);
    const mid = Date.parse(early[100]!.time);
    const end = Date.parse(late[4]!.time);
    assert.deepEqual(
      (await q({ since: mid, until: end, limit: 1000 })).records,
      all.filter((r) => Date.parse(r.time) >= mid && Date.parse(r.time) <= end)
    );
    assert.deepEqual((await q({ since: Date.now() + 60_000 })).records, []);

    assert.deepEqual(
      (await q({ action: 'user.add', limit: 1000 })).records,
      all.filter((r) => r.action === 'user.add')
    );
    assert.deepEqual(
      (await q({ action: 'room.*', limit: 1000 })).records,
      all.filter((r) => r.action.startsWith('room.'))
    );
    assert.deepEqual(
      (await q({ action: 'room.member.*', limit: 1000 })).records,
      all.filter((r) => r.action.startsWith('room.member.'))
    );
    assert.deepEqual((await q({ action: 'user.nothing' })).records, []);
    assert.deepEqual(
      (await q({ actor: A, limit: 1000 })).records,
      all.filter((r) => r.actor === A)
    );
    assert.deepEqual(
      (await q({ outcome: 'denied', limit: 1000 })).records,
      all.filter((r) => r.outcome === 'denied')
    );
    const combined = late.filter(
      (r) => r.actor === B && r.action.startsWith('user.') && r.outcome === 'ok'
    );
    assert.ok(combined.length > 0);
    assert.deepEqual(
      (await q({ actor: B, action: 'user.*', outcome: 'ok', since: t1 })).records,
      combined
    );

    const adds = all.filter((r) => r.action === 'user.add');
    assert.deepEqual(await q({ action: 'user.add', limit: 3 }), {
      records: adds.slice(0, 3),
      truncated: true,
    });
    assert.deepEqual(await q({ action: 'user.add', limit: adds.length }), {
      records: adds,
      truncated: false,
    });
  });

  test('bad filters are INVALID, before anything is read', async () => {
    for (const o of [
      { action: 'User.add' },
      { action: 'user.*.add' },
      { action: '>' },
      { action: 'user.>' },
      { action: '*' },
      { actor: 'xyz' },
      { actor: A.toUpperCase() },
      { limit: 0 },
      { limit: 1.5 },
      { since: NaN },
      { since: 2, until: 1 },
    ]) {
      await assert.rejects(store.audit.query(o), isCode('INVALID'), JSON.stringify(o));
    }
  });

  test('a deadline that has passed gives up with UNAVAILABLE', async () => {
    await assert.rejects(
      store.audit.query({ limit: 1000, deadline: Date.now() - 1 }),
      isCode('UNAVAILABLE')
    );
  });
});

describe('AuditLog.append', { timeout: 60_000 }, () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let store: MembershipStore;
  const rec = (request_id: string): AuditRecord => ({
    time: new Date().toISOString(),
    request_id,
    client_request_id: 'same-id',
    actor: A,
    via: 'http',
    action: 'user.add',
    target: B,
    outcome: 'ok',
  });

  before(async () => {
    nats = await startNats();
    nc = await connect({ servers: nats.url });
    store = await MembershipStore.open(nc);
  });
  after(async () => {
    await nc?.close();
    await nats?.dispose();
  });

  test('two records with the same client request id are both stored', async () => {
    await store.audit.append(rec('r1'));
    await store.audit.append(rec('r2'));
    const tail = await store.audit.tail(10);
    assert.deepEqual(
      tail.map((r) => [r.request_id, r.client_request_id]),
      [
        ['r1', 'same-id'],
        ['r2', 'same-id'],
      ]
    );
  });

  test('a duplicate ack on the first attempt is CONFLICT, and nothing is added', async () => {
    const jsm = await nc.jetstreamManager();
    // Someone else took the id (a writer that could predict it): here, the
    // test seam hands out the same id twice.
    const log = new AuditLog(nc.jetstream(), jsm, { newMessageId: () => 'taken-id' });
    await log.append(rec('r3'));
    const before = (await jsm.streams.info(AUDIT_STREAM)).state.messages;
    await assert.rejects(log.append(rec('r4')), isCode('CONFLICT'));
    assert.equal((await jsm.streams.info(AUDIT_STREAM)).state.messages, before);
    assert.deepEqual(
      (await store.audit.tail(1)).map((r) => r.request_id),
      ['r3']
    );
  });

  test('a client request id outside 1-128 visible ASCII does not parse', async () => {
    for (const bad of ['', 'a b', 'x'.repeat(129), 'é', 'a\nb']) {
      await assert.rejects(
        store.audit.append({ ...rec('r5'), client_request_id: bad }),
        (e: unknown) => (e as Error).name === 'ValidationError',
        JSON.stringify(bad)
      );
    }
  });
});
