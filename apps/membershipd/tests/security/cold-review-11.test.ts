// Cold review of issue 11 (owner-signed room statements): a lying control
// plane (a proxy, the daemon, a writer of its store) and former members
// against the statement chain. Every test asserts the SECURE behaviour: a
// failing test is an attack that worked.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ControlClient, Sealbus, TrustError, type RoomMessage } from '@sealbus/client';
import {
  StatementChain,
  authorStatement,
  newRoomKey,
  openRoomKey,
  sealRoomKey,
  natsOf,
} from '@sealbus/client/internal';
import {
  FrameSealer,
  generateIdentity,
  openFramePayload,
  parseFrame,
  type Identity,
} from '@sealbus/crypto';
import type { MemberRole } from '@sealbus/protocol';
import type { MembershipStore } from '@sealbus/store';
import type { NatsConnection } from 'nats';
import { startDaemon, waitFor, type TestDaemon } from '@sealbus/testing';
import { adminOf, enrol, nodeStore } from '../helpers.js';
import { lyingHarness, type LyingHarness, type LyingProxy, type Q } from './lying-proxy.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ENC = { encrypt: true, persist: false, sign: true };
const PLAIN_SIGNED = { encrypt: false, persist: false, sign: true };
const isTrust = (code: string) => (e: unknown) => e instanceof TrustError && e.code === code;

/** Frames seen raw on a subject (a member's own NATS connection). */
function tap(nc: NatsConnection, subject: string): Uint8Array[] {
  const seen: Uint8Array[] = [];
  nc.subscribe(subject, { callback: (_e, m) => void seen.push(m.data) });
  return seen;
}

/** True when `key` opens any of the frames (i.e. whoever holds `key` read them). */
function anyOpens(frames: Uint8Array[], key: Uint8Array): string[] {
  const read: string[] = [];
  for (const b of frames) {
    try {
      read.push(dec(openFramePayload(parseFrame(b), key)));
    } catch {
      /* not under this key */
    }
  }
  return read;
}

