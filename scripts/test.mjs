#!/usr/bin/env node
// Lints, then runs every compiled test file of every workspace with node's
// test runner (real nats-server processes; see packages/testing).
// `npm test -- crypto` runs only the files whose path contains "crypto"
// (and skips the lint step).

import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join, relative, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function testFiles(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.test.js'))
    .map((e) => join(e.parentPath ?? e.path, e.name));
}

const workspaces = ['packages', 'apps'].flatMap((group) =>
  existsSync(join(ROOT, group))
    ? readdirSync(join(ROOT, group), { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => join(ROOT, group, e.name))
    : []
);
const filters = process.argv.slice(2);
const files = workspaces
  .flatMap((ws) => testFiles(join(ws, 'dist')))
  .map((f) => relative(ROOT, f))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();

if (files.length === 0) {
  console.error('no test files found (did the build run?)');
  process.exit(1);
}

if (filters.length === 0) {
  for (const [name, args] of [
    ['eslint', ['node_modules/eslint/bin/eslint.js', '.']],
    ['prettier', ['node_modules/prettier/bin/prettier.cjs', '--check', '--log-level=warn', '.']],
  ]) {
    const lint = spawnSync(process.execPath, args, { cwd: ROOT, stdio: 'inherit' });
    if (lint.status !== 0) {
      console.error(`${name} failed: fix the findings above (npm run format fixes formatting)`);
      process.exit(lint.status ?? 1);
    }
  }
}

const r = spawnSync(
  process.execPath,
  ['--test', '--test-reporter=spec', '--test-concurrency=2', '--test-timeout=600000', ...files],
  { cwd: ROOT, stdio: 'inherit' }
);
process.exit(r.status ?? 1);
