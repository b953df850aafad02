// Shared helpers for the benchmarks: a closed-loop HTTP load generator on
// undici (keep-alive, fixed concurrency) and summary statistics.

import { Pool } from 'undici';

export function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

export const median = (xs) =>
  percentile(
    [...xs].sort((a, b) => a - b),
    50
  );

/**
 * Runs `concurrency` workers against one path for `durationMs`, each sending
 * the next request as soon as its previous answer arrived. `headersFor(i)`
 * gives request i's headers (pre-signed requests, or none).
 */
export async function load({
  origin,
  method = 'GET',
  path,
  headersFor = () => ({}),
  durationMs,
  concurrency,
}) {
  const pool = new Pool(origin, { connections: concurrency, pipelining: 1 });
  const latencies = [];
  let next = 0;
  let ok = 0;
  let failed = 0;
  const statuses = new Map();
  const t0 = performance.now();
  const deadline = t0 + durationMs;
  const worker = async () => {
    while (performance.now() < deadline) {
      const headers = headersFor(next++);
      const s = performance.now();
      const res = await pool.request({ method, path, headers });
      await res.body.dump();
      latencies.push(performance.now() - s);
      if (res.statusCode === 200) ok++;
      else {
        failed++;
        statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsed = (performance.now() - t0) / 1000;
  await pool.close();
  latencies.sort((a, b) => a - b);
  return {
    rps: ok / elapsed,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    ok,
    failed,
    statuses: Object.fromEntries(statuses),
  };
}

export function table(rows, columns) {
  const widths = columns.map(([h, f]) =>
    Math.max(h.length, ...rows.map((r) => String(f(r)).length))
  );
  const line = (cells) =>
    cells
      .map((c, i) =>
        String(c)
          .padStart(i === 0 ? 0 : widths[i])
          .padEnd(i === 0 ? widths[i] : 0)
      )
      .join('  ');
  return [
    line(columns.map(([h]) => h)),
    ...rows.map((r) => line(columns.map(([, f]) => f(r)))),
  ].join('\n');
}
