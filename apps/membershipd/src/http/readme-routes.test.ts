// The README's route table is the API as people read it: it lists exactly
// the signed routes the daemon serves (the ones /openapi.json is made from).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SIGNED_ROUTES } from './app.js';

const README = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  '..',
  '..',
  '..',
  'README.md'
);

test('the README route table lists exactly the signed routes the daemon serves', () => {
  const rows = readFileSync(README, 'utf8')
    .split('\n')
    .map((l) => /^\| `(GET|POST|PUT|DELETE) (\/[^`?\s]*)/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => `${m[1]} ${m[2]}`);
  const served = SIGNED_ROUTES.map((r) => `${r.method.toUpperCase()} ${r.path}`);
  assert.deepEqual(
    [...new Set(rows)].sort(),
    [...new Set(served)].sort(),
    'README route table vs the routes served'
  );
});
