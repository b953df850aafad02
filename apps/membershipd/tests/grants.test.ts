import { signedCtl } from './author.js';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { NatsConnection } from 'nats';
import { encodePublicIdentity, generateIdentity, type Identity } from '@sealbus/crypto';
import { ControlClient, ControlError, Sealbus } from '@sealbus/client';
import { runMembershipd, startDaemon, waitFor, type TestDaemon } from '@sealbus/testing';
import { adminOf, natsAs, nextPermissionError, signedHeaders } from './helpers.js';

const PLAIN = { encrypt: true, persist: false, sign: true };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A signed GET /me sent from a chosen loopback source address. */
function meFrom(d: TestDaemon, id: Identity | null, localAddress: string) {
  const url = `${d.httpUrl}/me`;
  const headers = id
    ? signedHeaders(id, 'GET', url)
    : {
        // Garbage that names a key id (someone else's) but cannot verify.
        'signature-input': `sig1=("@method" "@authority" "@path" "@query");created=${Math.floor(Date.now() / 1000)};keyid="${'ab'.repeat(32)}";alg="ed25519";tag="sealbus";nonce="AAAAAAAAAAAAAAAAAAAAAA"`,
        signature: 'sig1=:AAAA:',
      };
  return new Promise<{ status: number; code?: string; retryAfter?: string }>((resolve, reject) => {
    const req = http.request(url, { method: 'GET', headers, localAddress, agent: false }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => {
        let code: string | undefined;
        try {
          code = JSON.parse(text).error?.code;
        } catch {
          /* not JSON */
        }
        resolve({
          status: res.statusCode ?? 0,
          ...(code ? { code } : {}),
          ...(res.headers['retry-after'] ? { retryAfter: String(res.headers['retry-after']) } : {}),
        });
      });
    });
    req.on('error', reject);
    req.end();
  });
}

