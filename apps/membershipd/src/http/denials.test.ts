import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChangeBudget, DenialBudget } from './denials.js';

test('a signer gets its burst on the record, then its refusals are counted, not written', () => {
  const b = new DenialBudget({ burst: 3, perMinute: 6 });
  const t = 1_000_000;
  for (let i = 0; i < 3; i++) assert.deepEqual(b.take('m', t), { suppressed: 0 });
  for (let i = 0; i < 50; i++) assert.equal(b.take('m', t), null);
  assert.equal(b.suppressedTotal, 50);
  // Another signer is not held back by this one.
  assert.deepEqual(b.take('other', t), { suppressed: 0 });
  // Ten seconds later one more record, carrying the count left out.
  assert.deepEqual(b.take('m', t + 10_000), { suppressed: 50 });
  assert.equal(b.take('m', t + 10_000), null);
});

test('a quiet signer gets its whole burst back, never more', () => {
  const b = new DenialBudget({ burst: 2, perMinute: 60 });
  const t = 5_000;
  b.take('m', t);
  b.take('m', t);
  assert.equal(b.take('m', t), null);
  const later = t + 3_600_000;
  assert.ok(b.take('m', later));
  assert.ok(b.take('m', later));
  assert.equal(b.take('m', later), null);
});

test('memory stays bounded however many signers', () => {
  const b = new DenialBudget({ burst: 1, perMinute: 1, maxSigners: 100 });
  for (let i = 0; i < 1_000; i++) assert.ok(b.take(`s${i}`, 0));
});

test('changes: a burst, then one per refill interval, with the wait said', () => {
  const b = new ChangeBudget({ perMinute: 60, burst: 3 });
  const t = 1_000_000;
  for (let i = 0; i < 3; i++) assert.equal(b.take('m', t), 0);
  const wait = b.take('m', t);
  assert.ok(wait > 900 && wait <= 1_000, String(wait));
  assert.equal(b.take('other', t), 0);
  assert.equal(b.take('m', t + 1_000), 0);
  assert.ok(b.take('m', t + 1_000) > 0);
});
