// The SDK's surface as an application meets it, against a real daemon:
// mistakes refused at the call with a code, one error family, strings and
// JSON in and out, messages as an async iterable, rooms found by subject.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { connect, nkeyAuthenticator } from 'nats';
import { encodePublicIdentity, generateIdentity, loadIdentity, natsUserKey } from '@sealbus/crypto';
import { startDaemon, waitFor, type TestDaemon } from '@sealbus/testing';
import { ControlClient } from './control.js';
import { ControlError, PublishError, SealbusError } from './errors.js';
import { TrustError } from './chain.js';
import { InsecureTransportError } from './secure.js';
import { Sealbus } from './sealbus.js';
import type { RoomMessage } from './roomstate.js';

const ENC = { encrypt: true, persist: false, sign: true };
const is = (code: string) => (e: unknown) => e instanceof SealbusError && e.code === code;

describe(
  'the SDK surface: errors where the mistake is made, and the shapes people expect',
  { timeout: 120_000 },
  () => {
    let d: TestDaemon;
    let admin: ControlClient;
    const closers: Array<() => Promise<unknown> | void> = [];
    const user = async (handle: string) => {
      const id = generateIdentity();
      await admin.addUser({ public: encodePublicIdentity(id), handle, role: 'member' });
      return id;
    };
    const bus = async (id: ReturnType<typeof generateIdentity>) => {
      const b = await Sealbus.connect({
        natsServers: [d.natsUrl],
        controlUrls: [d.httpUrl],
        identity: id,
      });
      closers.push(() => b.close());
      return b;
    };

    before(async () => {
      // A client 30 s behind signs requests "created" before a node that
      // keeps its nonces in memory started (SIGNED_BEFORE_START for 30 s
      // after a start): the replicated bucket takes them at any time.
      d = await startDaemon({ args: ['--replicated-nonces'] });
      admin = new ControlClient({
        urls: [d.httpUrl],
        identity: await loadIdentity(join(d.dataDir, 'admin.id')),
      });
    });
    after(async () => {
      for (const c of closers.reverse()) await Promise.resolve(c()).catch(() => {});
      admin?.close();
      await d?.dispose();
    });

    test('bad input is refused at the call: payloads, policies, sizes', async () => {
      const A = await bus(await user('bi-alice'));
      const room = await A.createRoom({ subject: 'bi.room', policy: ENC });
      for (const bad of [{}, 42, null, undefined, [1, 2], new ArrayBuffer(4)])
        await assert.rejects(A.publish(room.id, bad as never), is('BAD_INPUT'), String(bad));
      await assert.rejects(
        A.publish(room.id, new Uint8Array(2 * 1024 * 1024)),
        is('PAYLOAD_TOO_LARGE')
      );
      await assert.rejects(A.createRoom({ subject: 'bi.nopolicy' } as never), is('BAD_INPUT'));
      await assert.rejects(
        A.createRoom({ subject: 'bi.halfpolicy', policy: { encrypt: true } } as never),
        is('BAD_INPUT')
      );
      assert.equal(await A.room('bi.nopolicy'), undefined, 'nothing was created');
    });

    test("a reader's publish is refused before anything is sent (NOT_A_WRITER)", async () => {
      const [o, r] = [await user('nw-owner'), await user('nw-reader')];
      const O = await bus(o);
      const room = await O.createRoom({ subject: 'nw.room', policy: ENC });
      await O.invite(room.id, r.signPubHex, 'reader');
      // A raw subscriber (the owner's own NATS key) sees whatever reaches the subject.
      const spy = await connect({
        servers: d.natsUrl,
        authenticator: nkeyAuthenticator(new TextEncoder().encode(natsUserKey(o).seed)),
        inboxPrefix: `_INBOX_${o.signPubHex.slice(0, 32)}.r`,
      });
      closers.push(() => spy.close());
      let seen = 0;
      spy.subscribe(room.subject, { callback: () => void seen++ });
      await spy.flush();
      const R = await bus(r);
      await assert.rejects(R.publish(room.id, 'from a reader'), (e: unknown) => {
        assert.ok(e instanceof PublishError && e instanceof SealbusError);
        return (e as PublishError).code === 'NOT_A_WRITER';
      });
      await new Promise((res) => setTimeout(res, 500));
      assert.equal(seen, 0, 'nothing reached the subject');
    });

    test('strings and JSON in and out; messages as an async iterable; rooms by subject', async () => {
      const [a, b] = [await user('it-alice'), await user('it-bob')];
      const A = await bus(a);
      const room = await A.createRoom({ subject: 'it.room', policy: ENC });
      await A.invite(room.id, b.signPubHex, 'writer');
      const B = await bus(b);
      assert.equal((await B.room('it.room'))?.id, room.id, 'found by subject');
      assert.equal((await B.room(room.id))?.subject, 'it.room', 'found by id');
      assert.equal(await B.room('it.none'), undefined);
      const stream = await B.subscribe(room.id);
      await A.publish(room.id, 'plain text');
      await A.publish(room.id, JSON.stringify({ n: 1, ok: true }));
      await A.publish(room.id, new Uint8Array([0xde, 0xad]));
      const got: RoomMessage[] = [];
      for await (const m of stream) {
        got.push(m);
        if (got.length === 3) break; // leaving the loop stops the subscription
      }
      assert.equal(got[0]!.string(), 'plain text');
      assert.deepEqual(got[1]!.json(), { n: 1, ok: true });
      assert.deepEqual([...got[2]!.data], [0xde, 0xad]);
      assert.throws(() => got[0]!.json(), SyntaxError);
      assert.equal(got[0]!.sender, a.signPubHex);
      assert.deepEqual(Object.keys(got[0]!).includes('string'), false, 'methods are not data');
      // Stopped: nothing more is buffered for it.
      const after: RoomMessage[] = [];
      const cb = await B.subscribe(room.id, (m) => void after.push(m));
      await A.publish(room.id, 'after the loop');
      await waitFor(() => after.length === 1, { what: 'the callback form still works' });
      await cb.stop();
    });

    test('events: invited, rekeyed, removed with its reason (removed, deleted)', async () => {
      const [a, b] = [await user('ev-alice'), await user('ev-bob')];
      const A = await bus(a);
      const B = await bus(b);
      const events: string[] = [];
      B.on('invited', (room) => events.push(`invited ${room}`));
      B.on('rekeyed', (room, epoch) => events.push(`rekeyed ${room} ${epoch}`));
      B.on('removed', (room, reason) => events.push(`removed ${room} ${reason}`));
      const r1 = await A.createRoom({ subject: 'ev.one', policy: ENC });
      const r2 = await A.createRoom({ subject: 'ev.two', policy: ENC });
      await A.invite(r1.id, b.signPubHex, 'reader');
      await A.invite(r2.id, b.signPubHex, 'reader');
      await waitFor(() => events.length === 2, { what: 'invited twice' });
      await B.subscribe(r1.id, () => {});
      await B.subscribe(r2.id, () => {});
      await A.rekey(r1.id);
      await waitFor(() => events.includes(`rekeyed ${r1.id} 1`), { what: 'rekeyed' });
      await A.removeMember(r1.id, b.signPubHex);
      await waitFor(() => events.includes(`removed ${r1.id} removed`), { what: 'removed' });
      await A.deleteRoom(r2.id);
      await waitFor(() => events.includes(`removed ${r2.id} deleted`), { what: 'deleted' });
      assert.deepEqual(events.slice(0, 2).sort(), [`invited ${r1.id}`, `invited ${r2.id}`].sort());
    });

    test('events: expired, for a membership and for the identity itself, without raw NATS errors', async () => {
      const [a, b] = [await user('ex-alice'), await user('ex-bob')];
      const A = await bus(a);
      const B = await bus(b);
      const events: string[] = [];
      const errors: string[] = [];
      B.on('expired', (room, at) => events.push(`expired ${room} ${at}`));
      B.on('error', (e) => errors.push(e.message));
      const room = await A.createRoom({ subject: 'ex.room', policy: ENC });
      const ends = new Date(Date.now() + 3_000).toISOString();
      await A.invite(room.id, b.signPubHex, 'writer', { expiresAt: ends });
      const got: string[] = [];
      await B.subscribe(room.id, (m) => void got.push(m.string()));
      await A.publish(room.id, 'while a member');
      await waitFor(() => got.length === 1, { what: 'a message while a member' });
      await waitFor(() => events.length === 1, { what: 'expired', timeoutMs: 15_000 });
      assert.deepEqual(events, [`expired ${room.id} ${ends}`]);
      assert.ok(Date.now() >= Date.parse(ends) - 2_000, 'not before its end');
      // The room is no longer this client's: using it is the control plane's refusal.
      await assert.rejects(B.publish(room.id, 'late'), is('MEMBERSHIP_EXPIRED'));
      await A.publish(room.id, 'after the end');
      await new Promise((r) => setTimeout(r, 1_500));
      assert.deepEqual(got, ['while a member']);
      assert.deepEqual(errors, [], 'the end was not reported as raw NATS errors');

      // A client whose clock is behind the daemon's: its own timer would
      // come late, but the subjects NATS takes away at the daemon's time
      // are recognised as the end, confirmed with the control plane.
      const realNow = Date.now;
      const lateRoom = await A.createRoom({ subject: 'ex.late', policy: ENC });
      const lateEnds = new Date(realNow() + 3_000).toISOString();
      await A.invite(lateRoom.id, b.signPubHex, 'reader', { expiresAt: lateEnds });
      // 30 s behind (its signatures stay valid): its own timer would fire
      // 30 s late, far more than a loaded machine's sweep delay.
      Date.now = () => realNow() - 30_000;
      try {
        await B.subscribe(lateRoom.id, () => {});
        await waitFor(() => events.length === 2, {
          what: 'expired (slow clock)',
          timeoutMs: 25_000,
        });
        assert.ok(
          realNow() < Date.parse(lateEnds) + 20_000,
          'before the slow clock would have said'
        );
      } finally {
        Date.now = realNow;
      }
      assert.equal(events[1], `expired ${lateRoom.id} ${lateEnds}`);
      assert.deepEqual(
        errors.filter((m) => /permission/i.test(m)),
        []
      );

      // The identity's own grant.
      const c = generateIdentity();
      const grantEnds = new Date(Date.now() + 3_000).toISOString();
      await admin.addUser({
        public: encodePublicIdentity(c),
        handle: 'ex-carol',
        role: 'member',
        expires_at: grantEnds,
      });
      const C = await bus(c);
      const cEvents: string[] = [];
      C.on('expired', (r, at) => cEvents.push(`expired ${r} ${at}`));
      C.on('closed', () => cEvents.push('closed'));
      await waitFor(() => cEvents.includes('closed'), {
        what: 'the client closed at its grant end',
        timeoutMs: 15_000,
      });
      assert.equal(cEvents[0], `expired null ${grantEnds}`);
    });

    test('one error family: control, trust, publish and transport errors are SealbusErrors', async () => {
      const stranger = generateIdentity(); // not registered
      const ctl = new ControlClient({ urls: [d.httpUrl], identity: stranger });
      closers.push(() => ctl.close());
      const err = await ctl.me().catch((e: unknown) => e);
      assert.ok(err instanceof ControlError && err instanceof SealbusError);
      assert.equal((err as ControlError).status, 401);
      assert.equal((err as ControlError).code, 'UNKNOWN_KEY');
      assert.ok(new TrustError('ROLLBACK', 'x') instanceof SealbusError);
      assert.ok(new InsecureTransportError('nats://x', 'x') instanceof SealbusError);
      assert.equal(new InsecureTransportError('nats://x', 'x').code, 'INSECURE_TRANSPORT');
      // An unregistered identity at connect: the control plane's answer, not a bare NATS refusal.
      await assert.rejects(
        Sealbus.connect({ natsServers: [d.natsUrl], controlUrls: [d.httpUrl], identity: stranger }),
        (e: unknown) => e instanceof ControlError && e.status === 401 && e.code === 'UNKNOWN_KEY'
      );
      // A revoked one: REVOKED_KEY, the same way.
      const gone = await user('revoked-at-connect');
      await admin.revokeUser(gone.signPubHex);
      await assert.rejects(
        Sealbus.connect({ natsServers: [d.natsUrl], controlUrls: [d.httpUrl], identity: gone }),
        (e: unknown) => e instanceof ControlError && e.status === 401 && e.code === 'REVOKED_KEY'
      );
      await assert.rejects(
        Sealbus.connect({
          natsServers: ['nats://nats.example.org:4222'],
          controlUrls: [d.httpUrl],
          identity: stranger,
        }),
        is('INSECURE_TRANSPORT')
      );
    });
  }
);
