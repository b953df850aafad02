import { signedCtl } from './author.js';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from 'nats';
import { httpbis } from 'http-message-signatures';
import {
  ed25519Signer,
  generateIdentity,
  requestSigner,
  signRequest,
  type Identity,
} from '@sealbus/crypto';
import { ControlClient, ControlError } from '@sealbus/client';
import { newRoomKey, openRoomKey, sealRoomKey } from '@sealbus/client/internal';
import { USER_CACHE_BOUND_MS, type MembershipStore } from '@sealbus/store';
import { freePort, runMembershipd, startDaemon, type TestDaemon } from '@sealbus/testing';
import { adminOf, enrol, nodeStore, rawRequest, signedHeaders } from './helpers.js';

const isControl = (status: number, code: string) => (e: unknown) =>
  e instanceof ControlError && e.status === status && e.code === code;
const ENC = { encrypt: true, persist: false, sign: true };

describe('signed control plane', { timeout: 240_000 }, () => {
  let d: TestDaemon;
  let admin: Identity;
  let adminCtl: ControlClient;
  let store: MembershipStore;
  let nc: NatsConnection;
  const auditCount = async () => (await store.audit.tail(100_000)).length;

  before(async () => {
    d = await startDaemon();
    admin = await adminOf(d);
    adminCtl = new ControlClient({ urls: [d.httpUrl], identity: admin });
    ({ store, nc } = await nodeStore(d));
  });
  after(async () => {
    adminCtl?.close();
    await nc?.close();
    await d?.dispose();
  });

  test('health, readiness and the OpenAPI document need no signature; everything else does', async () => {
    for (const p of ['/healthz', '/readyz', '/openapi.json']) {
      assert.equal((await rawRequest(d.httpUrl, 'GET', p, {})).status, 200, p);
    }
    const doc = (await rawRequest(d.httpUrl, 'GET', '/openapi.json', {})).json;
    assert.equal(doc.openapi, '3.0.3');
    for (const p of [
      '/users',
      '/users/{sign_pub}/revoke',
      '/me',
      '/rooms',
      '/rooms/{id}',
      '/rooms/{id}/members',
      '/rooms/{id}/members/{sign_pub}',
      '/rooms/{id}/rekey',
      '/rooms/{id}/keys',
    ]) {
      assert.ok(doc.paths[p], `OpenAPI lists ${p}`);
    }
    assert.ok(
      doc.paths['/users'].post.requestBody.content['application/json'].schema.properties.sign_pub
    );
    for (const [m, p] of [
      ['GET', '/me'],
      ['GET', '/users'],
      ['GET', '/rooms'],
      ['POST', '/rooms'],
    ]) {
      const r = await rawRequest(d.httpUrl, m!, p!, {});
      assert.equal(r.status, 401, `${m} ${p}`);
      assert.equal(r.json.error.code, 'SIGNATURE_MISSING');
    }
  });

  test('the SDK signs; /me answers with the signer', async () => {
    const me = await adminCtl.me();
    assert.equal(me.sign_pub, admin.signPubHex);
    assert.equal(me.role, 'admin');
  });

  test('a request signed by an independent RFC 9421 library is accepted', async () => {
    const ed = ed25519Signer(admin.signSeed);
    const url = `${d.httpUrl}/me`;
    const signed = await httpbis.signMessage(
      {
        key: {
          id: admin.signPubHex,
          alg: 'ed25519',
          sign: async (data: Buffer) => Buffer.from(ed.sign(data)),
        },
        name: 'sig1',
        fields: ['@method', '@authority', '@path', '@query'],
        params: ['created', 'expires', 'nonce', 'keyid', 'alg', 'tag'],
        paramValues: {
          created: new Date(),
          expires: new Date(Date.now() + 30_000),
          nonce: Buffer.from(crypto.getRandomValues(new Uint8Array(16))).toString('base64url'),
          tag: 'sealbus',
        },
      },
      { method: 'GET', url, headers: {} }
    );
    const headers = Object.fromEntries(
      Object.entries(signed.headers).map(([k, v]) => [k, String(v)])
    );
    const r = await rawRequest(d.httpUrl, 'GET', '/me', headers);
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal(r.json.user.sign_pub, admin.signPubHex);
  });

  test('malformed signatures: each refused with its code, and nothing is written', async () => {
    const target = generateIdentity();
    const body = JSON.stringify({ sign_pub: target.signPubHex, handle: 'never', role: 'admin' });
    const url = `${d.httpUrl}/users`;
    const good = () => signedHeaders(admin, 'POST', url, body);
    const auditBefore = await auditCount();
    const usersBefore = (await store.listUsers()).length;
    const edit = (f: (h: Record<string, string>) => void) => {
      const h = good();
      f(h);
      return h;
    };
    const table: Array<[string, Record<string, string>, string]> = [
      ['unsigned', { 'content-type': 'application/json' }, 'SIGNATURE_MISSING'],
      [
        'Authorization: Bearer instead',
        { 'content-type': 'application/json', authorization: 'Bearer x' },
        'SIGNATURE_MISSING',
      ],
      ['Signature-Input missing', edit((h) => delete h['signature-input']), 'SIGNATURE_MISSING'],
      [
        'Signature garbage',
        edit((h) => (h['signature'] = 'sig1=not base64')),
        'SIGNATURE_MALFORMED',
      ],
      [
        'Signature-Input garbage',
        edit((h) => (h['signature-input'] = 'sig1=("@method"')),
        'SIGNATURE_MALFORMED',
      ],
      [
        'label mismatch',
        edit((h) => (h['signature'] = h['signature']!.replace('sig1=', 'sig9='))),
        'LABEL_MISMATCH',
      ],
      [
        'content-digest not covered',
        edit(
          (h) => (h['signature-input'] = h['signature-input']!.replace(' "content-digest"', ''))
        ),
        'COMPONENT_MISSING',
      ],
      [
        'nonce missing',
        edit((h) => (h['signature-input'] = h['signature-input']!.replace(/;nonce="[^"]*"/, ''))),
        'PARAMETER_MISSING',
      ],
      [
        'wrong alg',
        edit(
          (h) => (h['signature-input'] = h['signature-input']!.replace('ed25519', 'rsa-pss-sha512'))
        ),
        'BAD_ALG',
      ],
      [
        'wrong tag',
        edit((h) => (h['signature-input'] = h['signature-input']!.replace('"sealbus"', '"other"'))),
        'BAD_TAG',
      ],
      ['unknown key', signedHeaders(generateIdentity(), 'POST', url, body), 'UNKNOWN_KEY'],
      [
        'bad signature',
        edit((h) => (h['signature'] = `sig1=:${Buffer.alloc(64, 7).toString('base64')}:`)),
        'BAD_SIGNATURE',
      ],
      ['digest missing', edit((h) => delete h['content-digest']), 'COMPONENT_MISSING'],
      [
        'expired',
        signedHeaders(admin, 'POST', url, body, {
          now: Math.floor(Date.now() / 1000) - 200,
          lifetimeSec: 60,
        }),
        'EXPIRED',
      ],
      [
        'created in the future',
        signedHeaders(admin, 'POST', url, body, { now: Math.floor(Date.now() / 1000) + 600 }),
        'CREATED_IN_FUTURE',
      ],
      [
        'too old',
        signedHeaders(admin, 'POST', url, body, {
          now: Math.floor(Date.now() / 1000) - 400,
          lifetimeSec: 299,
        }),
        'SIGNATURE_TOO_OLD',
      ],
    ];
    for (const [name, headers, code] of table) {
      const r = await rawRequest(d.httpUrl, 'POST', '/users', headers, body);
      assert.equal(r.status, 401, `${name}: ${JSON.stringify(r.json)}`);
      assert.equal(r.json.error.code, code, name);
    }
    assert.equal(await auditCount(), auditBefore, 'no audit record for refused requests');
    assert.equal((await store.listUsers()).length, usersBefore, 'no user added');
    assert.equal(await store.getUser(target.signPubHex), null);
  });

  test('tampering with any covered part after signing is refused', async () => {
    const target = generateIdentity();
    const body = JSON.stringify({ sign_pub: target.signPubHex, handle: 'tamper', role: 'member' });
    const url = `${d.httpUrl}/users?x=1`;
    const other = JSON.stringify({ sign_pub: target.signPubHex, handle: 'tamper', role: 'admin' });
    const cases: Array<[string, () => Promise<{ status: number; json: any }>, string]> = [
      [
        'method',
        () => rawRequest(d.httpUrl, 'POST', '/users?x=1', signedHeaders(admin, 'GET', url)),
        'BAD_SIGNATURE',
      ],
      [
        'path',
        () =>
          rawRequest(
            d.httpUrl,
            'POST',
            '/userz?x=1',
            signedHeaders(admin, 'POST', url, body),
            body
          ),
        'NOT_FOUND',
      ],
      [
        'path: a revoke redirected to another user',
        () =>
          rawRequest(
            d.httpUrl,
            'POST',
            `/users/${'cd'.repeat(32)}/revoke`,
            signedHeaders(admin, 'POST', `${d.httpUrl}/users/${'ab'.repeat(32)}/revoke`)
          ),
        'BAD_SIGNATURE',
      ],
      [
        'query',
        () =>
          rawRequest(
            d.httpUrl,
            'POST',
            '/users?x=2',
            signedHeaders(admin, 'POST', url, body),
            body
          ),
        'BAD_SIGNATURE',
      ],
      [
        'authority',
        () =>
          rawRequest(
            d.httpUrl,
            'POST',
            '/users?x=1',
            { ...signedHeaders(admin, 'POST', url, body), host: 'example.test' },
            body
          ),
        'WRONG_AUTHORITY',
      ],
      [
        'body',
        () =>
          rawRequest(
            d.httpUrl,
            'POST',
            '/users?x=1',
            signedHeaders(admin, 'POST', url, body),
            other
          ),
        'DIGEST_MISMATCH',
      ],
      [
        'content-type',
        () =>
          rawRequest(
            d.httpUrl,
            'POST',
            '/users?x=1',
            { ...signedHeaders(admin, 'POST', url, body), 'content-type': 'text/plain' },
            body
          ),
        'BAD_SIGNATURE',
      ],
    ];
    for (const [name, send, code] of cases) {
      const r = await send();
      assert.ok(
        r.status === 401 || (code === 'NOT_FOUND' && r.status === 404),
        `${name}: ${r.status}`
      );
      assert.equal(r.json.error.code, code, name);
    }
    assert.equal(await store.getUser(target.signPubHex), null);
  });

  test('an accepted request replayed is refused; so is a nonce reused for another request', async () => {
    const headers = signedHeaders(admin, 'GET', `${d.httpUrl}/me`);
    assert.equal((await rawRequest(d.httpUrl, 'GET', '/me', headers)).status, 200);
    const again = await rawRequest(d.httpUrl, 'GET', '/me', headers);
    assert.equal(again.status, 401);
    assert.equal(again.json.error.code, 'REPLAYED');
    // The same nonce on a different, freshly signed request (another path,
    // a valid signature of its own): the nonce is what is single-use.
    const nonce = 'reused-nonce-' + Date.now();
    const first = signedHeaders(admin, 'GET', `${d.httpUrl}/me`, undefined, { nonce });
    assert.equal((await rawRequest(d.httpUrl, 'GET', '/me', first)).status, 200);
    const other = signedHeaders(admin, 'GET', `${d.httpUrl}/users`, undefined, { nonce });
    const reused = await rawRequest(d.httpUrl, 'GET', '/users', other);
    assert.equal(reused.status, 401);
    assert.equal(reused.json.error.code, 'REPLAYED');
    // A fresh nonce on that same request is served: the refusal was the nonce.
    const fresh = signedHeaders(admin, 'GET', `${d.httpUrl}/users`);
    assert.equal((await rawRequest(d.httpUrl, 'GET', '/users', fresh)).status, 200);
  });

  test('users: admin only (default deny), 409 re-add leaves the row, 404 unknown revoke, revoked admin denied at once', async () => {
    const member = await enrol(adminCtl, d, 'plain-member');
    const victim = generateIdentity();
    const auditBefore = await auditCount();
    await assert.rejects(member.ctl.listUsers(), isControl(403, 'FORBIDDEN'));
    await assert.rejects(
      member.ctl.addUser({ sign_pub: victim.signPubHex, handle: 'sneaky', role: 'admin' }),
      isControl(403, 'FORBIDDEN')
    );
    await assert.rejects(member.ctl.revokeUser(admin.signPubHex), isControl(403, 'FORBIDDEN'));
    assert.equal(await store.getUser(victim.signPubHex), null, 'the handler did not run');
    assert.equal((await store.getUser(admin.signPubHex))?.status, 'active');
    const denied = (await store.audit.tail(10)).slice(-3);
    assert.equal(await auditCount(), auditBefore + 3);
    assert.deepEqual(
      denied.map((r) => [r.action, r.outcome, r.actor]),
      [
        ['user.list', 'denied', member.id.signPubHex],
        ['user.add', 'denied', member.id.signPubHex],
        ['user.revoke', 'denied', member.id.signPubHex],
      ]
    );

    const before = await store.getUser(member.id.signPubHex);
    await assert.rejects(
      adminCtl.addUser({ sign_pub: member.id.signPubHex, handle: 'other', role: 'admin' }),
      isControl(409, 'CONFLICT')
    );
    assert.deepEqual(await store.getUser(member.id.signPubHex), before);
    await assert.rejects(adminCtl.revokeUser('ee'.repeat(32)), isControl(404, 'NOT_FOUND'));
    await assert.rejects(
      adminCtl.addUser({ sign_pub: 'abc', handle: 'x', role: 'member' }),
      (e: unknown) => (e as Error).name === 'ValidationError',
      'the SDK validates with the shared schemas before sending'
    );
    const bad = await rawRequest(
      d.httpUrl,
      'POST',
      '/users',
      signedHeaders(
        admin,
        'POST',
        `${d.httpUrl}/users`,
        '{"sign_pub":"abc","handle":"x","role":"member"}'
      ),
      '{"sign_pub":"abc","handle":"x","role":"member"}'
    );
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error.code, 'INVALID');

    const second = await enrol(adminCtl, d, 'second-admin', 'admin');
    assert.equal((await second.ctl.listUsers()).length > 0, true);
    const r = await adminCtl.revokeUser(second.id.signPubHex);
    assert.equal(r.user.status, 'revoked');
    await assert.rejects(second.ctl.listUsers(), isControl(401, 'REVOKED_KEY'));
    await assert.rejects(second.ctl.me(), isControl(401, 'REVOKED_KEY'));
    const listed = (await adminCtl.listUsers()).find((u) => u.sign_pub === second.id.signPubHex);
    assert.equal(listed?.status, 'revoked', 'GET /users includes revoked users');
  });

  test('rooms: create, list, members only, owner-only changes, keys per member', async () => {
    const alice = await enrol(adminCtl, d, 'alice');
    const bob = await enrol(adminCtl, d, 'bob');
    const carol = await enrol(adminCtl, d, 'carol');
    const k0 = newRoomKey();
    const room = await signedCtl(alice.ctl, alice.id).createRoom({
      subject: 'team.alpha',
      policy: ENC,
      sealed_key: sealRoomKey(k0, alice.id.kexPubHex),
    });
    assert.equal(room.role, 'owner');
    assert.equal(room.owner, alice.id.signPubHex);
    assert.equal(room.subject, 'team.alpha');
    await assert.rejects(
      signedCtl(bob.ctl, bob.id).createRoom({
        subject: 'team.alpha',
        policy: ENC,
        sealed_key: sealRoomKey(newRoomKey(), bob.id.kexPubHex),
      }),
      isControl(409, 'CONFLICT')
    );
    for (const subject of [
      'a..b',
      'a.*',
      'a.>',
      '$SYS.x',
      '_INBOX.x',
      'sealbus.audit',
      'has space',
    ]) {
      await assert.rejects(
        alice.ctl.request('POST', '/rooms', (await import('zod')).z.any(), {
          // Everything else well-formed: only the subject can be what is refused.
          id: '0'.repeat(24),
          statement: { statement: '{}', sig: '0'.repeat(128) },
          subject,
          policy: ENC,
          sealed_key: sealRoomKey(k0, alice.id.kexPubHex),
        }),
        isControl(400, 'INVALID'),
        subject
      );
    }
    await assert.rejects(bob.ctl.getRoom(room.id), isControl(403, 'NOT_A_MEMBER'));
    await assert.rejects(bob.ctl.myKeys(room.id), isControl(403, 'NOT_A_MEMBER'));

    const added = await signedCtl(alice.ctl, alice.id).addMember(room.id, {
      sign_pub: bob.id.signPubHex,
      role: 'writer',
      sealed_key: sealRoomKey(k0, bob.id.kexPubHex),
    });
    assert.equal(added.id, room.id);
    assert.equal(added.subject, 'team.alpha');
    assert.equal(added.member.role, 'writer');
    await assert.rejects(
      signedCtl(alice.ctl, alice.id).addMember(room.id, {
        sign_pub: bob.id.signPubHex,
        role: 'reader',
        sealed_key: sealRoomKey(k0, bob.id.kexPubHex),
      }),
      isControl(409, 'CONFLICT')
    );
    await assert.rejects(
      signedCtl(alice.ctl, alice.id).addMember(room.id, {
        sign_pub: generateIdentity().signPubHex,
        role: 'reader',
        sealed_key: sealRoomKey(k0, bob.id.kexPubHex),
      }),
      isControl(404, 'USER_NOT_FOUND')
    );

    // owner-only routes deny a (non-owner) member, and are audited
    await assert.rejects(
      signedCtl(bob.ctl, bob.id).addMember(room.id, {
        sign_pub: carol.id.signPubHex,
        role: 'reader',
        sealed_key: sealRoomKey(k0, carol.id.kexPubHex),
      }),
      isControl(403, 'NOT_OWNER')
    );
    await assert.rejects(
      signedCtl(bob.ctl, bob.id).removeMember(room.id, alice.id.signPubHex),
      isControl(403, 'NOT_OWNER')
    );
    await assert.rejects(
      signedCtl(bob.ctl, bob.id).rekey(room.id, { epoch: 1, sealed_keys: {} }),
      isControl(403, 'NOT_OWNER')
    );
    await assert.rejects(
      // Not a member: cannot read the statements to sign on, so a well-formed stand-in.
      carol.ctl.removeMember(room.id, bob.id.signPubHex, {
        statement: { statement: '{}', sig: '0'.repeat(128) },
      }),
      isControl(403, 'NOT_A_MEMBER')
    );
    assert.equal(await store.rooms.membership(room.id, carol.id.signPubHex), null);
    const denials = (await store.audit.tail(4)).map((r) => [r.action, r.outcome]);
    assert.deepEqual(denials, [
      ['room.member.add', 'denied'],
      ['room.member.remove', 'denied'],
      ['room.rekey', 'denied'],
      ['room.member.remove', 'denied'],
    ]);

    const detail = await bob.ctl.getRoom(room.id);
    assert.equal(detail.id, room.id);
    assert.equal(detail.role, 'writer');
    assert.deepEqual(detail.members.map((m) => [m.handle, m.role]).sort(), [
      ['alice', 'owner'],
      ['bob', 'writer'],
    ]);
    assert.deepEqual(
      (await bob.ctl.listMyRooms()).map((r) => [r.id, r.role]),
      [[room.id, 'writer']]
    );
    const bobKeys = await bob.ctl.myKeys(room.id);
    assert.equal(bobKeys.subject, 'team.alpha');
    assert.deepEqual(
      openRoomKey(bobKeys.keys[0]!.sealed_key, bob.id),
      k0,
      'bob opens the key alice sealed to him'
    );
  });

  test('remove + rekey: wrong epoch 409, wrong member set 400 BAD_STATEMENT, both change nothing; then a clean rotation', async () => {
    const owner = await enrol(adminCtl, d, 'owner2');
    const m1 = await enrol(adminCtl, d, 'm1');
    const m2 = await enrol(adminCtl, d, 'm2');
    const k0 = newRoomKey();
    const room = await signedCtl(owner.ctl, owner.id).createRoom({
      subject: 'team.rekey',
      policy: ENC,
      sealed_key: sealRoomKey(k0, owner.id.kexPubHex),
    });
    for (const m of [m1, m2]) {
      await signedCtl(owner.ctl, owner.id).addMember(room.id, {
        sign_pub: m.id.signPubHex,
        role: 'reader',
        sealed_key: sealRoomKey(k0, m.id.kexPubHex),
      });
    }
    const removed = await signedCtl(owner.ctl, owner.id).removeMember(room.id, m2.id.signPubHex);
    assert.equal(removed.needs_rekey, true);
    await assert.rejects(m2.ctl.myKeys(room.id), isControl(403, 'NOT_A_MEMBER'));

    const k1 = newRoomKey();
    const sealedFor = (...ms: Array<{ id: Identity }>) =>
      Object.fromEntries(ms.map((m) => [m.id.signPubHex, sealRoomKey(k1, m.id.kexPubHex)]));
    await assert.rejects(
      signedCtl(owner.ctl, owner.id).rekey(room.id, {
        epoch: 2,
        sealed_keys: sealedFor(owner, m1),
      }),
      isControl(409, 'CONFLICT')
    );
    await assert.rejects(
      signedCtl(owner.ctl, owner.id).rekey(room.id, { epoch: 1, sealed_keys: sealedFor(owner) }),
      isControl(400, 'BAD_STATEMENT')
    );
    await assert.rejects(
      signedCtl(owner.ctl, owner.id).rekey(room.id, {
        epoch: 1,
        sealed_keys: sealedFor(owner, m1, m2),
      }),
      isControl(400, 'BAD_STATEMENT')
    );
    const unchanged = await owner.ctl.getRoom(room.id);
    assert.equal(unchanged.epoch, 0);
    assert.equal(unchanged.needs_rekey, true);
    assert.deepEqual(
      (await m1.ctl.myKeys(room.id)).keys.map((k) => k.epoch),
      [0]
    );

    const r = await signedCtl(owner.ctl, owner.id).rekey(room.id, {
      epoch: 1,
      sealed_keys: sealedFor(owner, m1),
    });
    assert.deepEqual(r, { id: room.id, subject: 'team.rekey', epoch: 1 });
    const keys = await m1.ctl.myKeys(room.id);
    assert.deepEqual(
      keys.keys.map((k) => k.epoch),
      [0, 1]
    );
    assert.deepEqual(openRoomKey(keys.keys[1]!.sealed_key, m1.id), k1);
    assert.equal((await owner.ctl.getRoom(room.id)).needs_rekey, false);
  });

  test('every state change is audited without secrets; `membershipd audit tail` reads it', async () => {
    const records = await store.audit.tail(100_000);
    const actions = new Set(records.filter((r) => r.outcome === 'ok').map((r) => r.action));
    for (const a of [
      'user.add',
      'user.revoke',
      'room.create',
      'room.member.add',
      'room.member.remove',
      'room.rekey',
    ]) {
      assert.ok(actions.has(a), `audited: ${a}`);
    }
    const text = JSON.stringify(records);
    assert.ok(!/sealed_key/.test(text), 'no sealed keys in the audit log');
    const keys = await store.rooms
      .keysOf(records.find((r) => r.action === 'room.rekey')!.target!, admin.signPubHex)
      .catch(() => []);
    assert.equal(keys.length, 0);
    const cli = await runMembershipd([
      'audit',
      'tail',
      '--data',
      d.dataDir,
      '-n',
      '3',
      '-o',
      'json',
    ]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.deepEqual(JSON.parse(cli.stdout), records.slice(-3));
    const textOut = await runMembershipd(['audit', 'tail', '--data', d.dataDir, '-n', '2']);
    assert.equal(textOut.stdout.trim().split('\n').length, 2);
    assert.match(textOut.stdout, /(ok|denied)\s+\S+\s+target=/);
  });

  test('a body over the limit is 413; a non-JSON body 415/400 after verification', async () => {
    // 64 KiB for most routes; 1 MiB where a room statement (every member) rides along.
    for (const [path, size] of [
      ['/users', 70_000],
      ['/rooms', 1_100_000],
    ] as const) {
      const big = JSON.stringify({ pad: 'x'.repeat(size) });
      const r = await rawRequest(
        d.httpUrl,
        'POST',
        path,
        signedHeaders(admin, 'POST', `${d.httpUrl}${path}`, big),
        big
      );
      assert.equal(r.status, 413, path);
      assert.equal(r.json.error.code, 'BODY_TOO_LARGE');
    }
    const roomSized = JSON.stringify({ pad: 'x'.repeat(70_000) });
    const taken = await rawRequest(
      d.httpUrl,
      'POST',
      '/rooms',
      signedHeaders(admin, 'POST', `${d.httpUrl}/rooms`, roomSized),
      roomSized
    );
    assert.equal(taken.status, 400, 'read and refused by its schema, not by its size');
    const notJson = 'not json';
    const r2 = await rawRequest(
      d.httpUrl,
      'POST',
      '/rooms',
      signedHeaders(admin, 'POST', `${d.httpUrl}/rooms`, notJson),
      notJson
    );
    assert.equal(r2.status, 400);
    assert.equal(r2.json.error.code, 'BAD_JSON');
    // Signed, digest right, but not JSON by its content type: 415.
    const plain = JSON.stringify({ handle: 'x' });
    const typed = signRequest(
      requestSigner(admin),
      {
        method: 'POST',
        url: new URL(`${d.httpUrl}/users`),
        body: new TextEncoder().encode(plain),
        contentType: 'text/plain',
      },
      {}
    );
    const r3 = await rawRequest(d.httpUrl, 'POST', '/users', typed, plain);
    assert.equal(r3.status, 415);
    assert.equal(r3.json.error.code, 'UNSUPPORTED_MEDIA_TYPE');
  });

  // The nonce store unreachable (fail closed, 503): tests/nonces.test.ts,
  // with --replicated-nonces (a single node keeps its nonces in memory).

  test('nats-server under the daemon stopped: signed requests get 503 in bounded time, never 2xx', async () => {
    process.kill(d.natsPid, 'SIGSTOP');
    try {
      // The user cache vouches for a signer for USER_CACHE_BOUND_MS after
      // its last proof; past that, the store must answer.
      await new Promise((r) => setTimeout(r, USER_CACHE_BOUND_MS + 100));
      const t0 = Date.now();
      const r = await rawRequest(
        d.httpUrl,
        'GET',
        '/me',
        signedHeaders(admin, 'GET', `${d.httpUrl}/me`)
      );
      assert.equal(r.status, 503);
      assert.equal(r.json.error.code, 'STORE_UNAVAILABLE');
      assert.ok(Date.now() - t0 < 20_000, `answered in ${Date.now() - t0} ms`);
    } finally {
      process.kill(d.natsPid, 'SIGCONT');
    }
    assert.equal((await adminCtl.me()).sign_pub, admin.signPubHex);
  });
});

describe('SDK failover', { timeout: 120_000 }, () => {
  test('first control URL dead, second answers; 4xx is not retried elsewhere', async () => {
    await using d = await startDaemon();
    const admin = await adminOf(d);
    const dead = `http://127.0.0.1:${await freePort()}`;
    const ctl = new ControlClient({ urls: [dead, d.httpUrl], identity: admin, timeoutMs: 3_000 });
    try {
      assert.equal((await ctl.me()).sign_pub, admin.signPubHex);
      assert.equal(ctl.currentUrl, new URL(d.httpUrl).toString());
      const stranger = new ControlClient({ urls: [d.httpUrl, dead], identity: generateIdentity() });
      await assert.rejects(
        stranger.me(),
        (e: unknown) => e instanceof ControlError && e.status === 401 && e.attempts.length === 0
      );
      stranger.close();
      const none = new ControlClient({ urls: [dead], identity: admin, timeoutMs: 2_000 });
      await assert.rejects(
        none.me(),
        (e: unknown) =>
          e instanceof ControlError && e.code === 'UNAVAILABLE' && e.attempts.length === 1
      );
      none.close();
    } finally {
      ctl.close();
    }
  });

  test('a 503 from a node whose store is down moves on to the next node', async () => {
    await using a = await startDaemon();
    const admin = await adminOf(a);
    // Same identity registered on a second, independent node.
    await using b = await startDaemon();
    const adminB = new ControlClient({ urls: [b.httpUrl], identity: await adminOf(b) });
    await adminB.addUser({
      sign_pub: admin.signPubHex,
      kex_pub: admin.kexPubHex,
      handle: 'a-admin',
      role: 'admin',
    });
    adminB.close();
    process.kill(a.natsPid, 'SIGSTOP');
    // Past the user cache's bound: node a must ask its (stopped) store.
    await new Promise((r) => setTimeout(r, USER_CACHE_BOUND_MS + 100));
    const ctl = new ControlClient({
      urls: [a.httpUrl, b.httpUrl],
      identity: admin,
      timeoutMs: 20_000,
    });
    try {
      const me = await ctl.me();
      assert.equal(me.handle, 'a-admin', 'answered by node b');
    } finally {
      process.kill(a.natsPid, 'SIGCONT');
      ctl.close();
    }
  });
});

describe('auth modes', { timeout: 120_000 }, () => {
  test('soft: a bad signature is logged and let through as the key it names', async () => {
    await using d = await startDaemon({ args: ['--auth', 'soft'] });
    const admin = await adminOf(d);
    const h = signedHeaders(admin, 'GET', `${d.httpUrl}/me`);
    h['signature'] = `sig1=:${Buffer.alloc(64).toString('base64')}:`;
    const r = await rawRequest(d.httpUrl, 'GET', '/me', h);
    assert.equal(r.status, 200);
    assert.equal(r.json.user.sign_pub, admin.signPubHex);
    assert.ok(
      d.logs.some(
        (l) =>
          l.msg === 'request signature refused' &&
          l.code === 'BAD_SIGNATURE' &&
          l.enforced === false
      )
    );
    const health = (await rawRequest(d.httpUrl, 'GET', '/healthz', {})).json;
    assert.equal(health.auth.mode, 'soft');
    assert.match(d.stderr(), /AUTH SOFT/);
  });

  test('off is refused on a non-loopback listener and loud on loopback', async () => {
    const r = await runMembershipd([
      'serve',
      '--data',
      '/nonexistent-never-created',
      '--http',
      '0.0.0.0:0',
      '--auth',
      'off',
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--auth off is refused unless --http is a loopback address/);
    await using d = await startDaemon({ args: ['--auth', 'off'] });
    assert.match(d.stderr(), /AUTH OFF/);
    assert.equal((await rawRequest(d.httpUrl, 'GET', '/healthz', {})).json.auth.mode, 'off');
    const unsigned = await rawRequest(d.httpUrl, 'GET', '/me', {});
    assert.equal(unsigned.status, 401, 'no identity claimed: nobody to act as');
    assert.equal(unsigned.json.error.code, 'UNAUTHENTICATED');
  });
});
