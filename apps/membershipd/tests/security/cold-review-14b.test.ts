// Cold review 14b: node-local request nonces (src/http/localnonces.ts, used
// by src/http/auth.ts on a node that is the whole deployment) and the user
// cache (packages/store/src/usercache.ts on mirror.ts: a signer's record
// served from memory while a 100 ms heartbeat proves it current within
// 250 ms). Every test asserts the SECURE behaviour: a test that fails is an
// attack that worked, and is marked `todo: 'ATTACK WORKS: …'` so the suite
// stays runnable while it is open.
//
// Loopback only, free ports, bounded loops; every process started here is
// stopped here.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { randomBytes } from 'node:crypto';
import { Hono } from 'hono';
import type { NatsConnection } from 'nats';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { ControlClient } from '@sealbus/client';
import { generateIdentity, loadIdentity, type Identity } from '@sealbus/crypto';
import { USER_CACHE_BOUND_MS, type MembershipStore } from '@sealbus/store';
import {
  runMembershipd,
  startCluster,
  startDaemon,
  tempDir,
  waitFor,
  type TestCluster,
  type TestDaemon,
} from '@sealbus/testing';
import { LocalNonces, type LocalNonceVerdict } from '../../src/http/localnonces.js';
import { signatureAuth } from '../../src/http/auth.js';
import { HttpError } from '../../src/http/errors.js';
import type { AppEnv } from '../../src/http/context.js';
import { createLogger } from '../../src/log.js';
import { adminOf, enrol, nodeStore, rawRequest, signedHeaders } from '../helpers.js';
import { nonceOf } from './attack.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const nowSec = () => Math.floor(Date.now() / 1000);
const USERS = 'KV_sealbus_users';
const codeOf = (r: { json: any }) => String(r.json?.error?.code);

/** Restarts a test daemon on the same data dir and ports (graceful, or SIGKILL as a crash). */
async function restart(
  d: TestDaemon,
  how: 'stop' | 'crash',
  args: string[] = []
): Promise<TestDaemon> {
  // The ports actually listened on (a daemon restarted by this helper
  // reports the fresh ones startDaemon picked, not ours).
  const { dataDir } = d;
  const httpPort = new URL(d.httpUrl).port;
  const natsPort = new URL(d.natsUrl).port;
  if (how === 'stop') await d.stop();
  else await d.crash();
  return startDaemon({
    dataDir,
    args: ['--http', `127.0.0.1:${httpPort}`, '--nats-port', natsPort, ...args],
  });
}

/** GET /me signed by `id` for `url` (authority included), sent to `url`. */
const me = (id: Identity, url: string, opts: Parameters<typeof signedHeaders>[4] = {}) =>
  rawRequest(url, 'GET', '/me', signedHeaders(id, 'GET', `${url}/me`, undefined, opts));

// ---------------------------------------------------------------------------

describe('LocalNonces on its own (the clock and memory it relies on)', () => {
  test(
    'a wall-clock step forward (NTP, a VM resumed) and back does not forget a nonce whose signature is still valid',
    {},
    () => {
      const t0 = 1_800_000_000;
      const n = new LocalNonces({ maxAgeSec: 300, skewSec: 30, startedAtMs: 0 });
      assert.equal(n.consume('k', 'captured', t0, t0 + 60, t0), 'first');
      // Any request while the clock is 2 minutes ahead prunes.
      n.consume('k', 'other', t0 + 121, t0 + 181, t0 + 121);
      // The clock is stepped back: the captured request is inside its window again.
      const again = n.consume('k', 'captured', t0, t0 + 60, t0 + 10);
      assert.notEqual(again, 'first', `the replay was '${again}'`);
    }
  );

  test(
    'memory per nonce at the longest nonce stays within "about 250 MB at worst" for the 1,000,000 cap',
    {},
    () => {
      setFlagsFromString('--expose-gc');
      const gc = runInNewContext('gc') as () => void;
      const N = 200_000;
      const keyid = randomBytes(32).toString('hex');
      const t = nowSec();
      gc();
      const heapBefore = process.memoryUsage().heapUsed;
      const n = new LocalNonces({ maxAgeSec: 300, skewSec: 30, startedAtMs: 0 });
      for (let i = 0; i < N; i++)
        n.consume(keyid, randomBytes(64).toString('base64url'), t, t + 300, t);
      gc();
      const perEntry = (process.memoryUsage().heapUsed - heapBefore) / N;
      const atCap = (perEntry * 1_000_000) / 1e6;
      console.log(`# ${perEntry.toFixed(0)} bytes per nonce: ~${atCap.toFixed(0)} MB at 1,000,000`);
      assert.equal(n.size, N);
      assert.ok(atCap <= 250, `${atCap.toFixed(0)} MB`);
    }
  );

  test('nonces loaded from the bucket at start (702f8ad) stay within the cap', {}, (t) => {
    const n = new LocalNonces({ maxAgeSec: 300, skewSec: 30, maxEntries: 10, startedAtMs: 0 });
    const preload = (n as unknown as { preload?: (k: Iterable<string>) => number }).preload;
    if (typeof preload !== 'function') {
      t.skip('no preload in this build');
      return;
    }
    // An active user can make every one of its requests land in the bucket
    // (signed a few seconds ahead of the node's clock); a restart loads them all.
    const keys = Array.from({ length: 100 }, (_, i) => `${'a'.repeat(64)}.${'n'.repeat(21)}${i}`);
    preload.call(n, keys);
    const t0 = nowSec();
    // Whatever is held, none of them may be taken as a first use again.
    for (const k of keys.slice(0, 20)) {
      const [keyid, nonce] = k.split('.') as [string, string];
      const v: LocalNonceVerdict = n.consume(keyid, nonce, t0, t0 + 60);
      assert.notEqual(v, 'first', k);
    }
    assert.ok(n.size <= 10, `memory holds ${n.size} nonces with a cap of 10`);
  });
});

