#!/usr/bin/env node
// Lints, then runs every compiled test file of every workspace with node's
// test runner (real nats-server processes; see packages/testing).
// `npm test -- crypto` runs only the files whose path contains "crypto"
// (and skips the lint step).

import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
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

// Everything this run starts is marked: an environment variable every child
// inherits, and a temp directory of its own that every data dir and config
// lives under. After the run, nothing so marked may still be running.
const RUN = randomBytes(6).toString('hex');
const runTmp = join('/tmp', `sbt-${RUN}`);
mkdirSync(runTmp, { recursive: true });
const r = spawnSync(
  process.execPath,
  ['--test', '--test-reporter=spec', '--test-concurrency=2', '--test-timeout=600000', ...files],
  { cwd: ROOT, stdio: 'inherit', env: { ...process.env, TMPDIR: runTmp, SEALBUS_TEST_RUN: RUN } }
);

/** Processes this run started that are still alive (by marker or by a path under its temp dir). */
function leftovers() {
  const found = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    if (Number(pid) === process.pid) continue;
    const read = (what) => {
      try {
        return readFileSync(`/proc/${pid}/${what}`, 'utf8');
      } catch {
        return null; // gone, or not ours
      }
    };
    const environ = read('environ');
    if (environ === null) continue;
    const cmdline = (read('cmdline') ?? '').replaceAll('\0', ' ').trim();
    if (environ.includes(`SEALBUS_TEST_RUN=${RUN}`) || cmdline.includes(runTmp))
      found.push({ pid: Number(pid), cmdline });
  }
  return found;
}

let left = leftovers();
for (let i = 0; i < 50 && left.length > 0; i++) {
  // A process told to stop may take a moment to go.
  spawnSync('sleep', ['0.1']);
  left = leftovers();
}
for (const p of left) {
  try {
    process.kill(p.pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}
rmSync(runTmp, { recursive: true, force: true });
if (left.length > 0) {
  console.error(
    `\nleft running by the tests (now killed):\n${left.map((p) => `  ${p.pid} ${p.cmdline}`).join('\n')}`
  );
  process.exit(1);
}
process.exit(r.status ?? 1);
