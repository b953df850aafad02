// Request nonces: a node that is the whole deployment keeps them in memory
// (no quorum write per request); `--replicated-nonces` and clusters keep the
// replicated bucket. Who stands on the other side: someone replaying a
// captured request to the same node, to the same node after a restart, or
// (cluster: clientcheck/tests/cluster.test.ts) to another node.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { ControlClient } from '@sealbus/client';
import { generateIdentity, type Identity } from '@sealbus/crypto';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { runMembershipd, startDaemon, type TestDaemon } from '@sealbus/testing';
import { adminOf, nodeStore, rawRequest, signedHeaders } from './helpers.js';
import { LocalNonces } from '../src/http/localnonces.js';

async function nonceKeys(d: TestDaemon): Promise<string[]> {
  const { store, nc, app } = await nodeStore(d);
  try {
    const keys: string[] = [];
    // Request nonces only (`<keyid>.<nonce>`): not health probes, not
    // authority claims.
    for await (const k of await store.bucket('nonces').keys())
      if (/^[0-9a-f]{64}\./.test(k)) keys.push(k);
    return keys;
  } finally {
    await nc.close();
    await app.close();
  }
}

describe('LocalNonces', () => {
  test('first use, replay, signed before the start, forgotten once no signature can be accepted', () => {
    const t0 = 1_800_000_000;
    const n = new LocalNonces({ maxAgeSec: 300, skewSec: 30, startedAtMs: t0 * 1000 + 400 });
    assert.equal(n.startSec, t0 + 1, 'the start second is rounded up');
    assert.equal(n.consume('k', 'a', t0, t0 + 300, t0 + 0.5, t0 + 0.5), 'before-start');
    assert.equal(n.consume('k', 'a', t0 + 1, t0 + 61, t0 + 1, t0 + 1), 'first');
    assert.equal(n.consume('k', 'a', t0 + 1, t0 + 61, t0 + 2, t0 + 2), 'replayed');
    assert.equal(n.consume('other', 'a', t0 + 1, t0 + 61, t0 + 2, t0 + 2), 'first', 'per key');
    // Still remembered at the last second the signature is valid, plus skew.
    assert.equal(n.consume('k', 'a', t0 + 1, t0 + 61, t0 + 60 + 30, t0 + 60 + 30), 'replayed');
    assert.equal(n.size, 2);
    // Long after expiry it is forgotten (the verifier refuses it as expired anyway).
    assert.equal(n.consume('k', 'b', t0 + 200, t0 + 500, t0 + 200, t0 + 200), 'first');
    assert.equal(n.size, 1, 'the generation of the first two was dropped');
    assert.equal(n.consume('k', 'c', t0 + 400, t0 + 500, t0 + 400, t0 + 400), 'first');
    assert.equal(n.size, 2, 'b is kept while its signature can be accepted');
    assert.equal(n.consume('k', 'b', t0 + 200, t0 + 500, t0 + 499, t0 + 499), 'replayed');
    // Ahead of this clock: recorded here and in the bucket (the next
    // process loads the bucket at start).
    assert.equal(n.consume('k', 'ahead', t0 + 520, t0 + 560, t0 + 500, t0 + 500), 'also-bucket');
    assert.equal(n.consume('k', 'ahead', t0 + 520, t0 + 560, t0 + 530, t0 + 530), 'replayed');
    const next = new LocalNonces({ maxAgeSec: 300, skewSec: 30, startedAtMs: (t0 + 501) * 1000 });
    assert.equal(next.preload(['k.ahead', 'k.ahead', 'k.other'], t0 + 501, t0 + 501), 2);
    assert.equal(next.consume('k', 'ahead', t0 + 520, t0 + 560, t0 + 530, t0 + 530), 'replayed');
    assert.equal(
      next.consume('k', 'ahead', t0 + 520, t0 + 560, t0 + 501 + 330, t0 + 501 + 330),
      'replayed'
    );
    const full = new LocalNonces({ maxAgeSec: 300, skewSec: 30, maxEntries: 2, startedAtMs: 0 });
    assert.equal(full.consume('k', 'x', t0, t0 + 10, t0, t0), 'first');
    assert.equal(full.consume('k', 'y', t0, t0 + 10, t0, t0), 'first');
    assert.equal(
      full.consume('k', 'z', t0, t0 + 10, t0, t0),
      'full',
      'past the cap the bucket is used'
    );
    assert.equal(
      full.consume('k', 'x', t0, t0 + 10, t0, t0),
      'replayed',
      'a replay is still one when full'
    );
  });
});

