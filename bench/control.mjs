// Control-plane benchmark: a signed GET /me through the whole middleware
// (RFC 9421 verify, user lookup, nonce create in KV) against an unsigned
// trivial route and a route that only verifies one Ed25519 signature (the
// cryptographic floor of any signed request), on the same daemon, with the
// same load generator, rounds interleaved so drift hits all three alike.

import { join } from 'node:path';
import { loadIdentity, requestSigner, signRequest } from '@sealbus/crypto';
import { startDaemon } from '@sealbus/testing';
import { load, median, table } from './lib.mjs';

export async function controlBench({ durationMs = 3_000, rounds = 3, concurrency = 32 } = {}) {
  const d = await startDaemon({ args: ['--bench-routes', '--log-level', 'warn'] });
  try {
    const signer = requestSigner(await loadIdentity(join(d.dataDir, 'admin.id')));
    const origin = d.httpUrl;
    // Requests are signed before the clock starts, so the generator's own
    // signing (same machine, same cores) does not count against the server.
    const presign = (path, n) => {
      const url = new URL(path, origin);
      return Array.from({ length: n }, () =>
        signRequest(signer, { method: 'GET', url }, { lifetimeSec: 300 })
      );
    };
    const budget = Math.ceil((durationMs / 1000) * 15_000);
    const routes = [
      { name: 'unsigned GET /livez', path: '/livez', headers: null },
      {
        name: 'verify-only GET /_bench/verify (floor)',
        path: '/_bench/verify',
        headers: () => presign('/_bench/verify', budget),
      },
      {
        name: 'signed GET /me (full middleware)',
        path: '/me',
        headers: () => presign('/me', budget),
      },
    ];
    const results = new Map(routes.map((r) => [r.name, []]));
    // warm-up
    for (const r of routes) {
      const hs = r.headers ? r.headers() : null;
      await load({
        origin,
        path: r.path,
        headersFor: (i) => (hs ? hs[i % hs.length] : {}),
        durationMs: 500,
        concurrency,
      });
    }
    for (let round = 0; round < rounds; round++) {
      for (const r of routes) {
        const hs = r.headers ? r.headers() : null;
        const res = await load({
          origin,
          path: r.path,
          headersFor: (i) => (hs ? (hs[i] ?? {}) : {}),
          durationMs,
          concurrency,
        });
        if (res.failed > 0)
          throw new Error(
            `${r.name}: ${res.failed} failed requests ${JSON.stringify(res.statuses)}`
          );
        results.get(r.name).push(res);
      }
    }
    const rows = routes.map((r) => {
      const rs = results.get(r.name);
      return {
        name: r.name,
        rps: median(rs.map((x) => x.rps)),
        p50: median(rs.map((x) => x.p50)),
        p99: median(rs.map((x) => x.p99)),
      };
    });
    const [unsigned, floor, signed] = rows;
    console.log(
      `\ncontrol plane, ${rounds} interleaved rounds of ${durationMs / 1000} s, concurrency ${concurrency}, loopback (medians)`
    );
    console.log(
      table(rows, [
        ['route', (r) => r.name],
        ['req/s', (r) => r.rps.toFixed(0)],
        ['p50 ms', (r) => r.p50.toFixed(2)],
        ['p99 ms', (r) => r.p99.toFixed(2)],
      ])
    );
    console.log(
      `ratio signed/unsigned: ${(signed.rps / unsigned.rps).toFixed(3)}   signed/floor: ${(signed.rps / floor.rps).toFixed(3)}   floor/unsigned: ${(floor.rps / unsigned.rps).toFixed(3)}`
    );
    return {
      unsigned,
      floor,
      signed,
      figures: {
        'control.signed_over_floor': signed.rps / floor.rps,
        'control.signed_over_unsigned': signed.rps / unsigned.rps,
        'control.signed_rps': signed.rps,
      },
    };
  } finally {
    await d.dispose();
  }
}
