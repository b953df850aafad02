// Operations benchmark: what the operational features cost on the request
// hot path. Three daemons side by side, one plain, one with `--metrics`, one
// encrypted at rest; signed GET /me (verify, user lookup, nonce create: one
// JetStream write) against each, rounds interleaved so drift hits all alike.
// Also times a backup and a restore of a store of a few hundred users.

import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateIdentity, loadIdentity, requestSigner, signRequest } from '@sealbus/crypto';
import { ControlClient } from '@sealbus/client';
import { freePort, runMembershipd, startDaemon, tempDir } from '@sealbus/testing';
import { load, median, table } from './lib.mjs';

export async function opsBench({ durationMs = 3_000, rounds = 3, concurrency = 32 } = {}) {
  const dir = await tempDir('sealbus-bench-ops-');
  const keyFile = join(dir.path, 'at-rest.key');
  await writeFile(keyFile, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
  const metricsPort = await freePort();
  const variants = [
    { name: 'plain', args: [] },
    { name: '--metrics', args: ['--metrics', `127.0.0.1:${metricsPort}`] },
    { name: 'at rest', args: ['--at-rest-key-file', keyFile] },
  ];
  const daemons = [];
  try {
    for (const v of variants) {
      daemons.push(await startDaemon({ args: [...v.args, '--log-level', 'warn'] }));
    }
    const budget = Math.ceil((durationMs / 1000) * 15_000);
    const presigned = async (d) => {
      const signer = requestSigner(await loadIdentity(join(d.dataDir, 'admin.id')));
      const url = new URL('/me', d.httpUrl);
      return () =>
        Array.from({ length: budget }, () =>
          signRequest(signer, { method: 'GET', url }, { lifetimeSec: 300 })
        );
    };
    const makers = await Promise.all(daemons.map(presigned));
    const results = variants.map(() => []);
    for (let round = -1; round < rounds; round++) {
      for (const [i, d] of daemons.entries()) {
        const hs = makers[i]();
        const res = await load({
          origin: d.httpUrl,
          path: '/me',
          headersFor: (n) => hs[n] ?? {},
          durationMs: round < 0 ? 500 : durationMs,
          concurrency,
        });
        if (res.failed > 0)
          throw new Error(
            `${variants[i].name}: ${res.failed} failed ${JSON.stringify(res.statuses)}`
          );
        if (round >= 0) results[i].push(res);
      }
    }
    const rows = variants.map((v, i) => ({
      name: `signed GET /me, ${v.name}`,
      rps: median(results[i].map((x) => x.rps)),
      p50: median(results[i].map((x) => x.p50)),
      p99: median(results[i].map((x) => x.p99)),
    }));
    console.log(
      `\noperations, ${rounds} interleaved rounds of ${durationMs / 1000} s, concurrency ${concurrency}, loopback (medians)`
    );
    console.log(
      table(rows, [
        ['daemon', (r) => r.name],
        ['req/s', (r) => r.rps.toFixed(0)],
        ['p50 ms', (r) => r.p50.toFixed(2)],
        ['p99 ms', (r) => r.p99.toFixed(2)],
      ])
    );
    const [plain, metrics, atRest] = rows;
    console.log(
      `ratio metrics/plain: ${(metrics.rps / plain.rps).toFixed(3)}   at-rest/plain: ${(atRest.rps / plain.rps).toFixed(3)}`
    );

    // Backup and restore of a few hundred users, plain vs at rest, same run.
    const users = 300;
    const times = {};
    for (const [i, label] of [
      [0, 'plain'],
      [2, 'at rest'],
    ]) {
      const d = daemons[i];
      const admin = new ControlClient({
        urls: [d.httpUrl],
        identity: await loadIdentity(join(d.dataDir, 'admin.id')),
      });
      for (let n = 0; n < users; n += 25) {
        await Promise.all(
          Array.from({ length: 25 }, (_, k) => {
            const id = generateIdentity();
            return admin.addUser({
              sign_pub: id.signPubHex,
              kex_pub: id.kexPubHex,
              handle: `u${n + k}`,
              role: 'member',
            });
          })
        );
      }
      admin.close();
      const out = join(dir.path, `${i}.tgz`);
      const keyArgs = i === 2 ? ['--at-rest-key-file', keyFile] : [];
      let t0 = performance.now();
      const b = await runMembershipd(['backup', '--data', d.dataDir, '--out', out]);
      const backupMs = performance.now() - t0;
      if (b.code !== 0) throw new Error(`backup: ${b.stderr}`);
      t0 = performance.now();
      const r = await runMembershipd([
        'restore',
        '--data',
        join(dir.path, `restored-${i}`),
        '--in',
        out,
        '--allow-unauthenticated',
        ...keyArgs,
      ]);
      const restoreMs = performance.now() - t0;
      if (r.code !== 0) throw new Error(`restore: ${r.stderr}`);
      times[label] = { backupMs, restoreMs };
    }
    console.log(
      `backup (live) of ${users + 1} users: plain ${times.plain.backupMs.toFixed(0)} ms, at rest ${times['at rest'].backupMs.toFixed(0)} ms; ` +
        `restore (with read-back): plain ${times.plain.restoreMs.toFixed(0)} ms, at rest ${times['at rest'].restoreMs.toFixed(0)} ms ` +
        `(ratio at-rest/plain ${(times['at rest'].restoreMs / times.plain.restoreMs).toFixed(2)}; both include process start)`
    );
    return { plain, metrics, atRest, times };
  } finally {
    for (const d of daemons) await d.dispose();
    await dir.remove();
  }
}
