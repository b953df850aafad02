// Attack replays (issue 16, item 6): every refused connect wrote ~4 log lines
// with no limit (1,700 connects/s grew the log by 1.3 MB/s); every refused
// publish one more (5,000 forbidden publishes: 5,000 lines, 1.29 MB); every
// bad signature two. At the default level, a flood now costs a line per
// source and interval, and a count.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect, nkeyAuthenticator } from 'nats';
import { createUser } from 'nkeys.js';
import { generateIdentity } from '@sealbus/crypto';
import { ControlClient } from '@sealbus/client';
import { startDaemon, waitFor, type LogRecord, type TestDaemon } from '@sealbus/testing';
import { adminOf, enrol, natsAs } from '../helpers.js';
import { sendRaw, signRaw } from './attack.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** What an operator at the default level (info) would see. */
const visible = (logs: LogRecord[]) => logs.filter((l) => l.level >= 30);
const bytes = (logs: LogRecord[]) => logs.reduce((n, l) => n + JSON.stringify(l).length + 1, 0);

describe('quiet under attack', { timeout: 180_000 }, () => {
  let d: TestDaemon;
  let admin: ControlClient;
  before(async () => {
    d = await startDaemon({ args: ['--auth-fail-limit', '0'] });
    admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
  });
  after(async () => {
    admin?.close();
    await d?.dispose();
  });

  test('a connect flood with unknown keys: a few lines, not lines per connect', async () => {
    const mark = d.logs.length;
    const N = 300;
    let refused = 0;
    for (let i = 0; i < N; i += 10) {
      await Promise.all(
        Array.from({ length: 10 }, async () => {
          const kp = createUser();
          try {
            const nc = await connect({
              servers: d.natsUrl,
              authenticator: nkeyAuthenticator(kp.getSeed()),
              maxReconnectAttempts: 0,
              timeout: 5_000,
            });
            await nc.close();
          } catch {
            refused++;
          }
        })
      );
    }
    await sleep(500);
    const lines = visible(d.logs.slice(mark));
    assert.equal(refused, N);
    assert.ok(
      lines.length <= 20,
      `${lines.length} lines (${bytes(lines)} bytes) for ${N} refused connects`
    );
  });

  test('forbidden publishes: a few lines, not one per publish', async () => {
    const { id: m } = await enrol(admin, d, 'flood-pub');
    const nc = await natsAs(d, m);
    const mark = d.logs.length;
    const N = 3_000;
    for (let i = 0; i < N; i++) {
      nc.publish(`forbidden.${i}`, new Uint8Array(1));
      if (i % 500 === 499) await nc.flush().catch(() => {});
    }
    await nc.flush().catch(() => {});
    await sleep(1_000);
    await nc.close();
    // The refusals did happen (at debug, for who asks for them)...
    const all = d.logs.slice(mark);
    assert.ok(all.filter((l) => /Publish Violation/.test(l.msg)).length >= N / 2);
    // ...and the default level shows a few lines.
    const lines = visible(all);
    assert.ok(
      lines.length <= 10,
      `${lines.length} lines (${bytes(lines)} bytes) for ${N} refused publishes`
    );
  });

  test('unsigned requests (404s on long paths, pipelined health checks): a few lines, paths bounded', async () => {
    const mark = d.logs.length;
    const long = '/' + 'A'.repeat(8_000);
    for (let i = 0; i < 200; i++) await (await fetch(`${d.httpUrl}${long}${i}`)).arrayBuffer();
    for (let i = 0; i < 200; i++) await (await fetch(`${d.httpUrl}/healthz`)).arrayBuffer();
    const lines = visible(d.logs.slice(mark));
    assert.ok(lines.length <= 10, `${lines.length} lines (${bytes(lines)} bytes) for 400 requests`);
    assert.ok(bytes(lines) < 20_000, `${bytes(lines)} bytes logged`);
  });

  test('bad signatures from one address: a few lines, and a count', async () => {
    const self = new URL(d.httpUrl).host;
    const stranger = generateIdentity(); // not registered
    const mark = d.logs.length;
    const N = 200;
    for (let i = 0; i < N; i++) {
      const r = await sendRaw(d.httpUrl, 'GET', '/me', signRaw(stranger, 'GET', self, '/me'));
      assert.equal(r.status, 401);
    }
    const lines = visible(d.logs.slice(mark));
    assert.ok(lines.length <= 10, `${lines.length} lines for ${N} refused signatures`);
    // A signed request from someone else is still logged as usual.
    const before = d.logs.length;
    await admin.me();
    // The line reaches us through the daemon's stdout, a moment after the answer.
    await waitFor(
      () =>
        d.logs
          .slice(before)
          .some((l) => l.msg === 'http' && (l as { status?: number }).status === 200),
      { timeoutMs: 5_000, what: "the signed request's log line" }
    );
  });
});
