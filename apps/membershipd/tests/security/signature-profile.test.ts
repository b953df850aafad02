// Attack replay: an outsider (or a signer of another deployment) against the
// signature profile. Each refusal is asserted by code, and shown to have
// written nothing: no user, no audit record, the nonce still unused.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from 'nats';
import { generateIdentity, type Identity } from '@sealbus/crypto';
import type { MembershipStore } from '@sealbus/store';
import { startDaemon, type TestDaemon } from '@sealbus/testing';
import { adminOf, nodeStore } from '../helpers.js';
import { nonceOf, sendRaw, signRaw } from './attack.js';

const newUserBody = (id: Identity, handle: string) =>
  JSON.stringify({ sign_pub: id.signPubHex, kex_pub: id.kexPubHex, handle, role: 'admin' });

describe('signature profile: authority, label, request target', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let admin: Identity;
  let store: MembershipStore;
  let nc: NatsConnection;
  let self: string;
  const auditCount = async () => (await store.audit.tail(100_000)).length;

  before(async () => {
    d = await startDaemon({ args: ['--authority', 'sealbus.test:443'] });
    admin = await adminOf(d);
    ({ store, nc } = await nodeStore(d));
    self = new URL(d.httpUrl).host;
  });
  after(async () => {
    await nc?.close();
    await d?.dispose();
  });

  /** Sends a refused attempt to add an admin and shows nothing was written. */
  const refusedAddAdmin = async (
    what: string,
    send: (body: string) => Promise<{ status: number; code: string | undefined }>,
    headersOf: () => Record<string, string>,
    status: number,
    code: string
  ) => {
    const before = await auditCount();
    const r = await send('');
    assert.deepEqual([r.status, r.code], [status, code], what);
    assert.equal(await auditCount(), before, `${what}: audited nothing`);
    // The nonce was never consumed: it is still fresh now.
    assert.equal(
      await store.consumeNonce(admin.signPubHex, nonceOf(headersOf())),
      true,
      `${what}: nonce unused`
    );
  };

  test('the node answers to its own address, loopback names and --authority, and says so in /healthz', async () => {
    const port = new URL(d.httpUrl).port;
    for (const authority of [self, `localhost:${port}`, `[::1]:${port}`, 'sealbus.test']) {
      const r = await sendRaw(d.httpUrl, 'GET', '/me', signRaw(admin, 'GET', authority, '/me'));
      assert.equal(r.status, 200, authority);
    }
    const h = await sendRaw(d.httpUrl, 'GET', '/healthz', {});
    for (const a of [self, `localhost:${port}`, 'sealbus.test:443', 'sealbus.test'])
      assert.ok(h.json.auth.authorities.includes(a), a);
  });

  test('a request validly signed for another authority is 401 WRONG_AUTHORITY, nothing written', async () => {
    for (const authority of [
      'other.example:8470',
      `other.example:${new URL(d.httpUrl).port}`,
      'sealbus.test:8443',
      '127.0.0.2:1',
    ]) {
      const victim = generateIdentity();
      const body = newUserBody(victim, 'backdoor');
      const headers = signRaw(admin, 'POST', authority, '/users', body);
      await refusedAddAdmin(
        authority,
        () => sendRaw(d.httpUrl, 'POST', '/users', headers, body),
        () => headers,
        401,
        'WRONG_AUTHORITY'
      );
      assert.equal(await store.getUser(victim.signPubHex), null, authority);
    }
  });

  test('a label other than sig1 is 401 BAD_LABEL, nothing written', async () => {
    const victim = generateIdentity();
    const body = newUserBody(victim, 'relabelled');
    const h = signRaw(admin, 'POST', self, '/users', body);
    h['signature-input'] = h['signature-input']!.replace(/^sig1=/, 'sig2=');
    h['signature'] = h['signature']!.replace(/^sig1=/, 'sig2=');
    await refusedAddAdmin(
      'sig2',
      () => sendRaw(d.httpUrl, 'POST', '/users', h, body),
      () => h,
      401,
      'BAD_LABEL'
    );
    assert.equal(await store.getUser(victim.signPubHex), null);
  });

  test('targets not in normal form are 400 BAD_TARGET before verification, nothing written', async () => {
    const roomId = '0123456789abcdef01234567';
    const cases: Array<[string, string]> = [
      ['POST', '/rooms/%2e%2e/users'],
      ['POST', '/rooms/%2E%2E/users'],
      ['POST', '/rooms/../users'],
      ['POST', '/rooms/.%2e/users'],
      ['POST', '//users'],
      ['POST', '/users/'],
      ['POST', '/./users'],
      ['POST', '/%75sers'],
      ['POST', `/rooms/${roomId}%2f..%2f..%2fusers`],
      ['GET', '/rooms/%2e%2e/me'],
      ['GET', '//me'],
    ];
    for (const [method, target] of cases) {
      const victim = generateIdentity();
      const body = method === 'POST' ? newUserBody(victim, 'traversal') : undefined;
      const headers = signRaw(admin, method, self, target, body);
      await refusedAddAdmin(
        `${method} ${target}`,
        () => sendRaw(d.httpUrl, method, target, headers, body),
        () => headers,
        400,
        'BAD_TARGET'
      );
      assert.equal(await store.getUser(victim.signPubHex), null, target);
    }
    // A backslash never reaches the app: Node's HTTP parser answers 400 itself.
    const bs = '/rooms\\..\\users';
    const bsHeaders = signRaw(admin, 'POST', self, bs, '{}');
    assert.equal((await sendRaw(d.httpUrl, 'POST', bs, bsHeaders, '{}')).status, 400);
    assert.equal(await store.consumeNonce(admin.signPubHex, nonceOf(bsHeaders)), true);
    // Control: the same request over the normal target is what would have happened.
    const ok = generateIdentity();
    const body = newUserBody(ok, 'control');
    const r = await sendRaw(
      d.httpUrl,
      'POST',
      '/users',
      signRaw(admin, 'POST', self, '/users', body),
      body
    );
    assert.equal(r.status, 201, JSON.stringify(r.json));
    assert.ok(await store.getUser(ok.signPubHex));
  });
});