// ---------------------------------------------------------------------------

describe('node-local nonces on a single node', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let admin: Identity;
  let member: Identity;
  let adminCtl: ControlClient;
  const closers: Array<() => Promise<unknown> | unknown> = [];

  before(async () => {
    d = await startDaemon();
    admin = await adminOf(d);
    adminCtl = new ControlClient({ urls: [d.httpUrl], identity: admin });
    member = (await enrol(adminCtl, d, 'cr14b-member')).id;
  });
  after(async () => {
    for (const c of closers.reverse()) await Promise.resolve(c()).catch(() => {});
    adminCtl?.close();
    await d?.dispose();
  });

  test('a captured request replayed under every spelling of the node names, and 20 at once, is served once', async () => {
    const port = d.httpPort;
    const h = signedHeaders(member, 'GET', `http://localhost:${port}/me`);
    const send = (host: string) => rawRequest(d.httpUrl, 'GET', '/me', { ...h, host });
    const first = await send(`localhost:${port}`);
    assert.equal(first.status, 200, JSON.stringify(first.json));
    const outcomes: Record<string, string> = {};
    for (const host of [
      `localhost:${port}`,
      `LOCALHOST:${port}`,
      `LocalHost:${port}`,
      `127.0.0.1:${port}`,
      `[::1]:${port}`,
      `localhost.:${port}`,
      `localhost:0${port}`,
      'localhost',
      `127.1:${port}`,
    ]) {
      const r = await send(host);
      outcomes[host] = `${r.status} ${codeOf(r)}`;
      assert.equal(r.status, 401, `${host}: ${JSON.stringify(r.json)}`);
    }
    // The same bytes under another case of the same name verify (the
    // authority is compared lowercase) and are replays.
    assert.equal(outcomes[`LOCALHOST:${port}`], '401 REPLAYED');
    assert.equal(outcomes[`127.0.0.1:${port}`], '401 BAD_SIGNATURE');
    // A fresh request raced 20 times at once: one 200.
    const fresh = signedHeaders(member, 'GET', `${d.httpUrl}/me`);
    const race = await Promise.all(
      Array.from({ length: 20 }, () => rawRequest(d.httpUrl, 'GET', '/me', fresh))
    );
    assert.equal(race.filter((r) => r.status === 200).length, 1);
    assert.ok(race.every((r) => r.status === 200 || codeOf(r) === 'REPLAYED'));
    console.log(`# replays by name: ${JSON.stringify(outcomes)}`);
  });

  /**
   * The signature middleware alone, over the daemon's real store, for
   * `sealbus.test`, with this nonce memory: what a request is answered.
   */
  const authOnly = async (
    nonces: LocalNonces,
    o: { covers: () => boolean; claimsCurrent?: () => boolean }
  ) => {
    const { store, nc, app: appNc } = await nodeStore(d);
    closers.push(
      () => nc.close(),
      () => appNc.close()
    );
    const app = new Hono<AppEnv>();
    app.onError((err, c) =>
      err instanceof HttpError
        ? c.json({ error: { code: err.code } }, err.status)
        : c.json({ error: { code: 'INTERNAL', message: String(err) } }, 500)
    );
    app.use(
      '*',
      signatureAuth({
        store,
        mode: 'enforce',
        logger: createLogger('silent'),
        policy: { authorities: { has: (a: string) => a === 'sealbus.test' } },
        localNonces: { store: nonces, covers: o.covers },
        ...(o.claimsCurrent ? { claimsCurrent: o.claimsCurrent } : {}),
      })
    );
    app.get('/me', (c) => c.json({ sign_pub: c.get('actor')?.sign_pub }));
    const send = async (h: Record<string, string>) => {
      const res = await app.request('http://sealbus.test/me', { headers: h });
      return { status: res.status, json: (await res.json()) as any };
    };
    return { send, store };
  };

  test(
    'memory full → the bucket; memory freed a minute later → the nonce that went to the bucket is a replay, not a first use',
    {},
    async () => {
      // The daemon's own LocalNonces has a fixed 2,000,000 cap; the same
      // middleware with a cap of 2 and a clock that can be moved forward
      // shows what the flood does, over the daemon's real store.
      class Clocked extends LocalNonces {
        offsetSec = 0;
        override consume(k: string, n: string, c: number, e: number): LocalNonceVerdict {
          return super.consume(
            k,
            n,
            c,
            e,
            Date.now() / 1000 + this.offsetSec,
            performance.now() / 1000 + this.offsetSec
          );
        }
      }
      const nonces = new Clocked({ maxAgeSec: 300, skewSec: 30, maxEntries: 2, startedAtMs: 0 });
      const { send } = await authOnly(nonces, { covers: () => true });
      const url = 'http://sealbus.test/me';
      // The flood: short-lived requests of an active user fill memory.
      for (let i = 0; i < 2; i++)
        assert.equal(
          (await send(signedHeaders(member, 'GET', url, undefined, { lifetimeSec: 1 }))).status,
          200
        );
      // The victim's request while memory is full: recorded in the bucket.
      const victim = signedHeaders(admin, 'GET', url, undefined, { lifetimeSec: 120 });
      assert.equal((await send(victim)).status, 200);
      const whileFull = await send(victim);
      assert.equal(codeOf(whileFull), 'REPLAYED', 'a replay while full: the bucket says so');
      // 70 s later (the victim's signature is still valid) the flood's
      // generation is dropped.
      nonces.offsetSec = 70;
      const later = await send(victim);
      assert.equal(nonces.size <= 1, true);
      assert.equal(later.status, 401, `replayed after the flood: ${JSON.stringify(later.json)}`);
      assert.equal(codeOf(later), 'REPLAYED');
    }
  );

  test('a name this node no longer holds alone (a peer appeared, claims stale): a nonce held only in memory is still a replay; claims not current: 503', async () => {
    // helper-24 F2 and F3: the middleware over the daemon's real store.
    const nonces = new LocalNonces({ maxAgeSec: 300, skewSec: 30, startedAtMs: 0 });
    let covered = true;
    let current = true;
    const { send, store } = await authOnly(nonces, {
      covers: () => covered,
      claimsCurrent: () => current,
    });
    const url = 'http://sealbus.test/me';
    const r = signedHeaders(admin, 'GET', url);
    assert.equal((await send(r)).status, 200, 'kept in memory only');
    covered = false; // another node now accepts the name too
    const replay = await send(r);
    assert.equal(replay.status, 401, JSON.stringify(replay.json));
    assert.equal(codeOf(replay), 'REPLAYED', 'memory still catches it');
    const fresh = signedHeaders(admin, 'GET', url);
    assert.equal((await send(fresh)).status, 200);
    assert.equal(codeOf(await send(fresh)), 'REPLAYED');
    // ...and a first use while uncovered went to the bucket as well.
    assert.equal(await store.consumeNonce(admin.signPubHex, nonceOf(fresh)), false);
    current = false; // the claims could not be renewed
    const stale = await send(signedHeaders(admin, 'GET', url));
    assert.deepEqual([stale.status, codeOf(stale)], [503, 'STORE_UNAVAILABLE']);
  });

  test('flood cost: how fast one active user can add node-local nonces (2,000,000 are needed within ~6 min)', async () => {
    const N = 1_500;
    const started = performance.now();
    let ok = 0;
    let i = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (i < N) {
          i++;
          if ((await me(member, d.httpUrl)).status === 200) ok++;
        }
      })
    );
    const perSec = (ok / (performance.now() - started)) * 1000;
    console.log(
      `# ${ok} signed GET /me at ${perSec.toFixed(0)}/s (16 connections, one client process): ` +
        `2,000,000 would take ${(2e6 / perSec / 60).toFixed(1)} min; an entry lives at most ~6 min`
    );
    assert.equal(ok, N);
  });

  test('a revocation by another writer (the CLI, another node) is refused for every request sent 250 ms after its acknowledgement', async () => {
    const { store, nc, app } = await nodeStore(d);
    closers.push(
      () => nc.close(),
      () => app.close()
    );
    const late: string[] = [];
    const odd: string[] = [];
    let served = 0;
    let refused = 0;
    let lastServedMs = -Infinity;
    for (let round = 0; round < 4; round++) {
      const { id } = await enrol(adminCtl, d, `cr14b-rv${round}`);
      await sleep(400); // older than the bound: the cache has the user
      let acked = Infinity;
      let stop = false;
      const hammer = async () => {
        while (!stop) {
          const sentAt = performance.now();
          const r = await me(id, d.httpUrl);
          if (r.status === 200) {
            served++;
            if (sentAt > acked) lastServedMs = Math.max(lastServedMs, sentAt - acked);
            if (sentAt - acked > USER_CACHE_BOUND_MS)
              late.push(`round ${round}: served ${(sentAt - acked).toFixed(0)} ms after the ack`);
          } else if (codeOf(r) === 'REVOKED_KEY') refused++;
          else odd.push(`${r.status} ${codeOf(r)}`);
        }
      };
      const loops = [hammer(), hammer(), hammer()];
      await sleep(50 + 40 * round);
      await store.revokeUser(id.signPubHex);
      acked = performance.now();
      await sleep(600);
      stop = true;
      await Promise.all(loops);
    }
    console.log(
      `# revocations by another writer: ${served} served, ${refused} refused; ` +
        `last served ${lastServedMs.toFixed(0)} ms after an ack (bound ${USER_CACHE_BOUND_MS})`
    );
    assert.deepEqual(late, []);
    assert.deepEqual(odd, []);
    assert.ok(refused > 0);
  });

  test('a revocation through this node is refused at once: nothing sent after the 200 is served', async () => {
    const { id } = await enrol(adminCtl, d, 'cr14b-rw');
    await sleep(400);
    let answered = Infinity;
    let stop = false;
    const late: string[] = [];
    const hammer = async () => {
      while (!stop) {
        const sentAt = performance.now();
        const r = await me(id, d.httpUrl);
        if (r.status === 200 && sentAt > answered)
          late.push(`served ${(sentAt - answered).toFixed(1)} ms after the revoke's answer`);
      }
    };
    const loops = [hammer(), hammer()];
    await sleep(30);
    const rv = await rawRequest(
      d.httpUrl,
      'POST',
      `/users/${id.signPubHex}/revoke`,
      signedHeaders(admin, 'POST', `${d.httpUrl}/users/${id.signPubHex}/revoke`)
    );
    answered = performance.now();
    assert.equal(rv.status, 200, JSON.stringify(rv.json));
    await sleep(300);
    stop = true;
    await Promise.all(loops);
    assert.deepEqual(late, []);
  });

  /**
   * The signer's record is changed under the watch in ways no watch entry
   * reports; 250 ms after the change a request must get the store's answer.
   */
  async function underTheWatch(
    what: string,
    change: (ctx: { store: MembershipStore; nc: NatsConnection; victim: Identity }) => Promise<void>
  ): Promise<{ at250: string; later: string; adminAfter: number }> {
    const { id: victim } = await enrol(adminCtl, d, `cr14b-${what}`);
    await sleep(400);
    assert.equal((await me(victim, d.httpUrl)).status, 200);
    const { store, nc, app } = await nodeStore(d);
    try {
      await change({ store, nc, victim });
      const changedAt = performance.now();
      // Requests from 250 ms after the change, for a second.
      await sleep(USER_CACHE_BOUND_MS + 5);
      const served: string[] = [];
      let at250 = '';
      while (performance.now() - changedAt < 1_250) {
        const r = await me(victim, d.httpUrl);
        if (!at250) at250 = `${r.status} ${codeOf(r)}`;
        if (r.status === 200)
          served.push(`${(performance.now() - changedAt).toFixed(0)} ms after the change`);
        await sleep(10);
      }
      assert.deepEqual(served, [], `${what}: served`);
      const later = await me(victim, d.httpUrl);
      const adminAfter = (await me(admin, d.httpUrl)).status;
      return { at250, later: `${later.status} ${codeOf(later)}`, adminAfter };
    } finally {
      await nc.close();
      await app.close();
    }
  }

  test('the signer removed under the watch (message deleted by sequence; subject purged) is unknown 250 ms later', async () => {
    const bySeq = await underTheWatch('delseq', async ({ nc, victim }) => {
      const jsm = await nc.jetstreamManager();
      const m = await jsm.streams.getMessage(USERS, {
        last_by_subj: `$KV.sealbus_users.${victim.signPubHex}`,
      });
      assert.ok(await jsm.streams.deleteMessage(USERS, m.seq, false));
    });
    const bySubject = await underTheWatch('purge', async ({ nc, victim }) => {
      const jsm = await nc.jetstreamManager();
      await jsm.streams.purge(USERS, { filter: `$KV.sealbus_users.${victim.signPubHex}` });
    });
    console.log(
      `# deleted by seq: ${JSON.stringify(bySeq)}; subject purged: ${JSON.stringify(bySubject)}`
    );
    for (const r of [bySeq, bySubject]) {
      assert.match(r.at250, /^401 UNKNOWN_KEY$/);
      assert.match(r.later, /^401 UNKNOWN_KEY$/);
      assert.equal(r.adminAfter, 200);
    }
  });

  test('the users stream purged, or deleted and made again (fewer messages, a lower last sequence), without the signer: unknown 250 ms later, and after the cache reloads', async () => {
    const copyAllBut = async (nc: NatsConnection, victim: Identity, remake: boolean) => {
      const jsm = await nc.jetstreamManager();
      const js = nc.jetstream();
      const kv = await js.views.kv('sealbus_users', { bindOnly: true });
      // The keys first, then the values (a get inside the keys() iteration
      // ends nats.js's listing early).
      const keys: string[] = [];
      for await (const k of await kv.keys()) if (k !== victim.signPubHex) keys.push(k);
      const rows: Array<[string, Uint8Array]> = [];
      for (const k of keys) {
        const e = await kv.get(k);
        if (e && e.operation === 'PUT') rows.push([k, e.value]);
      }
      assert.ok(rows.length >= 3, `${rows.length} records copied`);
      if (remake) {
        const cfg = (await jsm.streams.info(USERS)).config;
        await jsm.streams.delete(USERS);
        await jsm.streams.add(cfg);
      } else await jsm.streams.purge(USERS);
      for (const [k, v] of rows) await kv.put(k, v);
    };
    const purged = await underTheWatch('spurge', ({ nc, victim }) => copyAllBut(nc, victim, false));
    const remade = await underTheWatch('remade', ({ nc, victim }) => copyAllBut(nc, victim, true));
    console.log(
      `# stream purged: ${JSON.stringify(purged)}; made again: ${JSON.stringify(remade)}`
    );
    for (const r of [purged, remade]) {
      assert.match(r.at250, /^401 UNKNOWN_KEY$/);
      assert.match(r.later, /^401 UNKNOWN_KEY$/);
      assert.equal(r.adminAfter, 200);
    }
  });

  test('restore --force into the running node is refused; the node keeps its nonce memory', async () => {
    const h = signedHeaders(member, 'GET', `${d.httpUrl}/me`);
    const first = await rawRequest(d.httpUrl, 'GET', '/me', h);
    assert.equal(first.status, 200, JSON.stringify(first.json));
    await using dir = await tempDir('cr14b-');
    const archive = join(dir.path, 'b.tgz');
    const b = await runMembershipd(['backup', '--data', d.dataDir, '--out', archive]);
    assert.equal(b.code, 0, b.stderr);
    const r = await runMembershipd([
      'restore',
      '--data',
      d.dataDir,
      '--in',
      archive,
      '--force',
      '--allow-unauthenticated',
    ]);
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stderr, /running/);
    const replay = await rawRequest(d.httpUrl, 'GET', '/me', h);
    assert.equal(codeOf(replay), 'REPLAYED');
  });

  test(
    "a second daemon on this node's nats-server, given this node's name as a peer: a request served here is refused there (the name is claimed as the first node's own: WRONG_AUTHORITY)",
    {},
    async () => {
      // A second daemon on the same nats-server (as a second node would be:
      // tests/callout-key.test.ts), told this node's name the way a cluster
      // gives each node its peers' names.
      await using dir = await tempDir('cr14b-b-');
      const b = await startDaemon({
        dataDir: join(dir.path, 'b'),
        args: [
          '--nats-url',
          d.natsUrl,
          '--internal-id-file',
          join(d.dataDir, 'internal.id'),
          '--callout-key-file',
          join(d.dataDir, 'callout.key'),
          '--authority',
          `127.0.0.1:${d.httpPort}`,
          '--log-level',
          'info',
        ],
      });
      closers.push(() => b.dispose());
      const hb = await rawRequest(b.httpUrl, 'GET', '/healthz', {});
      const h = signedHeaders(admin, 'GET', `${d.httpUrl}/me`);
      const here = await rawRequest(d.httpUrl, 'GET', '/me', h);
      assert.equal(here.status, 200, JSON.stringify(here.json));
      // The same bytes to the other daemon (its socket, this node's name).
      const there = await rawRequest(b.httpUrl, 'GET', '/me', {
        ...h,
        host: `127.0.0.1:${d.httpPort}`,
      });
      console.log(
        `# second daemon: nonces ${hb.json?.auth?.nonces}; the replay there: ${there.status} ${codeOf(there)}`
      );
      assert.equal(there.status, 401, JSON.stringify(there.json));
      assert.equal(codeOf(there), 'WRONG_AUTHORITY');
    }
  );

  test('a request signed ahead of the node clock (inside the 30 s skew) and served is refused after a restart and after a crash', async () => {
    const results: string[] = [];
    for (const how of ['stop', 'crash'] as const) {
      const h = signedHeaders(admin, 'GET', `${d.httpUrl}/me`, undefined, {
        now: nowSec() + 25,
        lifetimeSec: 120,
      });
      const created = nowSec() + 25;
      const first = await rawRequest(d.httpUrl, 'GET', '/me', h);
      assert.equal(first.status, 200, JSON.stringify(first.json));
      const t = performance.now();
      d = await restart(d, how);
      const took = performance.now() - t;
      const replay = await rawRequest(d.httpUrl, 'GET', '/me', h);
      results.push(
        `${how}: restarted in ${took.toFixed(0)} ms, ${created - nowSec()} s before created; ` +
          `replay ${replay.status} ${codeOf(replay)}`
      );
      assert.equal(replay.status, 401, `${how}: ${JSON.stringify(replay.json)}`);
      assert.match(codeOf(replay), /^(REPLAYED|SIGNED_BEFORE_START)$/);
    }
    console.log(`# ${results.join('; ')}`);
  });
});