describe('expiring grants and the guest role', { timeout: 180_000 }, () => {
  let d: TestDaemon;
  let admin: ControlClient;
  const clients: Sealbus[] = [];
  const conns: NatsConnection[] = [];

  const add = async (role: 'member' | 'guest', expires?: string) => {
    const id = generateIdentity();
    const r = await runMembershipd([
      'user',
      'add',
      '--data',
      d.dataDir,
      '--handle',
      `${role}-${id.signPubHex.slice(0, 6)}`,
      '--public',
      encodePublicIdentity(id),
      '--role',
      role,
      ...(expires ? ['--expires', expires] : []),
    ]);
    assert.equal(r.code, 0, r.stderr);
    return { id, out: r.stdout };
  };
  const bus = async (id: Identity) => {
    const b = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity: id,
    });
    clients.push(b);
    return b;
  };

  before(async () => {
    d = await startDaemon({ args: ['--user-jwt-ttl', '10m'] });
    admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
  });
  after(async () => {
    for (const c of clients) await c.close().catch(() => {});
    for (const c of conns) await c.close().catch(() => {});
    admin.close();
    await d.dispose();
  });

  test('--expires: bad or past values are invalid input (exit 2) and nothing is written', async () => {
    for (const bad of ['tomorrow', '2020-01-01T00:00:00Z', '-5m', '30x']) {
      const id = generateIdentity();
      const r = await runMembershipd([
        'user',
        'add',
        '--data',
        d.dataDir,
        '--handle',
        'never',
        '--sign-pub',
        id.signPubHex,
        '--role',
        'member',
        '--expires',
        bad,
      ]);
      assert.equal(r.code, 2, `${bad}: ${r.stderr}`);
      assert.match(r.stderr, /expires/);
      assert.equal(
        (await admin.listUsers()).some((u) => u.sign_pub === id.signPubHex),
        false
      );
    }
    // Over HTTP: a past expires_at is a 400.
    const id = generateIdentity();
    await assert.rejects(
      admin.addUser({
        sign_pub: id.signPubHex,
        handle: 'past',
        role: 'member',
        expires_at: '2020-01-01T00:00:00Z',
      }),
      (e: unknown) => e instanceof Error && /expires_at/.test(e.message)
    );
  });

  test('an expired user is denied on both planes; its JWT ends with the grant', async () => {
    // Long enough for the checks before expiry on a loaded 2-core machine.
    const { id, out } = await add('member', '8s');
    assert.match(out, /expires=\d{4}-/);
    const listed = (await admin.listUsers()).find((u) => u.sign_pub === id.signPubHex)!;
    const expiresAt = Date.parse(listed.expires_at!);
    assert.ok(expiresAt > Date.now() && expiresAt < Date.now() + 9_000);
    const table = await runMembershipd(['user', 'list', '--data', d.dataDir]);
    assert.match(table.stdout, /EXPIRES/);

    const ctl = new ControlClient({ urls: [d.httpUrl], identity: id });
    assert.equal((await ctl.me()).sign_pub, id.signPubHex);
    const nc = await natsAs(d, id);
    conns.push(nc);
    const closed = nc.closed();
    // The server ends the connection at the grant's end, by the JWT's exp.
    const endedBy = await Promise.race([
      closed.then(() => Date.now()),
      sleep(20_000).then(() => null),
    ]);
    assert.ok(endedBy !== null, 'connection ended at expiry');
    assert.ok(endedBy >= expiresAt - 1_000, 'not before the grant ended');
    assert.ok(endedBy <= expiresAt + 5_000, `ended ${endedBy - expiresAt} ms after expiry`);

    await waitFor(() => Date.now() > expiresAt + 200);
    await assert.rejects(
      ctl.me(),
      (e: unknown) => e instanceof ControlError && e.code === 'EXPIRED_KEY'
    );
    ctl.close();
    await assert.rejects(natsAs(d, id), /Authorization Violation/i);
    assert.ok(
      d.logs.some((l) => l.msg === 'callout: denied' && /grant expired/.test(String(l.reason))),
      'the callout logged why'
    );
  });

  test('an expiring membership: listed while valid, refused after, and the connection loses the room', async () => {
    const owner = (await add('member')).id;
    const temp = (await add('member')).id;
    const O = await bus(owner);
    const room = await O.createRoom({ subject: 'grants.temp', policy: PLAIN });
    const until = new Date(Date.now() + 4_000).toISOString();
    await O.invite(room.id, temp.signPubHex, 'writer', { expiresAt: until });
    const ctl = new ControlClient({ urls: [d.httpUrl], identity: temp });
    assert.deepEqual(
      (await ctl.listMyRooms()).map((r) => r.id),
      [room.id]
    );
    const detail = await O.control.getRoom(room.id);
    assert.equal(detail.members.find((m) => m.sign_pub === temp.signPubHex)?.expires_at, until);
    const nc = await natsAs(d, temp);
    conns.push(nc);
    // The server ends the session when the JWT (bounded by the membership)
    // expires; whatever reconnects is decided again, without the room.
    const expired = (async () => {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect' || String(s.data).includes('AUTHENTICATION_EXPIRED'))
          return Date.now();
      }
      return Date.now();
    })();
    nc.subscribe('grants.temp');
    await nc.flush();
    const endedAt = await Promise.race([expired, sleep(15_000).then(() => null)]);
    assert.ok(endedAt !== null, 'the JWT ended with the membership');
    assert.ok(endedAt >= Date.parse(until) - 1_000, 'not before the membership ended');
    await waitFor(() => Date.now() > Date.parse(until) + 200);
    assert.deepEqual(await ctl.listMyRooms(), []);
    await assert.rejects(
      ctl.getRoom(room.id),
      (e: unknown) => e instanceof ControlError && e.code === 'MEMBERSHIP_EXPIRED'
    );
    const again = await natsAs(d, temp);
    conns.push(again);
    const refused = nextPermissionError(again);
    again.subscribe('grants.temp');
    assert.match(await refused, /permissions/i);
    ctl.close();
  });

  test('a guest: no rooms of its own, reader only, never an admin, cannot publish', async () => {
    const owner = (await add('member')).id;
    const guest = (await add('guest')).id;
    const G = new ControlClient({ urls: [d.httpUrl], identity: guest });
    await assert.rejects(
      signedCtl(G, guest).createRoom({
        subject: 'guest.room',
        policy: { encrypt: false, persist: false, sign: true },
      }),
      (e: unknown) => e instanceof ControlError && e.status === 403 && e.code === 'GUEST_FORBIDDEN'
    );
    await assert.rejects(
      G.listUsers(),
      (e: unknown) => e instanceof ControlError && e.status === 403
    );
    const O = await bus(owner);
    const room = await O.createRoom({ subject: 'guest.read', policy: PLAIN });
    await assert.rejects(
      O.invite(room.id, guest.signPubHex, 'writer'),
      (e: unknown) => e instanceof ControlError && e.code === 'GUEST_READER_ONLY'
    );
    await O.invite(room.id, guest.signPubHex, 'reader');
    const B = await bus(guest);
    const got: string[] = [];
    await B.subscribe(room.id, (m) => {
      got.push(new TextDecoder().decode(m.data));
    });
    await O.publish(room.id, new TextEncoder().encode('hello guest'));
    await waitFor(() => got.length === 1, { what: 'the guest reads' });
    assert.deepEqual(got, ['hello guest']);
    const nc = await natsAs(d, guest);
    conns.push(nc);
    const refused = nextPermissionError(nc);
    nc.publish('guest.read', new TextEncoder().encode('x'));
    assert.match(await refused, /permissions/i);
    G.close();
  });
});

