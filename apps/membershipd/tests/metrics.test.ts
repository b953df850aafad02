import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, readlink } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import { connect, nkeyAuthenticator, type NatsConnection } from 'nats';
import {
  encodePublicIdentity,
  generateIdentity,
  userNkeyFromSeed,
  type Identity,
} from '@sealbus/crypto';
import { ControlClient } from '@sealbus/client';
import { freePort, runMembershipd, startDaemon, waitFor, type TestDaemon } from '@sealbus/testing';
import { adminOf, natsAs, signedHeaders } from './helpers.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses the Prometheus text format (the subset prom-client writes). */
function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `unparsable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of m[2]?.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g) ?? []) labels[k!] = v!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The sum of every series of `name` whose labels include `labels`. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

function has(samples: Sample[], name: string, labels: Record<string, string> = {}): boolean {
  return samples.some(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)
  );
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/** One request from a chosen loopback source address (damping counts by address). */
function send(
  url: string,
  o: { method?: string; headers?: Record<string, string>; from?: string } = {}
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      {
        method: o.method ?? 'GET',
        headers: o.headers ?? {},
        localAddress: o.from ?? '127.0.0.1',
        agent: false,
        timeout: 15_000,
      },
      (res) => {
        let text = '';
        res.on('data', (c) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
      }
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** TCP ports a process listens on (Linux: its socket inodes matched against /proc/net/tcp*). */
async function listeningPorts(pid: number): Promise<number[]> {
  const inodes = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`)) {
    const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const m = /^socket:\[(\d+)\]$/.exec(link);
    if (m) inodes.add(m[1]!);
  }
  const ports = new Set<number>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(table, 'utf8').catch(() => '');
    for (const row of text.split('\n').slice(1)) {
      const cols = row.trim().split(/\s+/);
      // local_address is cols[1] (hex ip:port), st is cols[3] (0A = LISTEN), inode is cols[9].
      if (cols.length > 9 && cols[3] === '0A' && inodes.has(cols[9]!))
        ports.add(parseInt(cols[1]!.split(':')[1]!, 16));
    }
  }
  return [...ports].sort((a, b) => a - b);
}