// ---------------------------------------------------------------------------

describe('--auth soft on a single node', { timeout: 60_000 }, () => {
  let d: TestDaemon;
  let admin: Identity;
  before(async () => {
    d = await startDaemon({ args: ['--auth', 'soft'] });
    admin = await adminOf(d);
  });
  after(async () => {
    await d?.dispose();
  });

  test('a replay passes as documented, but a user revoked by another writer 250 ms ago, or an unknown key, is not served as that user', async () => {
    const ctl = new ControlClient({ urls: [d.httpUrl], identity: admin });
    try {
      const h = signedHeaders(admin, 'GET', `${d.httpUrl}/me`);
      assert.equal((await rawRequest(d.httpUrl, 'GET', '/me', h)).status, 200);
      assert.equal((await rawRequest(d.httpUrl, 'GET', '/me', h)).status, 200, 'soft: let through');
      const { id } = await enrol(ctl, d, 'cr14b-soft');
      await sleep(400);
      assert.equal((await me(id, d.httpUrl)).status, 200);
      const { store, nc, app } = await nodeStore(d);
      try {
        await store.revokeUser(id.signPubHex);
      } finally {
        await nc.close();
        await app.close();
      }
      await sleep(USER_CACHE_BOUND_MS + 5);
      const revoked = await me(id, d.httpUrl);
      assert.notEqual(revoked.status, 200, JSON.stringify(revoked.json));
      const stranger = await me(generateIdentity(), d.httpUrl);
      assert.notEqual(stranger.status, 200, JSON.stringify(stranger.json));
      // A revoked signer's forged admin call passes nothing either.
      const h2 = signedHeaders(id, 'GET', `${d.httpUrl}/users`);
      const list = await rawRequest(d.httpUrl, 'GET', '/users', h2);
      assert.ok(list.status >= 400, JSON.stringify(list.json));
    } finally {
      ctl.close();
    }
  });
});