describe('cold review 11: owner-signed statements under attack', { timeout: 600_000 }, () => {
  let h: LyingHarness;
  let proxy: LyingProxy;
  let store: MembershipStore;
  let app: NatsConnection;
  const user = (handle: string) => h.user(handle);
  const lied = (...a: Parameters<LyingHarness['lied']>) => h.lied(...a);
  const honest = (...a: Parameters<LyingHarness['honest']>) => h.honest(...a);
  const ctlOf = (id: Identity) => h.ctlOf(id);
  const keyOf = (...a: Parameters<LyingHarness['keyOf']>) => h.keyOf(...a);
  const collect = (...a: Parameters<LyingHarness['collect']>) => h.collect(...a);
  const tell = (...a: Parameters<LyingHarness['tell']>) => h.tell(...a);
  /** A chain served as it was (after `after`): what a proxy replays for a rollback. */
  const replay = (room: string, old: { head: number | null; statements: any[] }) => (q: Q) => {
    const after = q.query.has('after') ? Number(q.query.get('after')) : -1;
    return { id: room, head: old.head, statements: old.statements.filter((s) => s.seq > after) };
  };

  before(async () => {
    h = await lyingHarness();
    ({ proxy, store, app } = h);
  });
  after(async () => {
    await h?.dispose();
  });

  test('A1 forced adoption: a control plane answering head:null cannot make the owner sign its member list and key', async () => {
    const [alice, bob, mallory] = [
      await user('ad-alice'),
      await user('ad-bob'),
      await user('ad-mallory'),
    ];
    const A = await honest(alice);
    const room = await A.createRoom({ subject: 'ad.room', policy: ENC });
    await A.invite(room.id, bob.signPubHex, 'writer');
    await A.close(); // alice's application restarts

    const B = await honest(bob);
    const seen = tap(natsOf(B), room.subject);
    await natsOf(B).flush();
    const made = newRoomKey();
    let adopted: { statement: string; sig: string } | undefined;
    const served = () => ({
      id: room.id,
      head: adopted ? 0 : null,
      statements: adopted ? [{ seq: 0, ...adopted }] : [],
    });
    proxy.intercept = (q, body) => {
      if (q.method === 'POST' && q.path === `/rooms/${room.id}/statements`) {
        adopted = body.statement;
        return { status: 201, body: served() };
      }
      if (q.method === 'GET' && q.path === `/rooms/${room.id}/statements`) {
        const after = q.query.has('after') ? Number(q.query.get('after')) : -1;
        const s = served();
        return {
          status: 200,
          body: { ...s, statements: s.statements.filter((x) => x.seq > after) },
        };
      }
      return undefined;
    };
    proxy.lie = (q, body) => {
      if (q.method === 'GET' && q.path === `/rooms/${room.id}`) {
        const bobEntry = body.members.find((m: any) => m.sign_pub === bob.signPubHex);
        return {
          ...body,
          members: [
            ...body.members,
            { ...bobEntry, sign_pub: mallory.signPubHex, handle: 'ad-mallory' },
          ],
        };
      }
      if (q.path === `/rooms/${room.id}/keys`)
        return {
          ...body,
          keys: body.keys.map((k: any) =>
            k.epoch === body.epoch ? { ...k, sealed_key: sealRoomKey(made, alice.kexPubHex) } : k
          ),
        };
      return undefined;
    };
    try {
      const A2 = await lied(alice);
      await A2.publish(room.id, enc('alice after her restart')).catch(() => {});
      await sleep(500);
    } finally {
      proxy.intercept = undefined;
      proxy.lie = undefined;
    }
    const signedMallory =
      adopted !== undefined &&
      JSON.parse(adopted.statement).members.some(
        (m: [string, MemberRole]) => m[0] === mallory.signPubHex
      );
    assert.deepEqual(
      { signedMallory, readByControlPlane: anyOpens(seen, made) },
      { signedMallory: false, readByControlPlane: [] },
      'the owner signed a statement making mallory (never invited) a writer, and/or published under a key the control plane made'
    );
  });

  test('A2 forced adoption by a store writer: deleting <room>.head and sealing a made key to the owner', async () => {
    const [alice, bob] = [await user('kv-alice'), await user('kv-bob')];
    const A = await honest(alice);
    const room = await A.createRoom({ subject: 'kv.room', policy: ENC });
    await A.invite(room.id, bob.signPubHex, 'writer');
    await A.close();
    const B = await honest(bob);
    const seen = tap(natsOf(B), room.subject);
    await natsOf(B).flush();
    // What anyone with the store's credentials can write, the daemon itself unchanged.
    const made = newRoomKey();
    const kv = store.bucket('roomKeys');
    await kv.delete(`${room.id}.head`);
    await kv.put(
      `${room.id}.0.${alice.signPubHex}`,
      enc(
        JSON.stringify({
          room: room.id,
          epoch: 0,
          sign_pub: alice.signPubHex,
          sealed_key: sealRoomKey(made, alice.kexPubHex),
          created_at: new Date().toISOString(),
        })
      )
    );
    const A2 = await honest(alice);
    await A2.publish(room.id, enc('alice after her restart')).catch(() => {});
    await sleep(500);
    const head = await store.rooms.head(room.id);
    assert.deepEqual(
      { resignedSeq0: head !== null && head.seq === 0, readByStoreWriter: anyOpens(seen, made) },
      { resignedSeq0: false, readByStoreWriter: [] },
      'the owner signed a second seq 0 (a fork of its own chain) and/or published under a key the store writer made'
    );
  });

  test("A3 rollback in process: a forged member.removed makes the owner reload an old chain and publish under the removed member's epoch", async () => {
    const [alice, bob, carol] = [
      await user('rb-alice'),
      await user('rb-bob'),
      await user('rb-carol'),
    ];
    const A = await lied(alice);
    const room = await A.createRoom({ subject: 'rb.room', policy: ENC });
    await A.invite(room.id, bob.signPubHex, 'writer');
    await A.invite(room.id, carol.signPubHex, 'writer');
    const k0 = await keyOf(carol, room.id, 0); // what carol holds
    const old = await ctlOf(alice).statements(room.id);
    const oldKeys = await ctlOf(alice).myKeys(room.id);
    await A.removeMember(room.id, carol.signPubHex); // and rekey to epoch 1
    assert.equal((await store.rooms.get(room.id))?.epoch, 1);
    const B = await honest(bob);
    const seen = tap(natsOf(B), room.subject);
    await natsOf(B).flush();

    // The forged event alone: the SDK checks the owner's statement and stays.
    let removedEmitted = false;
    A.once('removed', () => (removedEmitted = true));
    await tell(alice, { type: 'member.removed', room: room.id, sign_pub: alice.signPubHex });
    await sleep(1_500);
    assert.equal(removedEmitted, false, 'a forged member.removed was taken for the owner');
    proxy.intercept = (q) =>
      q.method === 'GET' && q.path === `/rooms/${room.id}/statements`
        ? { status: 200, body: replay(room.id, old)(q) }
        : undefined;
    proxy.lie = (q, body) =>
      q.path === `/rooms/${room.id}/keys`
        ? { ...body, epoch: 0, keys: oldKeys.keys }
        : q.method === 'GET' && q.path === `/rooms/${room.id}`
          ? { ...body, epoch: 0, needs_rekey: false }
          : undefined;
    try {
      await A.publish(room.id, enc('for bob only, carol is out')).catch(() => {});
      await sleep(500);
    } finally {
      proxy.intercept = undefined;
      proxy.lie = undefined;
    }
    assert.deepEqual(
      anyOpens(seen, k0),
      [],
      'the removed member (epoch 0 key) reads what the owner published'
    );
  });

  test('A4 rollback on a restarted client with its trust state: an old chain is refused', async () => {
    const [alice, bob, carol, vic] = [
      await user('rf-alice'),
      await user('rf-bob'),
      await user('rf-carol'),
      await user('rf-vic'),
    ];
    const A = await honest(alice);
    const room = await A.createRoom({ subject: 'rf.room', policy: ENC });
    await A.invite(room.id, bob.signPubHex, 'writer');
    await A.invite(room.id, carol.signPubHex, 'writer');
    await A.invite(room.id, vic.signPubHex, 'reader');
    const k0 = await keyOf(carol, room.id, 0);
    const old = await ctlOf(vic).statements(room.id);
    const oldKeys = await ctlOf(vic).myKeys(room.id);
    await A.removeMember(room.id, carol.signPubHex);
    // vic's application runs once after the removal and keeps its trust state.
    const first = await honest(vic);
    await first.subscribe(room.id, () => {});
    const kept = first.trustState();
    await first.close();
    // vic's application (re)starts; the control plane serves the chain as it was.
    proxy.intercept = (q) =>
      q.method === 'GET' && q.path === `/rooms/${room.id}/statements`
        ? { status: 200, body: replay(room.id, old)(q) }
        : undefined;
    proxy.lie = (q, body) =>
      q.path === `/rooms/${room.id}/keys` ? { ...body, epoch: 0, keys: oldKeys.keys } : undefined;
    try {
      // vic's application kept what its previous run trusted (trustState).
      const V = await lied(vic, { trustState: kept });
      const { got, rejected } = await collect(V, room.id).catch((err: unknown) => {
        assert.ok(err instanceof TrustError && err.code === 'ROLLBACK', String(err));
        return { got: [] as RoomMessage[], rejected: [{ code: 'ROLLBACK' }] };
      });
      const B = await honest(bob);
      natsOf(B).publish(
        room.subject,
        new FrameSealer(room.id, carol.signSeed).seal(enc('carol, removed'), {
          epoch: 0,
          key: k0,
          sign: true,
        })
      );
      await waitFor(() => got.length + rejected.length >= 1, { timeoutMs: 10_000, what: 'judged' });
      assert.deepEqual(
        got.map((m) => dec(m.data)),
        [],
        'a frame of the removed writer was delivered as from a current writer'
      );
    } finally {
      proxy.intercept = undefined;
      proxy.lie = undefined;
    }
  });

  test('A5 a valid chain of another room, or one signed by another owner, is refused (trustOwner set)', async () => {
    const [alice, bob, mallory] = [
      await user('fo-alice'),
      await user('fo-bob'),
      await user('fo-mallory'),
    ];
    const A = await honest(alice);
    const room = await A.createRoom({ subject: 'fo.room', policy: ENC });
    await A.invite(room.id, bob.signPubHex, 'writer');
    const M = await honest(mallory);
    const other = await M.createRoom({ subject: 'fo.other', policy: ENC });
    await M.invite(other.id, bob.signPubHex, 'writer');
    const otherChain = await ctlOf(mallory).statements(other.id);
    // 1. the chain of another room (valid, owner-signed) served for this one
    proxy.intercept = (q) =>
      q.method === 'GET' && q.path === `/rooms/${room.id}/statements`
        ? { status: 200, body: { ...otherChain, id: room.id } }
        : undefined;
    const B = await lied(bob, { trustOwner: (o) => o === alice.signPubHex });
    await assert.rejects(B.publish(room.id, enc('x')), isTrust('BAD_STATEMENT'));
    // 2. a whole room fabricated by mallory under this room's id, bob in it, a key she made
    const made = newRoomKey();
    const fake = authorStatement(mallory.signSeed, null, {
      room: room.id,
      subject: room.subject,
      policy: ENC,
      owner: mallory.signPubHex,
      epoch: 0,
      key: made,
      members: [
        [mallory.signPubHex, 'owner'],
        [bob.signPubHex, 'writer'],
      ],
    });
    proxy.intercept = (q) =>
      q.method === 'GET' && q.path === `/rooms/${room.id}/statements`
        ? {
            status: 200,
            body: {
              id: room.id,
              head: 0,
              statements: q.query.has('after') ? [] : [{ seq: 0, ...fake }],
            },
          }
        : undefined;
    proxy.lie = (q, body) =>
      q.path === `/rooms/${room.id}/keys`
        ? { ...body, keys: [{ epoch: 0, sealed_key: sealRoomKey(made, bob.kexPubHex) }] }
        : undefined;
    try {
      const B2 = await lied(bob, { trustOwner: (o) => o === alice.signPubHex });
      await assert.rejects(B2.publish(room.id, enc('x')), isTrust('UNTRUSTED_OWNER'));
    } finally {
      proxy.intercept = undefined;
      proxy.lie = undefined;
    }
  });

  test('A6 forged frames: a removed writer in a persisted room, after removal + rekey, is flagged formerMember, never current', async () => {
    const [alice, carol, vic] = [
      await user('pf-alice'),
      await user('pf-carol'),
      await user('pf-vic'),
    ];
    const A = await honest(alice);
    const room = await A.createRoom({
      subject: 'pf.room',
      policy: { encrypt: true, persist: true, sign: true },
    });
    await A.invite(room.id, carol.signPubHex, 'writer');
    await A.invite(room.id, vic.signPubHex, 'reader');
    const k0 = await keyOf(carol, room.id, 0);
    await A.removeMember(room.id, carol.signPubHex);
    // The store writer (or a lying daemon) appends carol's frame to the stream after her removal.
    const frame = new FrameSealer(room.id, carol.signSeed).seal(enc('carol after removal'), {
      epoch: 0,
      key: k0,
      sign: true,
    });
    await app.jetstream().publish(room.subject, frame);
    const V = await honest(vic);
    const { got, rejected } = await collect(V, room.id, { from: 'start' });
    await waitFor(() => got.length + rejected.length >= 1, { timeoutMs: 10_000, what: 'judged' });
    for (const m of got)
      if (m.sender === carol.signPubHex)
        assert.equal(m.formerMember, true, 'carol shown as a current writer');
  });

  test('A7 parsing a crafted 4 MB statement (50 000 members, bad signature) is refused quickly', () => {
    const members: Array<[string, MemberRole]> = [];
    for (let i = 0; i < 50_000; i++)
      members.push([randomBytes(32).toString('hex'), i === 0 ? 'owner' : 'writer']);
    members.sort((a, b) => (a[0] < b[0] ? -1 : 1));
    const owner = members.find((m) => m[1] === 'owner')![0];
    const room = 'a'.repeat(24);
    const text = JSON.stringify({
      created: '2024-01-01T00:00:00.000Z',
      epoch: 0,
      key_commitment: null,
      members,
      owner,
      policy: { encrypt: false, persist: false, sign: true },
      prev: null,
      room,
      seq: 0,
      subject: 'x.y',
    });
    const t = performance.now();
    assert.throws(
      () =>
        StatementChain.fromStatements(room, [{ seq: 0, statement: text, sig: '0'.repeat(128) }]),
      isTrust('BAD_STATEMENT')
    );
    assert.ok(performance.now() - t < 1_000, 'a crafted statement costs more than a second');
  });

  test('A8 canonical form: a statement re-encoded (escapes, 1.0, spaces, reordered keys) does not verify', async () => {
    const alice = generateIdentity();
    const room = 'b'.repeat(24);
    const s = authorStatement(alice.signSeed, null, {
      room,
      subject: 'c.r',
      policy: PLAIN_SIGNED,
      owner: alice.signPubHex,
      epoch: 0,
      key: null,
      members: [[alice.signPubHex, 'owner']],
    });
    StatementChain.fromStatements(room, [{ seq: 0, ...s }]);
    const variants = [
      s.statement.replace('"epoch":0', '"epoch":0.0'),
      s.statement.replace('"subject":"c.r"', '"subject":"c\\u002er"'),
      s.statement.replace(',"epoch"', ', "epoch"'),
      s.statement.replace(/^\{"created":("[^"]+"),"epoch":0,/, '{"epoch":0,"created":$1,'),
      s.statement + ' ',
    ];
    for (const v of variants) {
      assert.notEqual(v, s.statement);
      assert.throws(
        () => StatementChain.fromStatements(room, [{ seq: 0, statement: v, sig: s.sig }]),
        isTrust('BAD_STATEMENT')
      );
    }
  });

  test('A12 a lying needs_rekey/status cannot make the owner sign a rekey per publish (one per 10 s at most)', async () => {
    const [alice, bob] = [await user('nr-alice'), await user('nr-bob')];
    const A = await lied(alice);
    const room = await A.createRoom({ subject: 'nr.room', policy: ENC });
    await A.invite(room.id, bob.signPubHex, 'writer');
    // A compromised daemon takes what the owner signs: the proxy answers the rekey as done.
    const signed: string[] = [];
    proxy.intercept = (q, body) =>
      q.method === 'POST' && q.path === `/rooms/${room.id}/rekey`
        ? (signed.push(body.statement.statement),
          { status: 200, body: { id: room.id, subject: room.subject, epoch: body.epoch } })
        : undefined;
    proxy.lie = (q, body) =>
      q.method === 'GET' && q.path === `/rooms/${room.id}`
        ? {
            ...body,
            needs_rekey: true,
            members: body.members.map((m: any) =>
              m.sign_pub === bob.signPubHex ? { ...m, status: 'revoked' } : m
            ),
          }
        : undefined;
    try {
      // The daemon tells alice the room changed (it may say so whenever it likes).
      await tell(alice, { type: 'room.changed', room: room.id });
      await sleep(500);
      for (let i = 0; i < 5; i++) await A.publish(room.id, enc(`m${i}`)).catch(() => {});
    } finally {
      proxy.lie = undefined;
      proxy.intercept = undefined;
    }
    const evicting = signed.filter(
      (t) => !JSON.parse(t).members.some((m: [string, string]) => m[0] === bob.signPubHex)
    );
    // Who is revoked is the control plane's decision (docs/SECURITY.md: it
    // can leave a member out of the next epoch by saying so: denial of
    // service, not a read). What it must not get is a rekey per publish: the
    // owner's own rotations are rate-limited (one per room per 10 s).
    assert.ok(
      signed.length <= 1 && evicting.length <= 1,
      `the owner signed ${signed.length} rekeys on the daemon's word in one burst`
    );
  });

  test('A13 an adopted, unsigned encrypted room: a key served for an epoch before the first statement lets the daemon forge history as the owner', async () => {
    const [alice, vic] = [await user('ue-alice'), await user('ue-vic')];
    const POLICY = { encrypt: true, persist: true, sign: false };
    const A = await honest(alice);
    const room = await A.createRoom({ subject: 'ue.room', policy: POLICY });
    await A.invite(room.id, vic.signPubHex, 'reader');
    await A.rekey(room.id);
    await A.rekey(room.id);
    await A.close();
    // Make it a room from before statements (what a 0.1 store holds): no head, no statements.
    const kv = store.bucket('roomKeys');
    const head = (await store.rooms.head(room.id))!;
    for (let q = 0; q <= head.seq; q++) await kv.purge(`${room.id}.s.${q}`);
    await kv.purge(`${room.id}.head`);
    const A2 = await honest(alice);
    // The owner adopts it (explicitly, naming its members): epoch 3, a fresh key.
    await A2.adoptRoom(room.id, [[vic.signPubHex, 'reader']], { policy: POLICY });
    await A2.publish(room.id, enc('alice at epoch 3'));
    // The daemon serves vic a key it made for epoch 1 and appends a frame under it, as alice (unsigned).
    const made = newRoomKey();
    proxy.lie = (q, body) =>
      q.path === `/rooms/${room.id}/keys`
        ? {
            ...body,
            keys: body.keys.map((k: any) =>
              k.epoch === 1 ? { ...k, sealed_key: sealRoomKey(made, vic.kexPubHex) } : k
            ),
          }
        : undefined;
    const forged = new FrameSealer(room.id, alice.signSeed).seal(enc('forged by the daemon'), {
      epoch: 1,
      key: made,
      sign: false, // no signature: nothing of alice's secret is in these bytes
    });
    await app.jetstream().publish(room.subject, forged);
    try {
      const V = await lied(vic);
      const { got, rejected } = await collect(V, room.id, { from: 'start' });
      await waitFor(() => got.length + rejected.length >= 2, {
        timeoutMs: 10_000,
        what: 'history read',
      });
      assert.deepEqual(
        got.filter((m) => dec(m.data) === 'forged by the daemon').map((m) => m.sender),
        [],
        'a frame the daemon made was delivered as from the owner'
      );
    } finally {
      proxy.lie = undefined;
    }
  });

  test('A9 a large room: a chain of ordinary invites (340 members) still loads on a fresh client', async () => {
    const alice = await user('big-alice');
    const ctl = ctlOf(alice);
    const A = await honest(alice);
    const room = await A.createRoom({ subject: 'big.room', policy: PLAIN_SIGNED });
    const chain = StatementChain.fromStatements(
      room.id,
      (await ctl.statements(room.id)).statements
    );
    const rec = (await store.rooms.get(room.id))!;
    for (let i = 0; i < 340; i++) {
      const pub = randomBytes(32).toString('hex');
      const statement = authorStatement(alice.signSeed, chain, {
        room: room.id,
        subject: room.subject,
        policy: PLAIN_SIGNED,
        owner: alice.signPubHex,
        epoch: 0,
        key: null,
        members: [...chain.members(), [pub, 'writer']],
      });
      // As the invite route stores it (the invitees need not be real users for the chain's size).
      await store.rooms.addMember(rec, {
        signPub: pub,
        role: 'writer',
        addedBy: alice.signPubHex,
        statement,
      });
      chain.extend([{ seq: chain.seq + 1, ...statement }]);
    }
    const fresh = await honest(alice);
    await fresh.publish(room.id, enc('still usable')); // loads the room from seq 0
  });
});

describe(
  'cold review 11: a large encrypted room and the 64 KiB request limit',
  { timeout: 600_000 },
  () => {
    let d: TestDaemon;
    let admin: ControlClient;
    let store: MembershipStore;
    const closers: Array<() => Promise<unknown> | void> = [];
    before(async () => {
      d = await startDaemon();
      admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
      const n = await nodeStore(d);
      store = n.store;
      closers.push(
        () => n.nc.close(),
        () => n.app.close()
      );
    });
    after(async () => {
      for (const c of closers.reverse()) await Promise.resolve(c()).catch(() => {});
      admin?.close();
      await d?.dispose();
    });

    test('A10 removing a member of a 260-member encrypted room rotates the key (the removed member reads nothing new)', async () => {
      const alice = (await enrol(admin, d, 'lr-alice')).id;
      const A = await Sealbus.connect({
        natsServers: [d.natsUrl],
        controlUrls: [d.httpUrl],
        identity: alice,
      });
      closers.push(() => A.close());
      const room = await A.createRoom({ subject: 'lr.room', policy: ENC });
      const ctl = new ControlClient({ urls: [d.httpUrl], identity: alice });
      closers.push(() => ctl.close());
      const k0 = openRoomKey((await ctl.myKeys(room.id)).keys[0]!.sealed_key, alice);
      const chain = StatementChain.fromStatements(
        room.id,
        (await ctl.statements(room.id)).statements
      );
      const rec = (await store.rooms.get(room.id))!;
      const ids: Identity[] = [];
      for (let i = 0; i < 260; i++) {
        const id = (await enrol(admin, d, `lr-${i}`)).id;
        ids.push(id);
        const statement = authorStatement(alice.signSeed, chain, {
          room: room.id,
          subject: room.subject,
          policy: ENC,
          owner: alice.signPubHex,
          epoch: 0,
          key: k0,
          members: [...chain.members(), [id.signPubHex, 'writer']],
        });
        await store.rooms.addMember(rec, {
          signPub: id.signPubHex,
          role: 'writer',
          addedBy: alice.signPubHex,
          statement,
          sealedKey: sealRoomKey(k0, id.kexPubHex),
        });
        chain.extend([{ seq: chain.seq + 1, ...statement }]);
      }
      const victim = ids[0]!;
      let err: unknown;
      await A.removeMember(room.id, victim.signPubHex).catch((e) => (err = e));
      assert.equal(
        (await store.rooms.get(room.id))?.epoch,
        1,
        `no rotation after the removal (${(err as Error)?.message ?? 'no error'}): the removed member keeps reading with epoch 0`
      );
      void chain;
    });

    test('A11 the daemon survives a stored head whose seq is absurd (store writer)', async () => {
      const alice = (await enrol(admin, d, 'hs-alice')).id;
      const A = await Sealbus.connect({
        natsServers: [d.natsUrl],
        controlUrls: [d.httpUrl],
        identity: alice,
      });
      closers.push(() => A.close());
      const room = await A.createRoom({ subject: 'hs.room', policy: PLAIN_SIGNED });
      const kv = store.bucket('roomKeys');
      const head = await store.rooms.head(room.id);
      await kv.put(`${room.id}.head`, enc(JSON.stringify({ ...head, seq: 1e12 })));
      const ctl = new ControlClient({ urls: [d.httpUrl], identity: alice, timeoutMs: 10_000 });
      closers.push(() => ctl.close());
      let exited: unknown;
      void d.exited.then((x) => (exited = x));
      await ctl.statements(room.id).catch(() => {});
      await sleep(500);
      // Whatever it answered, the daemon is still there for everyone else.
      const probe = new ControlClient({
        urls: [d.httpUrl],
        identity: await adminOf(d),
        timeoutMs: 5_000,
      });
      const alive = await probe.me().then(
        () => true,
        () => false
      );
      probe.close();
      if (!alive) await d.crash(); // a daemon stuck in a loop ignores SIGTERM
      assert.deepEqual(
        { alive, exited },
        { alive: true, exited: undefined },
        'the daemon died or hung'
      );
    });
  }
);