describe('membershipd serve --metrics', { timeout: 180_000 }, () => {
  let d: TestDaemon;
  let metricsPort: number;
  let metricsUrl: string;
  let admin: Identity;
  let adminCtl: ControlClient;
  const conns: NatsConnection[] = [];
  const scrape = async () => {
    const r = await send(`${metricsUrl}/metrics`);
    assert.equal(r.status, 200, r.text);
    return parseMetrics(r.text);
  };

  before(async () => {
    metricsPort = await freePort();
    d = await startDaemon({
      args: [
        '--metrics',
        `127.0.0.1:${metricsPort}`,
        '--auth-fail-limit',
        '3',
        '--auth-fail-window',
        '1m',
      ],
    });
    metricsUrl = `http://127.0.0.1:${metricsPort}`;
    admin = await adminOf(d);
    adminCtl = new ControlClient({ urls: [d.httpUrl], identity: admin });
  });
  after(async () => {
    for (const c of conns) await c.close().catch(() => {});
    adminCtl?.close();
    await d?.dispose();
  });

  test('a separate listener: node.json names it, GET /metrics is Prometheus text, the rest is JSON 404', async () => {
    const node = JSON.parse(await readFile(join(d.dataDir, 'node.json'), 'utf8'));
    assert.equal(node.metrics_url, metricsUrl);
    assert.deepEqual(await listeningPorts(d.proc.pid!), [d.httpPort, metricsPort].sort());

    const r = await send(`${metricsUrl}/metrics`);
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    const samples = parseMetrics(r.text);
    assert.equal(value(samples, 'sealbus_build_info', { version: '0.1.0' }), 1);
    assert.equal(value(samples, 'sealbus_nats_connected'), 1);
    assert.ok(has(samples, 'sealbus_nats_reconnects_total'));
    assert.ok(has(samples, 'sealbus_auth_damping_total', { decision: 'blocked' }));
    assert.ok(has(samples, 'sealbus_audit_appends_total', { outcome: 'error' }));
    assert.ok(has(samples, 'sealbus_process_resident_memory_bytes'), 'process metrics');
    // Every documented family is declared, even before its first event.
    for (const name of [
      'sealbus_http_requests_total',
      'sealbus_http_request_duration_seconds',
      'sealbus_signature_failures_total',
      'sealbus_replays_total',
      'sealbus_auth_damping_total',
      'sealbus_callout_decisions_total',
      'sealbus_callout_duration_seconds',
      'sealbus_kicks_total',
      'sealbus_kv_operation_duration_seconds',
      'sealbus_nats_connected',
      'sealbus_nats_reconnects_total',
      'sealbus_audit_appends_total',
      'sealbus_build_info',
    ]) {
      assert.match(r.text, new RegExp(`^# TYPE ${name} `, 'm'), name);
    }

    const nope = await send(`${metricsUrl}/`);
    assert.equal(nope.status, 404);
    assert.equal(JSON.parse(nope.text).error.code, 'NOT_FOUND');
    const post = await send(`${metricsUrl}/metrics`, { method: 'POST' });
    assert.equal(post.status, 405);
    assert.equal(JSON.parse(post.text).error.code, 'METHOD_NOT_ALLOWED');
    // Not on the control plane's listener.
    assert.equal((await send(`${d.httpUrl}/metrics`)).status, 404);
  });

  test('signed requests, refusals, replays, damping and audit appends move their counters', async () => {
    const before = await scrape();
    const me = `${d.httpUrl}/me`;
    for (let i = 0; i < 2; i++) {
      assert.equal((await send(me, { headers: signedHeaders(admin, 'GET', me) })).status, 200);
    }
    // A bad signature (the header of another request), a replay, a missing signature.
    const bad = signedHeaders(admin, 'GET', me);
    bad['signature'] = signedHeaders(admin, 'GET', me)['signature']!;
    const badR = await send(me, { headers: bad, from: '127.0.0.3' });
    assert.equal(badR.status, 401);
    assert.equal(JSON.parse(badR.text).error.code, 'BAD_SIGNATURE');
    const once = signedHeaders(admin, 'GET', me);
    assert.equal((await send(me, { headers: once })).status, 200);
    const replay = await send(me, { headers: once, from: '127.0.0.3' });
    assert.equal(JSON.parse(replay.text).error.code, 'REPLAYED');
    assert.equal((await send(me, { from: '127.0.0.4' })).status, 401);
    // Unmatched paths are one label, whatever the path.
    assert.equal((await send(`${d.httpUrl}/no/such/${'ab'.repeat(8)}`)).status, 404);
    // A state change with a path parameter: audited, labelled by its pattern.
    const u = generateIdentity();
    await adminCtl.addUser({ sign_pub: u.signPubHex, handle: 'metered', role: 'member' });
    await adminCtl.revokeUser(u.signPubHex);
    // Damping: limit 3 from one address, then 429s.
    const flood: number[] = [];
    for (let i = 0; i < 5; i++) flood.push((await send(me, { from: '127.0.0.2' })).status);
    assert.deepEqual(flood, [401, 401, 401, 429, 429]);

    const after = await scrape();
    const delta = (name: string, labels: Record<string, string> = {}) =>
      value(after, name, labels) - value(before, name, labels);

    const route = (r: string, method: string, status: string) => ({ route: r, method, status });
    assert.equal(delta('sealbus_http_requests_total', route('/me', 'GET', '200')), 3);
    assert.equal(delta('sealbus_http_requests_total', route('/me', 'GET', '401')), 6);
    assert.equal(delta('sealbus_http_requests_total', route('/me', 'GET', '429')), 2);
    assert.equal(delta('sealbus_http_requests_total', route('unmatched', 'GET', '404')), 1);
    assert.equal(delta('sealbus_http_requests_total', route('/users', 'POST', '201')), 1);
    assert.equal(
      delta('sealbus_http_requests_total', route('/users/:sign_pub/revoke', 'POST', '200')),
      1
    );
    assert.equal(
      delta('sealbus_http_request_duration_seconds_count', { route: '/me', method: 'GET' }),
      11
    );
    const routes = new Set(
      after.filter((s) => s.name === 'sealbus_http_requests_total').map((s) => s.labels.route)
    );
    for (const r of routes) assert.ok(!/[0-9a-f]{16}/.test(r!), `a raw path as a label: ${r}`);

    assert.equal(delta('sealbus_signature_failures_total', { code: 'BAD_SIGNATURE' }), 1);
    assert.equal(delta('sealbus_signature_failures_total', { code: 'REPLAYED' }), 1);
    // Damping gates failures, so the two 429s were verified (and failed) too.
    assert.equal(delta('sealbus_signature_failures_total', { code: 'SIGNATURE_MISSING' }), 6);
    assert.equal(delta('sealbus_signature_failures_total'), 8);
    assert.equal(delta('sealbus_replays_total'), 1);
    assert.equal(delta('sealbus_auth_damping_total', { decision: 'tripped' }), 1);
    assert.equal(delta('sealbus_auth_damping_total', { decision: 'blocked' }), 2);
    // Every damping decision is logged too (the daemon's stdout may lag the
    // scrape on a loaded machine: wait for the lines, then count them).
    const logged = (msg: string) => d.logs.filter((l) => l.msg === msg).length;
    await waitFor(
      () =>
        logged('auth damping: address damped after repeated failures') >= 1 &&
        logged('auth damping: request refused') >= 2,
      { timeoutMs: 10_000, what: 'the damping log lines' }
    ).catch(() => {});
    assert.equal(logged('auth damping: address damped after repeated failures'), 1);
    assert.equal(logged('auth damping: request refused'), 2);
    // Two changes: each an intent and an outcome.
    assert.equal(delta('sealbus_audit_appends_total', { outcome: 'ok' }), 4);
    assert.equal(delta('sealbus_audit_appends_total', { outcome: 'error' }), 0);

    const kv = (bucket: string, op: string) =>
      delta('sealbus_kv_operation_duration_seconds_count', { bucket, op });
    // A signer is read from the user cache (a hit) or the store (a get).
    const signers =
      kv('sealbus_users', 'get') +
      delta('sealbus_cache_lookups_total', { cache: 'users', result: 'hit' });
    assert.ok(signers >= 6, `users read: ${signers}`);
    // A single node keeps request nonces in memory: no bucket write, one
    // recorded nonce per verified request (the replay is refused above).
    assert.equal(kv('sealbus_nonces', 'create'), 0, 'no nonce write on a single node');
    assert.equal(
      delta('sealbus_request_nonces_total', { scope: 'node' }),
      5,
      'one nonce per verified request'
    );
    assert.equal(kv('sealbus_users', 'create'), 1);
    assert.equal(kv('sealbus_users', 'update'), 1);
    assert.ok(delta('sealbus_kv_operation_duration_seconds_sum') > 0);
  });

  test('the auth callout and kicks move their counters', async () => {
    const before = await scrape();
    const member = generateIdentity();
    await adminCtl.addUser({
      public: encodePublicIdentity(member),
      handle: 'member',
      role: 'member',
    });
    const nc = await natsAs(d, member);
    conns.push(nc);
    await assert.rejects(natsAs(d, generateIdentity()), /Authorization Violation/i);
    // Its sign key presented as a NATS key: refused, counted as sign_key.
    await assert.rejects(
      connect({
        servers: d.natsUrl,
        authenticator: nkeyAuthenticator(
          new TextEncoder().encode(userNkeyFromSeed(member.signSeed).seed)
        ),
        maxReconnectAttempts: 0,
      }),
      /Authorization Violation/i
    );
    await adminCtl.revokeUser(member.signPubHex);
    await Promise.race([nc.closed(), new Promise((r) => setTimeout(r, 10_000))]);
    assert.equal(nc.isClosed(), true, 'kicked');
    await assert.rejects(natsAs(d, member), /Authorization Violation/i);

    const after = await waitFor(
      async () => {
        const s = await scrape();
        return value(s, 'sealbus_kicks_total') > value(before, 'sealbus_kicks_total')
          ? s
          : undefined;
      },
      { timeoutMs: 5_000, what: 'the kick counted' }
    );
    const delta = (name: string, labels: Record<string, string> = {}) =>
      value(after, name, labels) - value(before, name, labels);
    assert.equal(delta('sealbus_callout_decisions_total', { decision: 'allow' }), 1);
    assert.equal(
      delta('sealbus_callout_decisions_total', { decision: 'allow', reason: 'active' }),
      1
    );
    assert.equal(
      delta('sealbus_callout_decisions_total', { decision: 'deny', reason: 'unknown_key' }),
      1
    );
    assert.equal(
      delta('sealbus_callout_decisions_total', { decision: 'deny', reason: 'sign_key' }),
      1
    );
    // The kicked client may try to reconnect once before it gives up: >= 1.
    assert.ok(
      delta('sealbus_callout_decisions_total', { decision: 'deny', reason: 'revoked' }) >= 1
    );
    assert.equal(
      delta('sealbus_callout_duration_seconds_count'),
      delta('sealbus_callout_decisions_total')
    );
    assert.equal(delta('sealbus_kicks_total'), 1);
    assert.ok(delta('sealbus_kv_operation_duration_seconds_count', { op: 'scan' }) >= 1);
    assert.equal(value(after, 'sealbus_nats_connected'), 1);
  });

  // Last: it stops the nats-server for a while.
  test('the alert gauges fall to 0 while nats-server does not answer, and come back', async () => {
    const gauges = async () => {
      const m = await scrape();
      return [value(m, 'sealbus_nats_connected'), value(m, 'sealbus_store_available')];
    };
    await waitFor(async () => (await gauges()).join() === '1,1', {
      timeoutMs: 15_000,
      what: 'both gauges 1 while healthy',
    });
    // A hung nats-server (it still holds its sockets: only pings notice).
    process.kill(d.natsPid, 'SIGSTOP');
    const t0 = Date.now();
    try {
      await waitFor(async () => (await gauges()).join() === '0,0', {
        timeoutMs: 45_000,
        intervalMs: 500,
        what: 'both gauges 0',
      });
      console.log(
        `# gauges at 0 ${(Date.now() - t0) / 1000} s after nats-server stopped answering`
      );
    } finally {
      process.kill(d.natsPid, 'SIGCONT');
    }
    await waitFor(async () => (await gauges()).join() === '1,1', {
      timeoutMs: 45_000,
      intervalMs: 500,
      what: 'both gauges back to 1',
    });
    // The metrics listener itself answered throughout (it does not wait on NATS).
  });
});

describe('membershipd serve without --metrics', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  before(async () => {
    d = await startDaemon();
  });
  after(async () => d?.dispose());

  test('no metrics listener: only the control plane listens, node.json has no metrics URL', async () => {
    assert.deepEqual(await listeningPorts(d.proc.pid!), [d.httpPort]);
    const node = JSON.parse(await readFile(join(d.dataDir, 'node.json'), 'utf8'));
    assert.equal(node.metrics_url, null);
    assert.ok(!d.logs.some((l) => l.msg === 'metrics listener ready'));
  });

  test('a bad --metrics address is a usage error', async () => {
    const r = await runMembershipd(['serve', '--metrics', 'nowhere', '--data', d.dataDir]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /invalid address "nowhere"/);
  });
});
