import { TrustError } from '@sealbus/client';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, nkeyAuthenticator, type NatsConnection } from 'nats';
import {
  encodePublicIdentity,
  generateIdentity,
  natsUserKey,
  publicIdentityOf,
  signKeyBinding,
  toHex,
  userNkeyFromSeed,
  type Identity,
} from '@sealbus/crypto';
import { ControlClient, ControlError, type RoomMessage } from '@sealbus/client';
import type { MembershipStore } from '@sealbus/store';
import { startDaemon, waitFor, type TestDaemon } from '@sealbus/testing';
import { adminOf, busOf, natsAs, nodeStore, rawRequest, signedHeaders } from './helpers.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const keysOf = (id: Identity) => {
  const p = publicIdentityOf(id);
  return { kex_pub: p.kexPubHex, nats_pub: p.natsPubHex, binding: p.bindingHex };
};
/** A token whose kex_pub byte was flipped after signing. */
const tampered = (id: Identity) => {
  const raw = Buffer.from(encodePublicIdentity(id).slice(6), 'base64url');
  raw[40]! ^= 1;
  return 'sbid1.' + raw.toString('base64url');
};
const isControl = (status: number, code: string) => (e: unknown) =>
  e instanceof ControlError && e.status === status && e.code === code;

describe('one key per protocol: bindings, tokens, the NATS key', { timeout: 240_000 }, () => {
  let d: TestDaemon;
  let adminId: Identity;
  let admin: ControlClient;
  let store: MembershipStore;
  let storeNc: NatsConnection;
  const closers: Array<() => Promise<unknown> | void> = [];

  before(async () => {
    d = await startDaemon();
    adminId = await adminOf(d);
    admin = new ControlClient({ urls: [d.httpUrl], identity: adminId });
    ({ store, nc: storeNc } = await nodeStore(d));
  });
  after(async () => {
    for (const c of closers.reverse()) await Promise.resolve(c()).catch(() => {});
    admin?.close();
    await storeNc?.close();
    await d?.dispose();
  });

  const client = (id: Identity) => {
    const ctl = new ControlClient({ urls: [d.httpUrl], identity: id });
    closers.push(() => ctl.close());
    return ctl;
  };
  const bus = (id: Identity) => busOf(d, id, closers);

  test('admin #0 is registered bound to its derived NATS key', async () => {
    const me = await admin.me();
    assert.equal(me.bound, true);
    assert.equal(me.nats_pub, adminId.natsPubHex);
    assert.equal(me.kex_pub, adminId.kexPubHex);
    assert.equal(me.binding, publicIdentityOf(adminId).bindingHex);
  });

  test('POST /users with a token registers a bound user; every view shows the fields', async () => {
    const id = generateIdentity();
    const user = await admin.addUser({
      public: encodePublicIdentity(id),
      handle: 'tokened',
      role: 'member',
    });
    assert.deepEqual(
      [user.sign_pub, user.kex_pub, user.nats_pub, user.binding, user.bound],
      [id.signPubHex, id.kexPubHex, id.natsPubHex, publicIdentityOf(id).bindingHex, true]
    );
    const listed = (await admin.listUsers()).find((u) => u.sign_pub === id.signPubHex);
    assert.deepEqual(listed, user);
    assert.deepEqual(await client(id).me(), user);
    const entry = await client(adminId).directory(id.signPubHex);
    assert.deepEqual(
      [entry.nats_pub, entry.binding, entry.bound],
      [id.natsPubHex, user.binding, true]
    );
    const audit = (await store.audit.tail(20)).filter(
      (r) => r.action === 'user.add' && r.target === id.signPubHex
    );
    assert.deepEqual(
      audit.map((r) => r.outcome),
      ['intent', 'ok']
    );
    assert.equal(audit[1]!.detail?.bound, true);
  });

  test('a bad token or binding is a 400 with a stable code, and nothing is written', async () => {
    const id = generateIdentity();
    const other = generateIdentity();
    const usersBefore = (await store.listUsers()).length;
    const auditBefore = (await store.audit.tail(100_000)).length;
    const post = async (body: Record<string, unknown>) => {
      const text = JSON.stringify(body);
      const url = `${d.httpUrl}/users`;
      return rawRequest(
        d.httpUrl,
        'POST',
        '/users',
        signedHeaders(adminId, 'POST', url, text),
        text
      );
    };
    const cases: Array<[string, Record<string, unknown>, string]> = [
      ['tampered token', { public: tampered(id) }, 'BAD_BINDING'],
      ['truncated token', { public: encodePublicIdentity(id).slice(0, -4) }, 'BAD_TOKEN'],
      ['wrong prefix', { public: 'sbid2.' + encodePublicIdentity(id).slice(6) }, 'BAD_TOKEN'],
      [
        'fields with a binding for other keys',
        { sign_pub: id.signPubHex, ...keysOf(id), nats_pub: other.natsPubHex },
        'BAD_BINDING',
      ],
      ["another identity's binding", { sign_pub: id.signPubHex, ...keysOf(other) }, 'BAD_BINDING'],
      ['token and keys', { public: encodePublicIdentity(id), sign_pub: id.signPubHex }, 'INVALID'],
    ];
    for (const [name, body, code] of cases) {
      const r = await post({ ...body, handle: 'bad', role: 'admin' });
      assert.equal(r.status, 400, `${name}: ${JSON.stringify(r.json)}`);
      assert.equal(r.json.error.code, code, name);
    }
    assert.equal((await store.listUsers()).length, usersBefore, 'no user written');
    assert.equal(await store.getUser(id.signPubHex), null);
    assert.equal(await store.bucket('natsKeys').get(id.natsPubHex), null, 'no index row');
    assert.equal(await store.bucket('natsKeys').get(other.natsPubHex), null, 'no index row');
    assert.equal((await store.audit.tail(100_000)).length, auditBefore, 'nothing audited');
  });

  test('PUT /me/keys: self only, verified, idempotent, audited as user.keys', async () => {
    const id = generateIdentity();
    await admin.addUser({ sign_pub: id.signPubHex, handle: 'selfbind', role: 'member' });
    const ctl = client(id);
    assert.equal((await ctl.me()).bound, false);

    // Another identity's keys and binding: the binding is checked against
    // the signer's own sign_pub, so it cannot be planted on this record.
    const other = generateIdentity();
    await assert.rejects(ctl.setMyKeys(keysOf(other)), isControl(400, 'BAD_BINDING'));
    // Our keys, signed over another NATS key: refused.
    await assert.rejects(
      ctl.setMyKeys({ ...keysOf(id), nats_pub: other.natsPubHex }),
      isControl(400, 'BAD_BINDING')
    );
    assert.equal((await ctl.me()).bound, false, 'nothing written');

    const auditBefore = (await store.audit.tail(100_000)).length;
    const first = await ctl.setMyKeys(keysOf(id));
    assert.equal(first.changed, true);
    assert.deepEqual(
      [first.user.bound, first.user.kex_pub, first.user.nats_pub],
      [true, id.kexPubHex, id.natsPubHex]
    );
    const again = await ctl.setMyKeys(keysOf(id));
    assert.equal(again.changed, false);
    assert.deepEqual(again.user, first.user);
    const records = (await store.audit.tail(100_000)).slice(auditBefore);
    assert.deepEqual(
      records.map((r) => [r.action, r.actor, r.target, r.outcome]),
      [
        ['user.keys', id.signPubHex, id.signPubHex, 'intent'],
        ['user.keys', id.signPubHex, id.signPubHex, 'ok'],
      ],
      'audited once (its intent, then its outcome), for the change'
    );

    // An admin's PUT /me/keys only ever touches the admin's own record.
    await assert.rejects(admin.setMyKeys(keysOf(id)), isControl(400, 'BAD_BINDING'));
    // A registered kex_pub is never replaced.
    const k = generateIdentity();
    await admin.addUser({
      sign_pub: k.signPubHex,
      kex_pub: generateIdentity().kexPubHex,
      handle: 'haskex',
      role: 'member',
    });
    await assert.rejects(client(k).setMyKeys(keysOf(k)), isControl(409, 'CONFLICT'));
    assert.equal((await store.getUser(k.signPubHex))!.bound, false);
    // Nobody may claim a NATS key that is bound to another active user.
    const squatter = generateIdentity();
    await admin.addUser({ sign_pub: squatter.signPubHex, handle: 'squat', role: 'member' });
    const claim = { ...squatter, natsPub: id.natsPub };
    await assert.rejects(
      client(squatter).setMyKeys({
        kex_pub: squatter.kexPubHex,
        nats_pub: id.natsPubHex,
        binding: toHex(signKeyBinding(claim)),
      }),
      isControl(409, 'CONFLICT')
    );
    // Unknown signers get nothing.
    await assert.rejects(
      client(generateIdentity()).setMyKeys(keysOf(generateIdentity())),
      (e: unknown) => e instanceof ControlError && e.status === 401
    );
  });

  test('the callout refuses a sign key presented as a NATS key; the derived key is admitted', async () => {
    const id = generateIdentity();
    await admin.addUser({ public: encodePublicIdentity(id), handle: 'twokeys', role: 'member' });
    const before = d.logs.length;
    await assert.rejects(
      connect({
        servers: d.natsUrl,
        authenticator: nkeyAuthenticator(enc(userNkeyFromSeed(id.signSeed).seed)),
        maxReconnectAttempts: 0,
      }),
      /Authorization Violation/
    );
    await waitFor(
      () =>
        d.logs
          .slice(before)
          .some(
            (l) =>
              l.msg === 'callout: denied' &&
              l.nkey === userNkeyFromSeed(id.signSeed).publicKey &&
              /sign key is never a NATS key/.test(String(l.reason))
          ),
      { timeoutMs: 5_000, what: 'the sign-key denial and its reason in the log' }
    );
    // The admin's (bound) sign key is refused just the same.
    await assert.rejects(
      connect({
        servers: d.natsUrl,
        authenticator: nkeyAuthenticator(enc(userNkeyFromSeed(adminId.signSeed).seed)),
        maxReconnectAttempts: 0,
      }),
      /Authorization Violation/
    );
    const nc = await natsAs(d, id);
    closers.push(() => nc.close());
    // Admitted: a round trip to the server works on the derived key.
    await nc.flush();
    assert.equal(nc.isClosed(), false);
  });

  test('an unbound legacy user is bound by the SDK at connect, then uses rooms', async () => {
    const legacy = generateIdentity();
    const peer = generateIdentity();
    // Registered the old way: sign_pub (and kex_pub) only.
    await admin.addUser({
      sign_pub: legacy.signPubHex,
      kex_pub: legacy.kexPubHex,
      handle: 'legacy',
      role: 'member',
    });
    await admin.addUser({ sign_pub: peer.signPubHex, handle: 'legacy-peer', role: 'member' });
    // Before binding, its derived NATS key is unknown to the callout.
    await assert.rejects(natsAs(d, legacy), /Authorization Violation/);

    const L = await bus(legacy);
    const me = await store.getUser(legacy.signPubHex);
    assert.deepEqual([me!.bound, me!.nats_pub], [true, legacy.natsPubHex]);
    const P = await bus(peer);
    assert.equal((await store.getUser(peer.signPubHex))!.kex_pub, peer.kexPubHex, 'kex_pub set');

    const room = await L.createRoom({
      subject: 'legacy.chat',
      policy: { encrypt: true, persist: false, sign: true },
    });
    await L.invite(room.id, peer.signPubHex, 'writer');
    const got: RoomMessage[] = [];
    await P.subscribe(room.id, (m) => void got.push(m));
    await L.publish(room.id, enc('bound now'));
    await waitFor(() => got.length > 0, { timeoutMs: 10_000, what: 'the message' });
    assert.equal(dec(got[0]!.data), 'bound now');
    assert.equal(got[0]!.sender, legacy.signPubHex);
    // Connecting again changes nothing (the binding verifies locally).
    const auditBefore = (await store.audit.tail(100_000)).length;
    const again = await bus(legacy);
    await again.close();
    const newer = (await store.audit.tail(100_000)).slice(auditBefore);
    assert.equal(newer.filter((r) => r.action === 'user.keys').length, 0);
  });

  test('the SDK refuses to seal a room key to a kex_pub whose binding does not verify', async () => {
    const owner = generateIdentity();
    const member = generateIdentity();
    const victim = generateIdentity();
    for (const [id, handle] of [
      [owner, 'sealer'],
      [member, 'member'],
      [victim, 'target'],
    ] as const)
      await admin.addUser({ public: encodePublicIdentity(id), handle, role: 'member' });
    const O = await bus(owner);
    const room = await O.createRoom({
      subject: 'swap.chat',
      policy: { encrypt: true, persist: false, sign: true },
    });
    await O.invite(room.id, member.signPubHex);
    // Whoever controls the store swaps in kex_pubs of its own, keeping the bindings.
    const swap = async (id: Identity) => {
      const row = (await store.getUser(id.signPubHex))!;
      const forged = { ...row, kex_pub: generateIdentity().kexPubHex };
      await store.bucket('users').put(id.signPubHex, enc(JSON.stringify(forged)));
    };
    await swap(victim);
    await swap(member);
    // Inviting (directory) and rekeying (room members) both check the binding.
    const unbound = (e: unknown) => e instanceof TrustError && e.code === 'UNBOUND_KEY';
    await assert.rejects(O.invite(room.id, victim.signPubHex), unbound);
    await assert.rejects(O.rekey(room.id), unbound);
    assert.equal((await O.control.getRoom(room.id)).epoch, 0, 'no key was sealed to a forged key');
    // The callout re-verifies too: the victim's NATS key no longer gets in.
    await assert.rejects(natsAs(d, victim), /Authorization Violation/);
    await waitFor(
      () =>
        d.logs.some(
          (l) =>
            l.msg === 'callout: denied' &&
            l.nkey === natsUserKey(victim).publicKey &&
            /binding/.test(String(l.reason))
        ),
      { timeoutMs: 5_000, what: 'the unbound denial in the log' }
    );
  });
});
