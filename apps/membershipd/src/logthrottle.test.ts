import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LogThrottle } from './logthrottle.js';

test('first event per key and interval is logged, the rest summed once the interval ends', () => {
  const summaries: Array<[string, number]> = [];
  const t = new LogThrottle({ summary: (k, n) => summaries.push([k, n]), intervalMs: 1_000 });
  let logged = 0;
  for (let i = 0; i < 1_000; i++) if (t.hit('10.0.0.1', 5_000 + i / 10)) logged++;
  if (t.hit('10.0.0.2', 5_050)) logged++;
  assert.equal(logged, 2);
  assert.equal(t.suppressedTotal, 999);
  t.flush(6_200);
  assert.deepEqual(summaries, [['10.0.0.1', 999]]);
  // A new interval logs its first event again.
  if (t.hit('10.0.0.1', 6_300)) logged++;
  assert.equal(logged, 3);
  t.stop();
});

test('sources beyond maxKeys share one key, so memory stays bounded', () => {
  let logged = 0;
  const t = new LogThrottle({ summary: () => {}, intervalMs: 1_000, maxKeys: 10 });
  for (let i = 0; i < 10_000; i++) if (t.hit(`src${i}`, 0)) logged++;
  assert.equal(logged, 11);
  t.stop();
});
