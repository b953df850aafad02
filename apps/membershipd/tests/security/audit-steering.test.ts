// Attack replay: an admin (or anyone who can get a request through) choosing
// X-Request-Id to steer the audit log. Before, the audit append's JetStream
// message id was built from it, so a second change under the same id was
// dropped as a duplicate: a backdoor admin added without a trace.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from 'nats';
import { generateIdentity, type Identity } from '@sealbus/crypto';
import { ControlClient } from '@sealbus/client';
import type { MembershipStore } from '@sealbus/store';
import { startDaemon, type TestDaemon } from '@sealbus/testing';
import { adminOf, enrol, nodeStore } from '../helpers.js';
import { sendRaw, signRaw } from './attack.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('audit log: no client-chosen id steers it', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let admin: Identity;
  let adminCtl: ControlClient;
  let store: MembershipStore;
  let nc: NatsConnection;
  let self: string;

  before(async () => {
    d = await startDaemon();
    admin = await adminOf(d);
    adminCtl = new ControlClient({ urls: [d.httpUrl], identity: admin });
    ({ store, nc } = await nodeStore(d));
    self = new URL(d.httpUrl).host;
  });
  after(async () => {
    adminCtl?.close();
    await nc?.close();
    await d?.dispose();
  });

  /** POST /users as `signer` with this X-Request-Id (or none). */
  const addAdmin = (signer: Identity, requestId: string | null) => {
    const id = generateIdentity();
    const body = JSON.stringify({
      sign_pub: id.signPubHex,
      kex_pub: id.kexPubHex,
      handle: `h${id.signPubHex.slice(0, 8)}`,
      role: 'admin',
    });
    const headers = signRaw(signer, 'POST', self, '/users', body);
    if (requestId !== null) headers['x-request-id'] = requestId;
    return sendRaw(d.httpUrl, 'POST', '/users', headers, body).then((r) => ({ ...r, id }));
  };
  /** A change's outcome records (each follows its intent under the same request id). */
  const records = async (target: string) => {
    const all = (await store.audit.tail(100_000)).filter((r) => r.target === target);
    const intents = all.filter((r) => r.outcome === 'intent');
    const outcomes = all.filter((r) => r.outcome !== 'intent');
    assert.deepEqual(
      intents.map((r) => [r.request_id, r.client_request_id]),
      outcomes.map((r) => [r.request_id, r.client_request_id]),
      'each outcome has its intent, with the same ids'
    );
    return outcomes;
  };

  test('two admin requests with the same X-Request-Id are both applied and both audited', async () => {
    const first = await addAdmin(admin, 'steer-1');
    const second = await addAdmin(admin, 'steer-1');
    for (const r of [first, second]) {
      assert.equal(r.status, 201, JSON.stringify(r.json));
      const recs = await records(r.id.signPubHex);
      assert.equal(recs.length, 1, 'audited once');
      const [rec] = recs;
      assert.equal(rec!.action, 'user.add');
      assert.equal(rec!.outcome, 'ok');
      assert.equal(rec!.client_request_id, 'steer-1');
      // The record's own id is the daemon's, echoed to the client.
      assert.match(rec!.request_id, UUID);
      assert.equal(r.headers['x-request-id'], rec!.request_id);
    }
    const [a] = await records(first.id.signPubHex);
    const [b] = await records(second.id.signPubHex);
    assert.notEqual(a!.request_id, b!.request_id);
  });

  test("reusing the daemon's own request id of an earlier change does not hide a later one", async () => {
    const first = await addAdmin(admin, null);
    const taken = String(first.headers['x-request-id']);
    const second = await addAdmin(admin, taken);
    assert.equal(second.status, 201);
    const [rec] = await records(second.id.signPubHex);
    assert.equal(rec!.client_request_id, taken);
    assert.notEqual(rec!.request_id, taken);
  });

  test('an X-Request-Id that is not 1-128 visible ASCII is dropped, the change still audited', async () => {
    for (const bad of ['x'.repeat(129), 'has space', '']) {
      const r = await addAdmin(admin, bad);
      assert.equal(r.status, 201, JSON.stringify(bad));
      const recs = await records(r.id.signPubHex);
      assert.equal(recs.length, 1);
      assert.equal(recs[0]!.client_request_id, undefined, JSON.stringify(bad));
      assert.match(recs[0]!.request_id, UUID);
    }
    const longest = 'y'.repeat(128);
    const ok = await addAdmin(admin, longest);
    assert.equal((await records(ok.id.signPubHex))[0]!.client_request_id, longest);
  });

  test('denials carry the client id too, and repeated denials under one id are each recorded', async () => {
    const { id: member } = await enrol(adminCtl, d, 'steer-member');
    const before = (await store.audit.tail(100_000)).length;
    for (let i = 0; i < 2; i++) {
      const r = await addAdmin(member, 'steer-2');
      assert.deepEqual([r.status, r.code], [403, 'FORBIDDEN']);
      assert.equal(await store.getUser(r.id.signPubHex), null);
    }
    const all = await store.audit.tail(100_000);
    assert.equal(all.length, before + 2);
    for (const rec of all.slice(-2)) {
      assert.deepEqual(
        [rec.action, rec.outcome, rec.actor, rec.client_request_id],
        ['user.add', 'denied', member.signPubHex, 'steer-2']
      );
    }
  });
});