// ---------------------------------------------------------------------------

describe('a second `serve` on the same data dir (other ports)', { timeout: 60_000 }, () => {
  test(
    'a second serve on the data dir of a running node is refused at start: it does not take the store, and the first keeps serving',
    {},
    async () => {
      const a = await startDaemon();
      let b: TestDaemon | undefined;
      try {
        const admin = await adminOf(a);
        const aName = new URL(a.httpUrl).host;
        // The first keeps serving fresh requests while the second starts.
        const accepted: Array<{ h: Record<string, string>; at: number }> = [];
        let stop = false;
        const loop = (async () => {
          while (!stop) {
            const h = signedHeaders(admin, 'GET', `${a.httpUrl}/me`);
            const r = await rawRequest(a.httpUrl, 'GET', '/me', h).catch(() => null);
            if (r?.status === 200) accepted.push({ h, at: Date.now() });
            await sleep(2);
          }
        })();
        await sleep(200);
        // Timed so that the second's start second (its start moment, one
        // process boot after it is spawned, rounded up) begins while the
        // first still serves: the boot is measured, the start placed at .85.
        const t = Date.now();
        await runMembershipd(['--version']);
        const boot = Date.now() - t;
        await sleep((((850 - boot - (Date.now() % 1_000)) % 1_000) + 2_000) % 1_000);
        const bStart = Date.now();
        const confPath = join(a.dataDir, 'nats', 'nats-server.conf');
        const confBefore = await readFile(confPath, 'utf8');
        let refusal = '';
        b = await startDaemon({ dataDir: a.dataDir, args: ['--authority', aName] }).catch(
          (err: Error) => {
            refusal = err.message;
            console.log(`# the second serve did not start: ${err.message.split('\n')[0]}`);
            return undefined;
          }
        );
        // Fixed: the second refuses to take a data dir another membershipd
        // serves (it used to stop the first's nats-server as an orphan and
        // take the store; requests the first served were served again).
        stop = true;
        await loop;
        console.log(
          `# second serve on the same data dir: refused in ${Date.now() - bStart} ms; ` +
            `the first served ${accepted.filter((x) => x.at >= bStart).length} requests meanwhile`
        );
        assert.equal(b, undefined, 'the second serve started');
        assert.match(refusal, /another membershipd serves this data dir/);
        assert.equal(a.proc.exitCode, null, 'the first keeps running');
        assert.equal(
          await readFile(confPath, 'utf8'),
          confBefore,
          'the running node config was not replaced (a reload would apply it)'
        );
        const still = await rawRequest(
          a.httpUrl,
          'GET',
          '/me',
          signedHeaders(admin, 'GET', `${a.httpUrl}/me`)
        );
        assert.equal(still.status, 200, 'and serving');
      } finally {
        await b?.dispose();
        await a.dispose();
      }
    }
  );
});