describe('auth-failure damping', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let admin: Identity;
  before(async () => {
    d = await startDaemon({ args: ['--auth-fail-limit', '5', '--auth-fail-window', '30s'] });
    admin = await adminOf(d);
  });
  after(async () => d.dispose());

  test("N failures from one address → 429 with Retry-After for that address only; garbage naming the admin's key id does not stop the admin", async () => {
    // A flood from 127.0.0.2 naming a key id it cannot sign for (here the admin's own).
    const flood: number[] = [];
    for (let i = 0; i < 12; i++) {
      const url = `${d.httpUrl}/me`;
      const h = signedHeaders(generateIdentity(), 'GET', url);
      h['signature-input'] = h['signature-input']!.replace(
        /keyid="[0-9a-f]+"/,
        `keyid="${admin.signPubHex}"`
      );
      flood.push(
        await new Promise<number>((resolve, reject) => {
          const req = http.request(
            url,
            { headers: h, localAddress: '127.0.0.2', agent: false },
            (res) => {
              res.resume();
              res.on('end', () => resolve(res.statusCode ?? 0));
            }
          );
          req.on('error', reject);
          req.end();
        })
      );
    }
    assert.deepEqual(flood.slice(0, 5), [401, 401, 401, 401, 401]);
    assert.ok(
      flood.slice(5).every((s) => s === 429),
      flood.join(',')
    );
    const damped = await meFrom(d, null, '127.0.0.2');
    assert.equal(damped.status, 429);
    assert.equal(damped.code, 'TOO_MANY_AUTH_FAILURES');
    assert.ok(Number(damped.retryAfter) >= 1 && Number(damped.retryAfter) <= 30);
    // Damping gates failures only: a good request from the damped address
    // is served (a stranger cannot lock out the keys behind an address).
    assert.equal((await meFrom(d, admin, '127.0.0.2')).status, 200);
    // The admin, from its own address, is unaffected.
    for (let i = 0; i < 3; i++) assert.equal((await meFrom(d, admin, '127.0.0.1')).status, 200);
    assert.ok(d.logs.some((l) => l.msg === 'auth damping: address damped after repeated failures'));
    assert.ok(
      d.logs.some((l) => l.msg === 'auth damping: request refused' && l.remote === '127.0.0.2')
    );
  });
});
