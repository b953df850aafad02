#!/usr/bin/env node
// `npm run sdk:pack -- --out DIR`: writes exactly one tarball,
// DIR/sealbus-client-<version>.tgz, that a project outside this repository
// installs with `npm install <tarball>` and nothing else from here.
//
// The SDK's workspace dependencies (@sealbus/crypto, @sealbus/protocol) go
// inside the tarball as bundled dependencies; their own dependencies, all
// public npm packages, become the SDK's, so npm installs them beside it.

import { execFileSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BUNDLED = ['crypto', 'protocol'];

function fail(msg) {
  console.error(`sdk:pack: ${msg}`);
  process.exit(2);
}

let out;
try {
  ({
    values: { out },
  } = parseArgs({ options: { out: { type: 'string' } }, strict: true }));
} catch (err) {
  fail(`${err.message}\nusage: npm run sdk:pack -- --out DIR`);
}
if (!out) fail('usage: npm run sdk:pack -- --out DIR');
out = resolve(out);

const readJson = (p) => JSON.parse(readFileSync(p, 'utf8'));
const client = readJson(join(ROOT, 'packages/client/package.json'));
const root = readJson(join(ROOT, 'package.json'));

// Where the source lives: the root package.json's `repository`, else the
// checkout's `origin` when it is a URL; never a made-up one.
function repository() {
  const declared = typeof root.repository === 'string' ? root.repository : root.repository?.url;
  if (declared) return declared;
  try {
    const origin = execFileSync('git', ['remote', 'get-url', 'origin'], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'ignore'],
    })
      .toString()
      .trim();
    if (/^(https?|git|ssh):\/\//.test(origin)) return `git+${origin.replace(/^git\+/, '')}`;
  } catch {
    /* no origin */
  }
  console.error(
    'sdk:pack: no repository URL (set "repository" in the root package.json); the tarball has none'
  );
  return undefined;
}
const repositoryUrl = repository();

// Built output only: tests and their maps stay home, and so does the
// client's `internal` entry (this repository's tests and tools; not API).
const notTest = (src) =>
  !/\.test\.(js|d\.ts)(\.map)?$/.test(src) &&
  !/client\/dist\/internal\.(js|d\.ts)(\.map)?$/.test(src);
const copyDist = (from, to) => {
  if (!existsSync(join(from, 'dist'))) fail(`${from}/dist is missing: run npm run build first`);
  cpSync(join(from, 'dist'), join(to, 'dist'), { recursive: true, filter: notTest });
};

execFileSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '--build'], {
  cwd: ROOT,
  stdio: 'inherit',
});

const stage = mkdtempSync(join(tmpdir(), 'sealbus-sdk-pack-'));
try {
  const pkg = join(stage, 'package');
  mkdirSync(pkg, { recursive: true });
  copyDist(join(ROOT, 'packages/client'), pkg);
  cpSync(join(ROOT, 'packages/client/README.md'), join(pkg, 'README.md'));

  const deps = { ...client.dependencies };
  for (const name of BUNDLED) {
    const dir = join(ROOT, 'packages', name);
    const meta = readJson(join(dir, 'package.json'));
    const to = join(pkg, 'node_modules', '@sealbus', name);
    mkdirSync(to, { recursive: true });
    copyDist(dir, to);
    const { private: _private, devDependencies: _dev, scripts: _scripts, ...kept } = meta;
    writeFileSync(
      join(to, 'package.json'),
      JSON.stringify({ ...kept, license: 'UNLICENSED' }, null, 2) + '\n'
    );
    for (const [dep, version] of Object.entries(meta.dependencies ?? {})) {
      if (dep.startsWith('@sealbus/')) continue;
      if (deps[dep] && deps[dep] !== version)
        fail(`${dep}: the SDK pins ${deps[dep]}, @sealbus/${name} ${version}; align them`);
      deps[dep] = version;
    }
  }

  const manifest = {
    name: client.name,
    version: client.version,
    description:
      'Sealbus SDK: end-to-end encrypted, signed rooms over NATS, with the membership control plane behind them',
    keywords: ['nats', 'jetstream', 'e2e', 'encryption', 'ed25519', 'sealbus'],
    license: root.license ?? 'UNLICENSED',
    ...(repositoryUrl
      ? { repository: { type: 'git', url: repositoryUrl, directory: 'packages/client' } }
      : {}),
    type: 'module',
    main: './dist/mod.js',
    types: './dist/mod.d.ts',
    exports: {
      '.': { types: './dist/mod.d.ts', default: './dist/mod.js' },
      './package.json': './package.json',
    },
    engines: { node: '>=20' },
    publishConfig: { access: 'public' },
    sideEffects: false,
    files: ['dist', 'README.md'],
    dependencies: Object.fromEntries(Object.entries(deps).sort(([a], [b]) => a.localeCompare(b))),
    bundleDependencies: BUNDLED.map((n) => `@sealbus/${n}`),
  };
  for (const n of BUNDLED)
    manifest.dependencies[`@sealbus/${n}`] = readJson(
      join(ROOT, 'packages', n, 'package.json')
    ).version;
  writeFileSync(join(pkg, 'package.json'), JSON.stringify(manifest, null, 2) + '\n');

  mkdirSync(out, { recursive: true });
  const want = `sealbus-client-${client.version}.tgz`;
  rmSync(join(out, want), { force: true });
  execFileSync('npm', ['pack', '--pack-destination', out, '--silent'], {
    cwd: pkg,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  if (!existsSync(join(out, want)))
    fail(`npm pack did not write ${want} (${readdirSync(out).join(', ')})`);
  console.log(join(out, want));
} finally {
  rmSync(stage, { recursive: true, force: true });
}
