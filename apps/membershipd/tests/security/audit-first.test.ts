// A change is on the audit log before it is made: when the log cannot be
// written (disk full, a stream at its limit), nothing is changed — over HTTP
// (503 AUDIT_UNAVAILABLE) and from the node's CLI (exit 1) — and reads go
// on. A change that fails after its intent is recorded as `error`.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DiscardPolicy, type NatsConnection } from 'nats';
import { generateIdentity } from '@sealbus/crypto';
import { ControlClient, ControlError, Sealbus } from '@sealbus/client';
import { authorStatement } from '@sealbus/client/internal';
import { AUDIT_STREAM, type MembershipStore } from '@sealbus/store';
import { runMembershipd, startDaemon, type TestDaemon } from '@sealbus/testing';
import { adminOf, enrol, nodeStore } from '../helpers.js';

/** A refusal with the server's code (a 503 arrives as UNAVAILABLE with the server's code kept). */
const is = (status: number, code: string) => (e: unknown) =>
  e instanceof ControlError &&
  e.status === status &&
  (status === 503 ? e.serverCode === code : e.code === code);

describe('the audit record comes first', { timeout: 180_000 }, () => {
  let d: TestDaemon;
  let store: MembershipStore;
  let nc: NatsConnection;
  let app: NatsConnection;
  let admin: ControlClient;

  /** The audit stream takes nothing more (as on a full disk), or `room` more; the rest of the store works. */
  const freezeAudit = async (room = 0) => {
    const jsm = await nc.jetstreamManager();
    const info = await jsm.streams.info(AUDIT_STREAM);
    await jsm.streams.update(AUDIT_STREAM, {
      ...info.config,
      max_msgs: info.state.messages + room,
      discard: DiscardPolicy.New,
    });
  };
  const thawAudit = async () => {
    const jsm = await nc.jetstreamManager();
    const info = await jsm.streams.info(AUDIT_STREAM);
    await jsm.streams.update(AUDIT_STREAM, {
      ...info.config,
      max_msgs: -1,
      discard: DiscardPolicy.Old,
    });
  };
  const auditCount = async () =>
    (await (await nc.jetstreamManager()).streams.info(AUDIT_STREAM)).state.messages;

  before(async () => {
    d = await startDaemon();
    ({ store, nc, app } = await nodeStore(d));
    admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
  });
  after(async () => {
    await thawAudit().catch(() => {});
    admin?.close();
    await nc?.close();
    await app?.close();
    await d?.dispose();
  });

  test('with the audit log unwritable, HTTP changes are refused and change nothing; reads go on', async () => {
    const { id: member, ctl: memberCtl } = await enrol(admin, d, 'af-member');
    const bus = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity: member,
    });
    const kept = await bus.createRoom({
      subject: 'af.kept',
      policy: { encrypt: true, persist: false, sign: true },
    });
    const outsider = generateIdentity();
    await freezeAudit();
    try {
      const before = await auditCount();
      const x = generateIdentity();
      await assert.rejects(
        admin.addUser({ sign_pub: x.signPubHex, handle: 'af-x', role: 'member' }),
        is(503, 'AUDIT_UNAVAILABLE')
      );
      assert.equal(await store.getUser(x.signPubHex), null, 'no user written');
      await assert.rejects(admin.revokeUser(member.signPubHex), is(503, 'AUDIT_UNAVAILABLE'));
      assert.equal((await store.getUser(member.signPubHex))?.status, 'active', 'not revoked');
      await assert.rejects(
        bus.createRoom({
          subject: 'af.never',
          policy: { encrypt: true, persist: false, sign: true },
        }),
        is(503, 'AUDIT_UNAVAILABLE')
      );
      assert.deepEqual(
        (await memberCtl.listMyRooms()).map((r) => r.subject),
        ['af.kept'],
        'no room written'
      );
      await assert.rejects(bus.deleteRoom(kept.id), is(503, 'AUDIT_UNAVAILABLE'));
      assert.notEqual(await store.rooms.get(kept.id), null, 'not deleted');
      await assert.rejects(
        bus.invite(kept.id, outsider.signPubHex),
        (e: unknown) => e instanceof Error // unknown user or 503: either way nothing written
      );
      assert.equal((await store.rooms.members(kept.id)).length, 1);
      // Signed reads need no audit record.
      assert.equal((await memberCtl.me()).sign_pub, member.signPubHex);
      assert.equal((await admin.listUsers()).length >= 2, true);
      assert.equal(await auditCount(), before, 'the log took nothing');
    } finally {
      await thawAudit();
      await bus.close();
      memberCtl.close();
    }
    // The log writable again: the same change goes through, intent first.
    const y = generateIdentity();
    await admin.addUser({ sign_pub: y.signPubHex, handle: 'af-y', role: 'member' });
    const recs = (await store.audit.tail(100)).filter((r) => r.target === y.signPubHex);
    assert.deepEqual(
      recs.map((r) => r.outcome),
      ['intent', 'ok']
    );
  });

  test('from the CLI: exit 1, "nothing was changed", and nothing is', async () => {
    const x = generateIdentity();
    const { id: victim } = await enrol(admin, d, 'af-cli-victim');
    await freezeAudit();
    try {
      const add = await runMembershipd(
        [
          'user',
          'add',
          '--data',
          d.dataDir,
          '--handle',
          'af-cli',
          '--sign-pub',
          x.signPubHex,
          '--role',
          'member',
        ],
        { timeoutMs: 60_000 }
      );
      assert.equal(add.code, 1, add.stdout);
      assert.match(add.stderr, /nothing was changed/);
      assert.equal(await store.getUser(x.signPubHex), null);
      const revoke = await runMembershipd(
        ['user', 'revoke', '--data', d.dataDir, victim.signPubHex],
        { timeoutMs: 60_000 }
      );
      assert.equal(revoke.code, 1, revoke.stdout);
      assert.match(revoke.stderr, /nothing was changed/);
      assert.equal((await store.getUser(victim.signPubHex))?.status, 'active');
    } finally {
      await thawAudit();
    }
  });

  test('an outcome that cannot be recorded: 500 (not a 503 to fail over on), and a revocation still takes effect', async () => {
    const { id: victim } = await enrol(admin, d, 'af-outcome-victim');
    const vbus = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity: victim,
    });
    const revoked = new Promise<string>((resolve) => vbus.on('revoked', resolve));
    await freezeAudit(1); // the intent fits, the outcome does not
    try {
      const t0 = Date.now();
      const err = await admin.revokeUser(victim.signPubHex).then(
        () => null,
        (e: unknown) => e as ControlError
      );
      assert.ok(err instanceof ControlError);
      assert.deepEqual([err.status, err.code], [500, 'AUDIT_OUTCOME_UNRECORDED']);
      assert.ok(Date.now() - t0 >= 4_000, 'the outcome append was retried first');
      assert.equal((await store.getUser(victim.signPubHex))?.status, 'revoked');
      // Its effect went out anyway: the revoked client was cut and told
      // (generous: a loaded CI machine once took more than 10 s).
      assert.equal(
        await Promise.race([revoked, new Promise((r) => setTimeout(() => r('none'), 30_000))]),
        'REVOKED_KEY'
      );
    } finally {
      await thawAudit();
      await vbus.close();
    }
    const recs = (await store.audit.tail(100)).filter((r) => r.target === victim.signPubHex);
    assert.deepEqual(
      recs.filter((r) => r.action === 'user.revoke').map((r) => r.outcome),
      ['intent'],
      'the intent is on the record'
    );
  });

  test("a statement that is not the owner's is refused before anything is recorded", async () => {
    const { id: member, ctl } = await enrol(admin, d, 'af-forger');
    const other = generateIdentity();
    const before = await auditCount();
    for (let i = 0; i < 5; i++) {
      const id = `${i}`.repeat(24);
      const policy = { encrypt: false, persist: false, sign: true };
      const statement = authorStatement(other.signSeed, null, {
        room: id,
        subject: `af.forged${i}`,
        policy,
        owner: member.signPubHex,
        epoch: 0,
        key: null,
        members: [[member.signPubHex, 'owner']],
      });
      await assert.rejects(
        ctl.createRoom({ id, subject: `af.forged${i}`, policy, statement }),
        is(400, 'BAD_STATEMENT')
      );
    }
    assert.equal(await auditCount(), before, 'five refusals, no record');
    ctl.close();
  });

  test('a change that fails after its intent is recorded as an error', async () => {
    const x = generateIdentity();
    await admin.addUser({ sign_pub: x.signPubHex, handle: 'af-twice', role: 'member' });
    await assert.rejects(
      admin.addUser({ sign_pub: x.signPubHex, handle: 'af-twice', role: 'member' }),
      is(409, 'CONFLICT')
    );
    const recs = (await store.audit.tail(100)).filter((r) => r.target === x.signPubHex);
    assert.deepEqual(
      recs.map((r) => [r.outcome, r.detail?.code ?? null]),
      [
        ['intent', null],
        ['ok', null],
        ['intent', null],
        ['error', 'CONFLICT'],
      ]
    );
    assert.equal(recs[2]!.request_id, recs[3]!.request_id);
    // From the CLI too: a revoke of nobody is an intent and its error.
    const nobody = generateIdentity().signPubHex;
    const r = await runMembershipd(['user', 'revoke', '--data', d.dataDir, nobody]);
    assert.equal(r.code, 1);
    const cli = (await store.audit.tail(100)).filter((x) => x.target === nobody);
    assert.deepEqual(
      cli.map((x) => [x.via, x.outcome, x.detail?.code ?? null]),
      [
        ['cli', 'intent', null],
        ['cli', 'error', 'NOT_FOUND'],
      ]
    );
    assert.equal(cli[0]!.request_id, cli[1]!.request_id);
  });
});