describe('request nonces on a single node', () => {
  let d: TestDaemon;
  let admin: Identity;

  before(async () => {
    d = await startDaemon();
    admin = await adminOf(d);
  });
  after(async () => {
    await d?.dispose();
  });

  test('kept in the node: no bucket write, a replay is REPLAYED, /healthz says node', async () => {
    const h = signedHeaders(admin, 'GET', `${d.httpUrl}/me`);
    const first = await rawRequest(d.httpUrl, 'GET', '/me', h);
    assert.equal(first.status, 200, JSON.stringify(first.json));
    const again = await rawRequest(d.httpUrl, 'GET', '/me', h);
    assert.equal(again.status, 401);
    assert.equal(again.json.error.code, 'REPLAYED');
    assert.deepEqual(await nonceKeys(d), [], 'nothing in the replicated bucket');
    const health = await rawRequest(d.httpUrl, 'GET', '/healthz', {});
    assert.equal(health.json.auth.nonces, 'node');
  });

  test('the replicated nonce bucket gone: signed requests still work, replays still refused', async () => {
    const { nc, app } = await nodeStore(d);
    const jsm = await nc.jetstreamManager();
    const cfg = (await jsm.streams.info('KV_sealbus_nonces')).config;
    await jsm.streams.delete('KV_sealbus_nonces');
    try {
      const target = generateIdentity();
      const body = JSON.stringify({
        sign_pub: target.signPubHex,
        handle: 'no-bucket',
        role: 'member',
      });
      const h = signedHeaders(admin, 'POST', `${d.httpUrl}/users`, body);
      const r = await rawRequest(d.httpUrl, 'POST', '/users', h, body);
      assert.equal(r.status, 201, JSON.stringify(r.json));
      const replay = await rawRequest(d.httpUrl, 'POST', '/users', h, body);
      assert.equal(replay.status, 401);
      assert.equal(replay.json.error.code, 'REPLAYED');
    } finally {
      await jsm.streams.add(cfg);
      await nc.close();
      await app.close();
    }
  });

  test('a request accepted before a restart is refused after it (SIGNED_BEFORE_START); a fresh one is served', async () => {
    const h = signedHeaders(admin, 'GET', `${d.httpUrl}/me`);
    assert.equal((await rawRequest(d.httpUrl, 'GET', '/me', h)).status, 200);
    // Signed before the restart but never sent: refused as well (it could
    // have been used by the process before).
    const unsent = signedHeaders(admin, 'GET', `${d.httpUrl}/me`);
    const { dataDir, httpPort, natsPort } = d;
    await d.stop();
    d = await startDaemon({
      dataDir,
      args: ['--http', `127.0.0.1:${httpPort}`, '--nats-port', String(natsPort)],
    });
    for (const [what, headers] of [
      ['replayed', h],
      ['unsent', unsent],
    ] as const) {
      const r = await rawRequest(d.httpUrl, 'GET', '/me', headers);
      assert.equal(r.status, 401, `${what}: ${JSON.stringify(r.json)}`);
      assert.equal(r.json.error.code, 'SIGNED_BEFORE_START', what);
    }
    // Signed ahead of the node's clock (a fast client clock, within the
    // 30 s skew): used once before a restart, replayed after it once its
    // `created` has passed (so only what the new process loaded at start
    // can tell; the start rule does not).
    const aheadAt = Math.floor(Date.now() / 1000) + 3;
    const ahead = signedHeaders(admin, 'GET', `${d.httpUrl}/me`, undefined, { now: aheadAt });
    assert.equal((await rawRequest(d.httpUrl, 'GET', '/me', ahead)).status, 200);
    assert.equal((await nonceKeys(d)).length, 1, 'a request from ahead is also in the bucket');
    await d.stop();
    d = await startDaemon({
      dataDir,
      args: ['--http', `127.0.0.1:${httpPort}`, '--nats-port', String(natsPort)],
    });
    const wait = (aheadAt + 1) * 1000 - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const again = await rawRequest(d.httpUrl, 'GET', '/me', ahead);
    assert.equal(again.status, 401, JSON.stringify(again.json));
    assert.equal(again.json.error.code, 'REPLAYED');
    // Signed right after the node said it was ready: never SIGNED_BEFORE_START.
    const fresh = await rawRequest(
      d.httpUrl,
      'GET',
      '/me',
      signedHeaders(admin, 'GET', `${d.httpUrl}/me`)
    );
    assert.equal(fresh.status, 200, JSON.stringify(fresh.json));
    // The SDK signs again when told so, and gets through.
    const ctl = new ControlClient({ urls: [d.httpUrl], identity: admin });
    assert.equal((await ctl.me()).sign_pub, admin.signPubHex);
  });
});

