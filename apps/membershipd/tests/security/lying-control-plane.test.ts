// Issue 11: a control plane that lies (a proxy in front of membershipd, or
// a writer of the store) and former members, against the SDK's owner-signed
// statement chain. Each attack was reproduced against main before the
// statements existed; each is refused or detected here.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { ControlClient, TrustError, type RejectedFrame, type Sealbus } from '@sealbus/client';
import {
  OwnerPins,
  authorStatement,
  newRoomKey,
  openRoomKey,
  sealRoomKey,
  natsOf,
} from '@sealbus/client/internal';
import {
  FrameSealer,
  fingerprint,
  generateIdentity,
  saveIdentity,
  type Identity,
} from '@sealbus/crypto';
import type { MembershipStore } from '@sealbus/store';
import { runMembershipd, tempDir, waitFor, type TempDir } from '@sealbus/testing';
import { signedCtl } from '../author.js';
import { lyingHarness, type LyingHarness, type LyingProxy } from './lying-proxy.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ENC = { encrypt: true, persist: false, sign: true };
const PLAIN_SIGNED = { encrypt: false, persist: false, sign: true };
const isTrust = (code: string) => (e: unknown) => e instanceof TrustError && e.code === code;

describe('a lying control plane and former members', { timeout: 300_000 }, () => {
  let h: LyingHarness;
  let proxy: LyingProxy;
  let admin: ControlClient;
  let store: MembershipStore;
  let dir: TempDir;
  const user = (handle: string) => h.user(handle);
  /** A client whose control plane is the lying proxy. */
  const lied = (...a: Parameters<LyingHarness['lied']>) => h.lied(...a);
  /** A client talking to the daemon directly. */
  const honest = (...a: Parameters<LyingHarness['honest']>) => h.honest(...a);
  const ctlOf = (id: Identity) => h.ctlOf(id);
  const keyOf = (...a: Parameters<LyingHarness['keyOf']>) => h.keyOf(...a);
  const collect = (...a: Parameters<LyingHarness['collect']>) => h.collect(...a);

  before(async () => {
    dir = await tempDir('sealbus-lying-');
    h = await lyingHarness();
    ({ proxy, admin, store } = h);
  });
  after(async () => {
    await h?.dispose();
    await dir?.[Symbol.asyncDispose]();
  });

  test("key substitution: the owner seals only to a kex key bound to the invitee's own sign key", async () => {
    const [alice, bob, mallory] = [
      await user('ks-alice'),
      await user('ks-bob'),
      await user('ks-mallory'),
    ];
    const A = await lied(alice);
    const room = await A.createRoom({ subject: 'ks.room', policy: ENC });
    // The directory answers bob with mallory's kex key (bob's binding kept) ...
    proxy.lie = (q, body) =>
      q.path === `/directory/${bob.signPubHex}`
        ? { ...body, kex_pub: mallory.kexPubHex }
        : undefined;
    await assert.rejects(A.invite(room.id, bob.signPubHex), isTrust('UNBOUND_KEY'));
    // ... or with mallory's kex key, NATS key and binding (valid, but mallory's).
    proxy.lie = (q, body) =>
      q.path === `/directory/${bob.signPubHex}`
        ? {
            ...body,
            kex_pub: mallory.kexPubHex,
            nats_pub: mallory.natsPubHex,
            binding: body.binding.replace(/^./, (c: string) => (c === '0' ? '1' : '0')),
          }
        : undefined;
    await assert.rejects(A.invite(room.id, bob.signPubHex), isTrust('UNBOUND_KEY'));
    // Nothing was sealed or stored for bob.
    assert.equal(await store.rooms.membership(room.id, bob.signPubHex), null);
    assert.deepEqual(await store.rooms.keysOf(room.id, bob.signPubHex), []);

    proxy.lie = undefined;
    await A.invite(room.id, bob.signPubHex);
    const k0 = await keyOf(bob, room.id, 0);
    assert.equal(k0.length, 32, 'bob opens the key sealed to his real kex key');

    // A rekey reads kex keys from the room's member list: substituted there too, refused.
    proxy.lie = (q, body) =>
      q.method === 'GET' && q.path === `/rooms/${room.id}`
        ? {
            ...body,
            members: body.members.map((m: any) =>
              m.sign_pub === bob.signPubHex ? { ...m, kex_pub: mallory.kexPubHex } : m
            ),
          }
        : undefined;
    await assert.rejects(A.rekey(room.id), isTrust('UNBOUND_KEY'));
    assert.equal((await store.rooms.get(room.id))?.epoch, 0, 'no rotation happened');
    proxy.lie = undefined;
  });

  test('an injected member, a forged statement, a rolled-back chain: frames of non-members stay refused', async () => {
    const [alice, bob, carol, vic, mallory] = [
      await user('inj-alice'),
      await user('inj-bob'),
      await user('inj-carol'),
      await user('inj-vic'),
      await user('inj-mallory'),
    ];
    const A = await honest(alice);
    const room = await A.createRoom({ subject: 'inj.room', policy: PLAIN_SIGNED });
    await A.invite(room.id, bob.signPubHex, 'writer');
    await A.invite(room.id, carol.signPubHex, 'writer');
    await A.invite(room.id, vic.signPubHex, 'reader');
    const B = await honest(bob);
    const untrusted: TrustError[] = [];
    const V = await lied(vic);
    V.on('untrusted', (e) => untrusted.push(e));
    const { got, rejected } = await collect(V, room.id);
    const relay = (from: Identity, text: string) =>
      natsOf(B).publish(
        room.subject,
        new FrameSealer(room.id, from.signSeed).seal(enc(text), { epoch: 0, key: null, sign: true })
      );
    const waitRejected = (n: number, what: string) =>
      waitFor(() => rejected.length >= n, { timeoutMs: 10_000, what });

    // 1. The daemon's member list (as vic is told) says mallory is a writer.
    proxy.lie = (q, body) =>
      q.method === 'GET' && q.path === `/rooms/${room.id}`
        ? {
            ...body,
            members: [
              ...body.members,
              {
                ...body.members[0],
                sign_pub: mallory.signPubHex,
                role: 'writer',
                handle: 'mallory',
              },
            ],
          }
        : undefined;
    relay(mallory, 'injected');
    await waitRejected(1, 'the injected member refused');
    assert.equal(rejected[0]!.code, 'NOT_A_MEMBER');

    // 2. A statement adding mallory, signed by mallory (not the owner), served after the real chain.
    const real = await ctlOf(alice).statements(room.id);
    const last = JSON.parse(real.statements.at(-1)!.statement);
    proxy.lie = (q, body) => {
      if (q.path !== `/rooms/${room.id}/statements`) return undefined;
      const forged = authorStatement(
        mallory.signSeed,
        {
          latest: last,
          latestHash: createHash('sha256').update(real.statements.at(-1)!.statement).digest('hex'),
        } as any,
        {
          room: room.id,
          subject: room.subject,
          policy: PLAIN_SIGNED,
          owner: alice.signPubHex,
          epoch: 0,
          key: null,
          members: [...last.members, [mallory.signPubHex, 'writer']],
        }
      );
      return {
        ...body,
        head: last.seq + 1,
        statements: [...body.statements, { seq: last.seq + 1, ...forged }],
      };
    };
    relay(mallory, 'forged');
    await waitRejected(2, 'the forged statement changed nothing');
    assert.equal(rejected[1]!.code, 'NOT_A_MEMBER');
    await waitFor(() => untrusted.some((e) => e.code === 'BAD_STATEMENT'), {
      what: 'forgery reported',
    });

    // 3. carol is removed (a signed statement); vic learns it. Then the
    //    control plane serves the chain as it was before the removal.
    proxy.lie = undefined;
    const fetched = () =>
      proxy.asked.filter((a) => a.startsWith(`GET /rooms/${room.id}/statements`)).length;
    const before = fetched();
    await A.removeMember(room.id, carol.signPubHex);
    // The other members are told (room.changed) and fetch the new statement.
    await waitFor(() => fetched() > before, { what: 'vic fetched the removal' });
    await sleep(200);
    relay(carol, 'after removal'); // bob relays a frame carol signed
    await waitRejected(3, 'the removed writer refused');
    assert.equal(rejected[2]!.code, 'FORMER_MEMBER');
    proxy.lie = (q, body) =>
      q.path === `/rooms/${room.id}/statements`
        ? { ...body, head: last.seq, statements: [] }
        : q.method === 'GET' && q.path === `/rooms/${room.id}`
          ? {
              ...body,
              members: [
                ...body.members,
                { ...body.members[0], sign_pub: carol.signPubHex, role: 'writer' },
              ],
            }
          : undefined;
    relay(mallory, 'trigger a refresh');
    await waitRejected(4, 'refused');
    await sleep(1_100); // the next refresh is allowed a second later
    relay(carol, 'rolled back');
    await waitRejected(5, 'the rolled-back chain changed nothing');
    assert.equal(rejected[4]!.code, 'FORMER_MEMBER');
    await waitFor(() => untrusted.some((e) => e.code === 'ROLLBACK'), {
      what: 'rollback reported',
    });
    assert.deepEqual(
      got.map((m) => dec(m.data)),
      [],
      'nothing of a non-member was delivered'
    );
    proxy.lie = undefined;
  });

  test('an epoch key the control plane made: refused at publish, never used', async () => {
    const [alice, vic] = [await user('ek-alice'), await user('ek-vic')];
    const A = await honest(alice);
    const room = await A.createRoom({ subject: 'ek.room', policy: ENC });
    await A.invite(room.id, vic.signPubHex, 'writer');
    const { got } = await collect(A, room.id);
    const made = newRoomKey();
    const sealedMade = sealRoomKey(made, vic.kexPubHex);
    // The current epoch's key swapped for one the control plane knows.
    proxy.lie = (q, body) =>
      q.path === `/rooms/${room.id}/keys`
        ? { ...body, keys: body.keys.map((k: any) => ({ ...k, sealed_key: sealedMade })) }
        : undefined;
    const V = await lied(vic);
    await assert.rejects(V.publish(room.id, enc('under a made key')), isTrust('BAD_KEY'));
    await V.close();

    // An epoch the owner never stated, with a key for it: the SDK keeps the owner's epoch.
    const real = await keyOf(vic, room.id, 0);
    proxy.lie = (q, body) =>
      q.path === `/rooms/${room.id}/keys`
        ? { ...body, epoch: 1, keys: [...body.keys, { epoch: 1, sealed_key: sealedMade }] }
        : q.method === 'GET' && q.path === `/rooms/${room.id}`
          ? { ...body, epoch: 1 }
          : undefined;
    const V2 = await lied(vic);
    await V2.publish(room.id, enc('epoch 0 still'));
    await waitFor(() => got.length === 1, { what: 'the owner receives' });
    assert.equal(got[0]!.epoch, 0);
    assert.equal(real.length, 32);
    proxy.lie = undefined;
  });

  test('a writer of the store bumps the epoch and seals its own key to every member: nobody uses it', async () => {
    const [alice, bob] = [await user('sw-alice'), await user('sw-bob')];
    const A = await honest(alice);
    const room = await A.createRoom({ subject: 'sw.room', policy: ENC });
    await A.invite(room.id, bob.signPubHex, 'writer');
    const made = newRoomKey();
    // What anyone holding the store's credentials can write: keys, then the epoch.
    const sealed = Object.fromEntries(
      [alice, bob].map((m) => [m.signPubHex, sealRoomKey(made, m.kexPubHex)])
    );
    // Bypassing the daemon's statement check, as a raw store writer would.
    await writeStoreEpoch(store, room.id, 1, sealed);
    const B = await honest(bob);
    const { got } = await collect(A, room.id);
    await B.publish(room.id, enc('still epoch 0'));
    await waitFor(() => got.length === 1, { what: 'delivered' });
    assert.equal(got[0]!.epoch, 0, "bob encrypts under the owner's epoch, not the store's");
    // A frame under the made key (epoch 1) is refused by members.
    const rejected: RejectedFrame[] = [];
    A.on('rejected', (r) => rejected.push(r));
    natsOf(B).publish(
      room.subject,
      new FrameSealer(room.id, bob.signSeed).seal(enc('made'), { epoch: 1, key: made, sign: true })
    );
    await waitFor(() => rejected.length === 1, { timeoutMs: 10_000, what: 'refused' });
    assert.equal(rejected[0]!.code, 'UNKNOWN_EPOCH');
    assert.equal(got.length, 1);
  });

  test("the former-member relay: a removed writer's frame, relayed by a writer after the rotation, is refused", async () => {
    const [alice, bob, carol, vic] = [
      await user('fm-alice'),
      await user('fm-bob'),
      await user('fm-carol'),
      await user('fm-vic'),
    ];
    const A = await honest(alice);
    const room = await A.createRoom({ subject: 'fm.room', policy: ENC });
    for (const m of [bob, carol]) await A.invite(room.id, m.signPubHex, 'writer');
    await A.invite(room.id, vic.signPubHex, 'reader');
    // carol seals a frame with the key she holds.
    const k0 = await keyOf(carol, room.id, 0);
    const frame = new FrameSealer(room.id, carol.signSeed).seal(enc('from carol'), {
      epoch: 0,
      key: k0,
      sign: true,
    });
    await A.removeMember(room.id, carol.signPubHex);
    const V = await honest(vic);
    const { got, rejected } = await collect(V, room.id);
    const B = await honest(bob);
    natsOf(B).publish(room.subject, frame);
    await waitFor(() => rejected.length === 1, { timeoutMs: 10_000, what: 'relay refused' });
    assert.equal(rejected[0]!.code, 'FORMER_MEMBER');
    // And bob's own frames go through: the refusal is about carol.
    await B.publish(room.id, enc('from bob'));
    await waitFor(() => got.length === 1, { what: 'bob delivered' });
    assert.deepEqual(
      got.map((m) => [dec(m.data), m.epoch]),
      [['from bob', 1]]
    );
  });

  /** Drops every announcement the daemon sends this client: its events subscription goes. */
  function deafen(b: Sealbus): void {
    const nc = natsOf(b) as unknown as {
      protocol: { subscriptions: { all(): Array<{ subject: string; unsubscribe(): void }> } };
    };
    const events = nc.protocol.subscriptions
      .all()
      .filter((s) => s.subject.startsWith('sealbus.events.'));
    assert.equal(events.length, 1, 'one events subscription');
    for (const s of events) s.unsubscribe();
  }

  test("a dropped announcement: the subscriber's statement check learns of the removal, and the former member's relayed frame is refused", async () => {
    const [alice, bob, carol, vic, deaf] = [
      await user('da-alice'),
      await user('da-bob'),
      await user('da-carol'),
      await user('da-vic'),
      await user('da-deaf'),
    ];
    const A = await honest(alice);
    const room = await A.createRoom({ subject: 'da.room', policy: ENC });
    for (const m of [bob, carol]) await A.invite(room.id, m.signPubHex, 'writer');
    for (const m of [vic, deaf]) await A.invite(room.id, m.signPubHex, 'reader');
    const V = await honest(vic, { statementCheckMs: 1_000, rotationGraceMs: 0 });
    // The control: the same subscriber with the check off.
    const D = await honest(deaf, { statementCheckMs: 0, rotationGraceMs: 0 });
    const v = await collect(V, room.id);
    const d = await collect(D, room.id);
    const rekeyed: number[] = [];
    V.on('rekeyed', (_r, epoch) => rekeyed.push(epoch));
    deafen(V);
    deafen(D);
    const k0 = await keyOf(carol, room.id, 0);
    const frame = new FrameSealer(room.id, carol.signSeed).seal(enc('from carol'), {
      epoch: 0,
      key: k0,
      sign: true,
    });
    assert.equal((await A.removeMember(room.id, carol.signPubHex)).epoch, 1);
    await waitFor(() => rekeyed.includes(1), {
      timeoutMs: 10_000,
      what: 'the statement check saw epoch 1 without an announcement',
    });
    const B = await honest(bob);
    natsOf(B).publish(room.subject, frame);
    await waitFor(() => v.rejected.length === 1 && d.got.length === 1, {
      timeoutMs: 10_000,
      what: 'both judged the relay',
    });
    assert.ok(['FORMER_MEMBER', 'STALE_EPOCH'].includes(v.rejected[0]!.code), v.rejected[0]!.code);
    assert.deepEqual(v.got, []);
    // Without the check (and without a frame of the new epoch), a deaf
    // subscriber keeps the statement it had: what the check is for.
    assert.equal(dec(d.got[0]!.data), 'from carol');
    // A frame of the new epoch makes the deaf one catch up too.
    await A.publish(room.id, enc('epoch 1'));
    await waitFor(() => d.got.length === 2, { timeoutMs: 10_000, what: 'epoch 1 at the deaf one' });
    natsOf(B).publish(room.subject, frame);
    await waitFor(() => d.rejected.length === 1, { timeoutMs: 10_000, what: 'relay refused' });
  });

  test('history: frames of a writer who left are delivered flagged formerMember', async () => {
    const [alice, carol, vic] = [
      await user('hi-alice'),
      await user('hi-carol'),
      await user('hi-vic'),
    ];
    const A = await honest(alice);
    const room = await A.createRoom({
      subject: 'hi.room',
      policy: { encrypt: true, persist: true, sign: true },
    });
    await A.invite(room.id, carol.signPubHex, 'writer');
    await A.invite(room.id, vic.signPubHex, 'reader');
    const C = await honest(carol);
    await C.publish(room.id, enc('carol, epoch 0'));
    await A.removeMember(room.id, carol.signPubHex);
    await A.publish(room.id, enc('alice, epoch 1'));
    const V = await honest(vic);
    const { got, rejected } = await collect(V, room.id, { from: 'start' });
    await waitFor(() => got.length + rejected.length >= 2, { what: 'history read' });
    assert.deepEqual(rejected, []);
    assert.deepEqual(
      got.map((m) => [dec(m.data), m.epoch, m.formerMember]),
      [
        ['carol, epoch 0', 0, true],
        ['alice, epoch 1', 1, false],
      ]
    );
  });

  test('the grace window: a frame of the previous epoch sent during a rotation is delivered; after the grace it is not', async () => {
    const [alice, bob, vic, strict] = [
      await user('gr-alice'),
      await user('gr-bob'),
      await user('gr-vic'),
      await user('gr-strict'),
    ];
    const A = await honest(alice);
    const room = await A.createRoom({ subject: 'gr.room', policy: ENC });
    await A.invite(room.id, bob.signPubHex, 'writer');
    for (const m of [vic, strict]) await A.invite(room.id, m.signPubHex, 'reader');
    const V = await honest(vic);
    const S = await honest(strict, { rotationGraceMs: 0 });
    const v = await collect(V, room.id);
    const s = await collect(S, room.id);
    const k0 = await keyOf(bob, room.id, 0);
    const inFlight = new FrameSealer(room.id, bob.signSeed).seal(enc('sent at epoch 0'), {
      epoch: 0,
      key: k0,
      sign: true,
    });
    await A.rekey(room.id);
    // Both receivers know epoch 1 once they received a frame of it.
    await A.publish(room.id, enc('epoch 1'));
    await waitFor(() => v.got.length === 1 && s.got.length === 1, { what: 'epoch 1 known' });
    const B = await honest(bob);
    natsOf(B).publish(room.subject, inFlight);
    await waitFor(() => v.got.length === 2 && s.rejected.length === 1, {
      timeoutMs: 10_000,
      what: 'judged',
    });
    assert.deepEqual([dec(v.got[1]!.data), v.got[1]!.epoch], ['sent at epoch 0', 0]);
    assert.equal(s.rejected[0]!.code, 'STALE_EPOCH');
  });

  test('a revoked member is left out of the next epoch, rotated by the owner on the announcement', async () => {
    const [alice, bob, dave] = [
      await user('rv-alice'),
      await user('rv-bob'),
      await user('rv-dave'),
    ];
    const A = await honest(alice);
    const room = await A.createRoom({ subject: 'rv.room', policy: ENC });
    for (const m of [bob, dave]) await A.invite(room.id, m.signPubHex, 'writer');
    await admin.revokeUser(dave.signPubHex);
    await waitFor(async () => (await store.rooms.get(room.id))?.epoch === 1, {
      timeoutMs: 15_000,
      what: 'the owner rotated on rekey.needed',
    });
    assert.deepEqual(
      (await store.rooms.keysOf(room.id, dave.signPubHex)).map((k) => k.epoch),
      [0]
    );
    assert.equal(
      await store.rooms.membership(room.id, dave.signPubHex),
      null,
      'membership dropped'
    );
    assert.deepEqual(
      (await store.rooms.keysOf(room.id, bob.signPubHex)).map((k) => k.epoch),
      [0, 1]
    );
    const k1 = await keyOf(bob, room.id, 1);
    const sealedToBob = (await store.rooms.keysOf(room.id, bob.signPubHex))[1]!.sealed_key;
    assert.throws(() => openRoomKey(sealedToBob, dave), 'dave cannot open what was sealed to bob');
    assert.equal(k1.length, 32);
  });

  test('an expired membership: the owner rotates at its next publish (no announcement needed)', async () => {
    const [alice, erin] = [await user('ex-alice'), await user('ex-erin')];
    const A = await honest(alice);
    const room = await A.createRoom({ subject: 'ex.room', policy: ENC });
    await A.invite(room.id, erin.signPubHex, 'reader', {
      expiresAt: new Date(Date.now() + 2_500).toISOString(),
    });
    await sleep(3_000);
    await A.publish(room.id, enc('after the expiry'));
    assert.equal((await store.rooms.get(room.id))?.epoch, 1);
    assert.deepEqual(
      (await store.rooms.keysOf(room.id, erin.signPubHex)).map((k) => k.epoch),
      [0]
    );
  });

  test('an expired membership, the owner idle: the sweep tells it (rekey.needed) and it rotates', async () => {
    const [alice, fay] = [await user('sw2-alice'), await user('sw2-fay')];
    const A = await honest(alice);
    const room = await A.createRoom({ subject: 'sweep.room', policy: ENC });
    await A.invite(room.id, fay.signPubHex, 'writer', {
      expiresAt: new Date(Date.now() + 2_000).toISOString(),
    });
    // No publish, no call: only the daemon's sweep (every 15 s) can start it.
    await waitFor(async () => (await store.rooms.get(room.id))?.epoch === 1, {
      timeoutMs: 30_000,
      what: 'the owner rotated after the expiry',
    });
    assert.deepEqual(
      (await store.rooms.keysOf(room.id, fay.signPubHex)).map((k) => k.epoch),
      [0]
    );
    assert.equal(await store.rooms.membership(room.id, fay.signPubHex), null);
  });

  test("the daemon takes only the owner's valid next statement with each change", async () => {
    const [alice, bob, carol] = [
      await user('dv-alice'),
      await user('dv-bob'),
      await user('dv-carol'),
    ];
    const ctl = ctlOf(alice);
    const ops = signedCtl(ctl, alice);
    const room = await ops.createRoom({ subject: 'dv.room', policy: PLAIN_SIGNED });
    const code = (c: string) => (e: any) => e?.code === c;
    // Signed by someone else than the owner.
    const byBob = await ops.next(room.id, (m) => m.set(bob.signPubHex, 'writer'), {
      signer: bob,
    });
    await assert.rejects(
      ctl.addMember(room.id, { sign_pub: bob.signPubHex, role: 'writer', statement: byBob }),
      code('BAD_STATEMENT')
    );
    // A statement adding someone else than the request says.
    const carolIn = await ops.next(room.id, (m) => m.set(carol.signPubHex, 'writer'));
    await assert.rejects(
      ctl.addMember(room.id, { sign_pub: bob.signPubHex, role: 'writer', statement: carolIn }),
      code('BAD_STATEMENT')
    );
    // The right statement in the wrong role.
    const bobReader = await ops.next(room.id, (m) => m.set(bob.signPubHex, 'reader'));
    await assert.rejects(
      ctl.addMember(room.id, { sign_pub: bob.signPubHex, role: 'writer', statement: bobReader }),
      code('BAD_STATEMENT')
    );
    // Accepted once; the same statement again (a replay) is stale.
    const bobIn = await ops.next(room.id, (m) => m.set(bob.signPubHex, 'writer'));
    await ctl.addMember(room.id, { sign_pub: bob.signPubHex, role: 'writer', statement: bobIn });
    await assert.rejects(
      ctl.addMember(room.id, { sign_pub: carol.signPubHex, role: 'writer', statement: carolIn }),
      code('STALE_STATEMENT')
    );
    // A removal that drops the owner too.
    const both = await ops.next(room.id, (m) => {
      m.delete(bob.signPubHex);
      m.delete(alice.signPubHex);
    });
    await assert.rejects(
      ctl.removeMember(room.id, bob.signPubHex, { statement: both }),
      code('BAD_STATEMENT')
    );
    assert.ok(await store.rooms.membership(room.id, bob.signPubHex), 'bob is still a member');
    // A create whose statement names another room.
    const other = authorStatement(alice.signSeed, null, {
      room: 'f'.repeat(24),
      subject: 'dv.other',
      policy: PLAIN_SIGNED,
      owner: alice.signPubHex,
      epoch: 0,
      key: null,
      members: [[alice.signPubHex, 'owner']],
    });
    await assert.rejects(
      ctl.createRoom({
        id: 'e'.repeat(24),
        subject: 'dv.other',
        policy: PLAIN_SIGNED,
        statement: other,
      }),
      code('BAD_STATEMENT')
    );
    assert.equal(await store.rooms.get('e'.repeat(24)), null, 'nothing half-made');
    // A change without a statement is not a request the daemon takes.
    await assert.rejects(
      ctl.request('POST', `/rooms/${room.id}/members`, (await import('zod')).z.any(), {
        sign_pub: carol.signPubHex,
        role: 'writer',
      }),
      code('INVALID')
    );
  });

  test('trustOwner decides; a pinned owner cannot change; fingerprints agree with the CLI', async () => {
    const [alice, bob] = [await user('to-alice'), await user('to-bob')];
    const A = await honest(alice);
    const room = await A.createRoom({ subject: 'to.room', policy: ENC });
    await A.invite(room.id, bob.signPubHex, 'writer');
    const asked: string[] = [];
    const B = await honest(bob, { trustOwner: (owner) => (asked.push(owner), false) });
    await assert.rejects(
      B.subscribe(room.id, () => {}),
      isTrust('UNTRUSTED_OWNER')
    );
    assert.deepEqual(asked, [alice.signPubHex]);
    const pins = new OwnerPins();
    await pins.check(room.id, alice.signPubHex);
    await assert.rejects(pins.check(room.id, bob.signPubHex), isTrust('OWNER_CHANGED'));
    await pins.check(room.id, alice.signPubHex);

    const file = join(dir.path, 'alice.id');
    await saveIdentity(file, alice);
    const r = await runMembershipd(['identity', 'fingerprint', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), B.fingerprint(alice.signPubHex));
    assert.equal(r.stdout.trim(), fingerprint(alice.signPub));
    assert.notEqual(B.fingerprint(bob.signPubHex), B.fingerprint(alice.signPubHex));
    assert.ok(!r.stdout.includes(Buffer.from(alice.signSeed).toString('hex')));
    void generateIdentity;
  });
});

/**
 * What a writer of the store (anyone with its credentials, or a doctored
 * backup) can do without the daemon: store sealed keys for the next epoch
 * and move the room record's epoch.
 */
async function writeStoreEpoch(
  store: MembershipStore,
  room: string,
  epoch: number,
  sealed: Record<string, string>
): Promise<void> {
  const b = { roomKeys: store.bucket('roomKeys'), rooms: store.bucket('rooms') };
  const now = new Date().toISOString();
  for (const [signPub, sealed_key] of Object.entries(sealed))
    await b.roomKeys.put(
      `${room}.${epoch}.${signPub}`,
      new TextEncoder().encode(
        JSON.stringify({ room, epoch, sign_pub: signPub, sealed_key, created_at: now })
      )
    );
  const e = await b.rooms.get(`room.${room}`);
  const rec = JSON.parse(new TextDecoder().decode(e!.value));
  await b.rooms.put(`room.${room}`, new TextEncoder().encode(JSON.stringify({ ...rec, epoch })));
}
