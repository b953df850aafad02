// The SDK README's surface table lists every public call of `Sealbus`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Sealbus } from './sealbus.js';

const README = join(dirname(fileURLToPath(import.meta.url)), '..', 'README.md');

test('the SDK README surface table names every public call of Sealbus', () => {
  const rows = new Set(
    readFileSync(README, 'utf8')
      .split('\n')
      .map((l) => /^\| `(?:Sealbus\.)?([A-Za-z]+)/.exec(l)?.[1])
      .filter((n): n is string => n !== undefined)
  );
  const calls = [
    ...Object.getOwnPropertyNames(Sealbus.prototype).filter(
      (n) => n !== 'constructor' && n !== 'emit'
    ),
    ...Object.getOwnPropertyNames(Sealbus).filter(
      (n) => typeof (Sealbus as unknown as Record<string, unknown>)[n] === 'function'
    ),
  ];
  assert.deepEqual(
    calls.filter((c) => !rows.has(c)),
    [],
    'public calls missing from the README surface table'
  );
});