describe('--replicated-nonces', () => {
  let d: TestDaemon;
  let admin: Identity;

  before(async () => {
    d = await startDaemon({ args: ['--replicated-nonces'] });
    admin = await adminOf(d);
  });
  after(async () => {
    await d?.dispose();
  });

  test('every nonce is created in the bucket; /healthz says replicated', async () => {
    const h = signedHeaders(admin, 'GET', `${d.httpUrl}/me`);
    assert.equal((await rawRequest(d.httpUrl, 'GET', '/me', h)).status, 200);
    const keys = await nonceKeys(d);
    assert.equal(keys.length, 1);
    assert.ok(keys[0]!.startsWith(`${admin.signPubHex}.`), keys[0]);
    const replay = await rawRequest(d.httpUrl, 'GET', '/me', h);
    assert.equal(replay.json.error.code, 'REPLAYED');
    const health = await rawRequest(d.httpUrl, 'GET', '/healthz', {});
    assert.equal(health.json.auth.nonces, 'replicated');
  });

  test('a request served after the backup is refused after a restore of that backup (SIGNED_BEFORE_START), though the restored bucket lacks its nonce', async () => {
    const archive = join(d.dataDir, '..', `nonces-${process.pid}.tgz`);
    const b = await runMembershipd(['backup', '--data', d.dataDir, '--out', archive]);
    assert.equal(b.code, 0, b.stderr);
    const h = signedHeaders(admin, 'GET', `${d.httpUrl}/me`);
    assert.equal((await rawRequest(d.httpUrl, 'GET', '/me', h)).status, 200);
    const { dataDir, httpPort, natsPort } = d;
    await d.stop();
    try {
      const rs = await runMembershipd([
        'restore',
        '--data',
        dataDir,
        '--in',
        archive,
        '--force',
        '--allow-unauthenticated',
      ]);
      assert.equal(rs.code, 0, rs.stderr);
    } finally {
      await rm(archive, { force: true });
    }
    d = await startDaemon({
      dataDir,
      args: [
        '--replicated-nonces',
        '--http',
        `127.0.0.1:${httpPort}`,
        '--nats-port',
        String(natsPort),
      ],
    });
    const replay = await rawRequest(d.httpUrl, 'GET', '/me', h);
    assert.equal(replay.status, 401, JSON.stringify(replay.json));
    assert.equal(replay.json.error.code, 'SIGNED_BEFORE_START');
    // Kept for 6 minutes: a start that fails now, and the next, still refuse it.
    assert.ok(existsSync(join(dataDir, 'restored.json')), 'the restore marker is kept');
    const fresh = await rawRequest(
      d.httpUrl,
      'GET',
      '/me',
      signedHeaders(admin, 'GET', `${d.httpUrl}/me`)
    );
    assert.equal(fresh.status, 200, JSON.stringify(fresh.json));
  });

  test('the nonce store unreachable: requests fail closed with 503 and are not executed', async () => {
    const { store, nc, app } = await nodeStore(d);
    const jsm = await nc.jetstreamManager();
    const cfg = (await jsm.streams.info('KV_sealbus_nonces')).config;
    await jsm.streams.delete('KV_sealbus_nonces');
    const target = generateIdentity();
    try {
      const body = JSON.stringify({
        sign_pub: target.signPubHex,
        handle: 'no-nonce',
        role: 'member',
      });
      const r = await rawRequest(
        d.httpUrl,
        'POST',
        '/users',
        signedHeaders(admin, 'POST', `${d.httpUrl}/users`, body),
        body
      );
      assert.equal(r.status, 503, JSON.stringify(r.json));
      assert.equal(r.json.error.code, 'STORE_UNAVAILABLE');
      assert.equal(await store.getUser(target.signPubHex), null);
    } finally {
      await jsm.streams.add(cfg);
      await nc.close();
      await app.close();
    }
    const ctl = new ControlClient({ urls: [d.httpUrl], identity: admin });
    assert.equal((await ctl.me()).sign_pub, admin.signPubHex, 'back once the bucket is back');
  });
});