describe('damping gates failures only', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let admin: Identity;
  let store: MembershipStore;
  let nc: NatsConnection;

  before(async () => {
    d = await startDaemon({ args: ['--auth-fail-limit', '20', '--auth-fail-window', '1m'] });
    admin = await adminOf(d);
    ({ store, nc } = await nodeStore(d));
  });
  after(async () => {
    await nc?.close();
    await d?.dispose();
  });

  test('25 bad requests from 127.0.0.1, then a correctly signed admin request is served while a bad one gets 429', async () => {
    const self = new URL(d.httpUrl).host;
    // A stranger on the same address, naming the admin's key id it cannot sign for.
    const bad = () => {
      const h = signRaw(generateIdentity(), 'GET', self, '/me');
      h['signature-input'] = h['signature-input']!.replace(
        /keyid="[0-9a-f]+"/,
        `keyid="${admin.signPubHex}"`
      );
      return sendRaw(d.httpUrl, 'GET', '/me', h, undefined, '127.0.0.1');
    };
    const codes: Array<string | undefined> = [];
    for (let i = 0; i < 25; i++) codes.push((await bad()).code);
    assert.deepEqual(codes.slice(0, 20), Array(20).fill('BAD_SIGNATURE'));
    assert.deepEqual(codes.slice(20), Array(5).fill('TOO_MANY_AUTH_FAILURES'));

    const victim = generateIdentity();
    const body = newUserBody(victim, 'after-flood');
    const good = await sendRaw(
      d.httpUrl,
      'POST',
      '/users',
      signRaw(admin, 'POST', self, '/users', body),
      body,
      '127.0.0.1'
    );
    assert.equal(good.status, 201, JSON.stringify(good.json));
    assert.ok(await store.getUser(victim.signPubHex));
    const me = await sendRaw(d.httpUrl, 'GET', '/me', signRaw(admin, 'GET', self, '/me'));
    assert.equal(me.status, 200);

    const after = await bad();
    assert.deepEqual([after.status, after.code], [429, 'TOO_MANY_AUTH_FAILURES']);
    assert.ok(Number(after.headers['retry-after']) >= 1);
    // An unknown key and a replay are failures too: 429 while damped.
    const unknown = await sendRaw(
      d.httpUrl,
      'GET',
      '/me',
      signRaw(generateIdentity(), 'GET', self, '/me')
    );
    assert.equal(unknown.status, 429);
    const once = signRaw(admin, 'GET', self, '/me');
    assert.equal((await sendRaw(d.httpUrl, 'GET', '/me', once)).status, 200);
    assert.equal((await sendRaw(d.httpUrl, 'GET', '/me', once)).status, 429);
  });
});