// ---------------------------------------------------------------------------

describe(
  'restores and at-rest rotations through the offline tools, right after a request signed ahead',
  { timeout: 90_000 },
  () => {
    let dir: Awaited<ReturnType<typeof tempDir>>;
    let d: TestDaemon | undefined;
    let admin: Identity;
    let key: string;
    let ports: string[];
    const at = (data: string, extra: string[] = []) =>
      startDaemon({
        dataDir: join(dir.path, data),
        args: ['--http', `127.0.0.1:${ports[0]}`, '--nats-port', ports[1]!, ...extra],
      });
    const ahead = () =>
      signedHeaders(admin, 'GET', `${d!.httpUrl}/me`, undefined, {
        now: nowSec() + 28,
        lifetimeSec: 120,
      });

    before(async () => {
      dir = await tempDir('cr14b-rot-');
      key = join(dir.path, 'at-rest.key');
      await writeFile(key, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
      await chmod(key, 0o600);
      d = await startDaemon({ dataDir: join(dir.path, 'd1') });
      admin = await adminOf(d);
      ports = [new URL(d.httpUrl).port, new URL(d.natsUrl).port];
    });
    after(async () => {
      await d?.dispose();
      await dir?.remove();
    });

    test('a rotation (stop, backup, restore under a new at-rest key, start): the request is REPLAYED', async () => {
      const r = ahead();
      assert.equal((await rawRequest(d!.httpUrl, 'GET', '/me', r)).status, 200);
      const t = performance.now();
      await d!.stop();
      const archive = join(dir.path, 'after-stop.tgz');
      const b = await runMembershipd(['backup', '--data', join(dir.path, 'd1'), '--out', archive]);
      assert.equal(b.code, 0, b.stderr);
      const rs = await runMembershipd([
        'restore',
        '--data',
        join(dir.path, 'd2'),
        '--in',
        archive,
        '--allow-unauthenticated',
        '--at-rest-key-file',
        key,
      ]);
      assert.equal(rs.code, 0, rs.stderr);
      d = await at('d2', ['--at-rest-key-file', key]);
      const replay = await rawRequest(d.httpUrl, 'GET', '/me', r);
      console.log(
        `# rotation: back in ${(performance.now() - t).toFixed(0)} ms; replay ${replay.status} ${codeOf(replay)}`
      );
      assert.equal(replay.status, 401, JSON.stringify(replay.json));
      assert.equal(codeOf(replay), 'REPLAYED');
    });

    test(
      'a restore of an archive made before the request, started within the skew: the request is not served again',
      {
        todo: 'KNOWN LIMIT (docs/SECURITY.md): nothing the restored node loads knows the nonce (the archive predates it) and its created is after the start; served 200. A request signed before the start is refused after a restore (tests/nonces.test.ts); one signed ahead of the clock, inside the 30 s skew, is not',
      },
      async () => {
        const archive = join(dir.path, 'before.tgz');
        const b = await runMembershipd([
          'backup',
          '--data',
          join(dir.path, 'd2'),
          '--out',
          archive,
        ]);
        assert.equal(b.code, 0, b.stderr);
        const r = ahead();
        assert.equal((await rawRequest(d!.httpUrl, 'GET', '/me', r)).status, 200);
        const t = performance.now();
        await d!.stop();
        const rs = await runMembershipd([
          'restore',
          '--data',
          join(dir.path, 'd3'),
          '--in',
          archive,
          '--allow-unauthenticated',
        ]);
        assert.equal(rs.code, 0, rs.stderr);
        d = await at('d3');
        const replay = await rawRequest(d.httpUrl, 'GET', '/me', r);
        console.log(
          `# older archive: back in ${(performance.now() - t).toFixed(0)} ms; replay ${replay.status} ${codeOf(replay)}`
        );
        assert.equal(replay.status, 401, JSON.stringify(replay.json));
      }
    );
  }
);

// ---------------------------------------------------------------------------

describe('a 3-node cluster', { timeout: 120_000 }, () => {
  let cl: TestCluster;
  let admin: Identity;
  const closers: Array<() => Promise<unknown> | unknown> = [];
  const asDaemon = (name: string) => {
    const n = cl.node(name);
    return { natsUrl: n.nats_url, dataDir: n.data_dir, httpUrl: n.http_url } as TestDaemon;
  };

  before(async () => {
    cl = await startCluster();
    admin = await loadIdentity(cl.state().admin_identity);
  });
  after(async () => {
    for (const c of closers.reverse()) await Promise.resolve(c()).catch(() => {});
    await cl?.down();
  });

  test('a request served by one node is served by no other (under its name or theirs), nor by it after it was killed and started again (signed ahead too)', async () => {
    const [n1, n2, n3] = cl.state().nodes.map((n) => n.http_url) as [string, string, string];
    const name1 = new URL(n1).host;
    const h = signedHeaders(admin, 'GET', `${n1}/me`);
    const ahead = signedHeaders(admin, 'GET', `${n1}/me`, undefined, {
      now: nowSec() + 25,
      lifetimeSec: 120,
    });
    assert.equal((await rawRequest(n1, 'GET', '/me', h)).status, 200);
    assert.equal((await rawRequest(n1, 'GET', '/me', ahead)).status, 200);
    const seen: string[] = [];
    for (const url of [n2, n3]) {
      for (const [what, hh] of [
        ['now', h],
        ['ahead', ahead],
      ] as const) {
        const r = await rawRequest(url, 'GET', '/me', { ...hh, host: name1 });
        seen.push(`${new URL(url).port} ${what}: ${r.status} ${codeOf(r)}`);
        assert.equal(r.status, 401, `${url} ${what}: ${JSON.stringify(r.json)}`);
      }
    }
    const nonces = await Promise.all(
      [n1, n2, n3].map(async (u) => (await rawRequest(u, 'GET', '/healthz', {})).json?.auth?.nonces)
    );
    const name = cl.state().nodes[0]!.name;
    const k = await cl.kill(name);
    assert.equal(k.code, 0, k.stderr);
    const st = await cl.start(name);
    assert.equal(st.code, 0, st.stderr);
    const after = cl.node(name).http_url;
    for (const [what, hh] of [
      ['now', h],
      ['ahead', ahead],
    ] as const) {
      const r = await rawRequest(after, 'GET', '/me', hh);
      seen.push(`restarted ${what}: ${r.status} ${codeOf(r)}`);
      assert.equal(r.status, 401, `after the restart, ${what}: ${JSON.stringify(r.json)}`);
    }
    console.log(`# cluster: nonces ${JSON.stringify(nonces)}; ${seen.join('; ')}`);
  });

  test('a revocation acknowledged by one node, with the users stream leader stepping down at once: the others serve nothing sent 250 ms later', async () => {
    const nodes = cl.state().nodes;
    const ctl = new ControlClient({ urls: [nodes[1]!.http_url], identity: admin });
    closers.push(() => ctl.close());
    const { nc, app } = await nodeStore(asDaemon(nodes[0]!.name));
    closers.push(
      () => app.close(),
      () => nc.close()
    );
    const others = [nodes[0]!.http_url, nodes[2]!.http_url];
    const late: string[] = [];
    const odd: string[] = [];
    const stepdowns: string[] = [];
    let served = 0;
    let refused = 0;
    for (let round = 0; round < 3; round++) {
      const { id } = await enrol(
        ctl,
        { httpUrl: nodes[1]!.http_url } as TestDaemon,
        `cr14b-cl${round}`
      );
      for (const url of others)
        await waitFor(async () => (await me(id, url)).status === 200 || undefined, {
          timeoutMs: 20_000,
          what: `${url} serves the new user`,
        });
      let acked = Infinity;
      let stop = false;
      const hammer = async (url: string) => {
        while (!stop) {
          const sentAt = performance.now();
          const r = await me(id, url).catch((e: Error) => ({
            status: 0,
            json: { error: { code: e.message } },
          }));
          if (r.status === 200) {
            served++;
            if (sentAt - acked > USER_CACHE_BOUND_MS)
              late.push(
                `${url} round ${round}: served ${(sentAt - acked).toFixed(0)} ms after the ack`
              );
          } else if (/^(REVOKED_KEY|TOO_MANY_AUTH_FAILURES)$/.test(codeOf(r))) refused++;
          // Refused for the revocation, or (damping is on in the cluster)
          // as an address with too many failures; 503 during the election.
          else if (r.status !== 503) odd.push(`${url}: ${r.status} ${codeOf(r)}`);
        }
      };
      const loops = others.map(hammer);
      await sleep(200);
      await ctl.revokeUser(id.signPubHex);
      acked = performance.now();
      stepdowns.push(
        await nc
          .request(`$JS.API.STREAM.LEADER.STEPDOWN.${USERS}`, undefined, { timeout: 5_000 })
          .then((m) => new TextDecoder().decode(m.data).slice(0, 60))
          .catch((e: Error) => `error: ${e.message}`)
      );
      await sleep(1_200);
      stop = true;
      await Promise.all(loops);
    }
    console.log(
      `# cluster revocations + stepdowns: ${served} served, ${refused} refused; stepdowns ${stepdowns.join(' | ')}`
    );
    assert.deepEqual(late, []);
    assert.deepEqual(odd, []);
    assert.ok(refused > 0);
  });
});
