#!/usr/bin/env node
// Prepares a checkout to run: finds or installs nats-server >= 2.10 and builds
// the TypeScript workspaces. `npm start` and `npm test` call it first; running
// it again when everything is in place changes nothing.
//
// nats-server resolution, first match wins:
//   1. $NATS_SERVER_BIN (must be >= 2.10, else this fails: an explicit choice
//      is never silently replaced);
//   2. `nats-server` on PATH, if >= 2.10;
//   3. a copy installed earlier into .tools/ by this script;
//   4. install: Debian's package archive (the trixie suite ships 2.10.x as a
//      static binary), fetched by apt-get with private state under .tools/ so
//      no system configuration is touched and no root is needed. apt checks
//      the .deb against the suite's signed index.
// The choice is recorded in .tools/nats-server.json, which membershipd and
// the test helpers read.

import { execFileSync, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const TOOLS = join(ROOT, '.tools');
const RECORD = join(TOOLS, 'nats-server.json');
const MIN = [2, 10, 0];
const SUITES = (process.env.SEALBUS_DEBIAN_SUITES ?? 'trixie forky').split(/\s+/).filter(Boolean);
const KEYRING =
  process.env.SEALBUS_DEBIAN_KEYRING ?? '/usr/share/keyrings/debian-archive-keyring.gpg';

const log = (msg) => process.stderr.write(`setup: ${msg}\n`);

class SetupError extends Error {}

/** Parses `nats-server --version` output ("nats-server: v2.10.27"). */
function versionOf(bin) {
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (r.error || r.status !== 0) return null;
  const m = /v?(\d+)\.(\d+)\.(\d+)/.exec(r.stdout + r.stderr);
  return m ? { text: `${m[1]}.${m[2]}.${m[3]}`, parts: m.slice(1, 4).map(Number) } : null;
}

function atLeast(parts, min) {
  for (let i = 0; i < min.length; i++) {
    if (parts[i] !== min[i]) return parts[i] > min[i];
  }
  return true;
}

function onPath(name) {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const p = join(dir || '.', name);
    if (existsSync(p)) return p;
  }
  return null;
}

function usable(bin) {
  const v = versionOf(bin);
  return v && atLeast(v.parts, MIN) ? v : null;
}

function debianMirror() {
  if (process.env.SEALBUS_DEBIAN_MIRROR) return process.env.SEALBUS_DEBIAN_MIRROR;
  // Reuse the mirror this machine already uses for Debian, if it says.
  try {
    const text = readFileSync('/etc/apt/sources.list.d/debian.sources', 'utf8');
    const m = /^URIs:\s*(\S*\/debian)\s*$/m.exec(text);
    if (m) return m[1];
  } catch {
    // no deb822 sources: fall through to the default mirror
  }
  return 'http://deb.debian.org/debian';
}

function installFromDebian() {
  if (!onPath('apt-get') || !onPath('dpkg-deb')) {
    throw new SetupError('apt-get and dpkg-deb are needed to fetch nats-server from Debian');
  }
  if (!existsSync(KEYRING)) throw new SetupError(`Debian archive keyring not found at ${KEYRING}`);
  const aptDir = join(TOOLS, 'apt');
  const lists = join(aptDir, 'lists');
  const cache = join(aptDir, 'cache');
  const debs = join(aptDir, 'debs');
  for (const d of [join(lists, 'partial'), join(cache, 'archives', 'partial'), debs]) {
    mkdirSync(d, { recursive: true });
  }
  const mirror = debianMirror();
  const sourceList = join(aptDir, 'sources.list');
  const opts = [
    '-o',
    `Dir::Etc::SourceList=${sourceList}`,
    '-o',
    'Dir::Etc::SourceParts=-',
    '-o',
    `Dir::State::Lists=${lists}`,
    '-o',
    `Dir::Cache=${cache}`,
    '-o',
    'Debug::NoLocking=1',
    '-q',
  ];
  // As root apt drops to the _apt user for downloads, which cannot write here.
  if (process.getuid?.() === 0) opts.push('-o', 'APT::Sandbox::User=root');
  const run = (args, cwd) => {
    const r = spawnSync('apt-get', [...opts, ...args], { cwd, encoding: 'utf8', timeout: 300_000 });
    if (r.status !== 0) {
      throw new SetupError(
        `apt-get ${args.join(' ')} failed:\n${(r.stderr || r.stdout || '').trim()}`
      );
    }
    return r.stdout;
  };
  // One suite at a time, stable first: a testing suite is only a fallback.
  let deb;
  const tried = [];
  for (const suite of SUITES) {
    writeFileSync(sourceList, `deb [signed-by=${KEYRING}] ${mirror} ${suite} main\n`);
    for (const f of readdirSync(debs)) rmSync(join(debs, f), { force: true });
    log(`fetching the signed package index of Debian ${suite} from ${mirror}`);
    try {
      run(['update']);
      run(['download', 'nats-server'], debs);
    } catch (err) {
      tried.push(`${suite}: ${err.message.split('\n').slice(-1)[0]}`);
      continue;
    }
    deb = readdirSync(debs).find((f) => f.startsWith('nats-server_') && f.endsWith('.deb'));
    const m = deb && /^nats-server_(\d+)\.(\d+)\.(\d+)/.exec(deb);
    if (m && atLeast(m.slice(1, 4).map(Number), MIN)) break;
    tried.push(`${suite}: ${deb ?? 'no package'} is too old`);
    deb = undefined;
  }
  if (!deb)
    throw new SetupError(`no nats-server >= ${MIN.join('.')} in Debian:\n  ${tried.join('\n  ')}`);
  log(`downloaded ${deb}`);
  const staging = join(TOOLS, `.nats-server.${process.pid}`);
  rmSync(staging, { recursive: true, force: true });
  execFileSync('dpkg-deb', ['-x', join(debs, deb), staging]);
  const bin = join(staging, 'usr', 'sbin', 'nats-server');
  const v = versionOf(bin);
  if (!v) throw new SetupError(`the downloaded nats-server (${deb}) does not run on this machine`);
  if (!atLeast(v.parts, MIN)) {
    throw new SetupError(
      `Debian offers nats-server ${v.text}, older than the required ${MIN.join('.')}`
    );
  }
  const dest = join(TOOLS, `nats-server-${v.text}`);
  rmSync(dest, { recursive: true, force: true });
  renameSync(staging, dest);
  return {
    path: join(dest, 'usr', 'sbin', 'nats-server'),
    version: v.text,
    source: `debian:${deb}`,
  };
}

function resolveNatsServer() {
  const explicit = process.env.NATS_SERVER_BIN;
  if (explicit) {
    const v = versionOf(explicit);
    if (!v) throw new SetupError(`NATS_SERVER_BIN=${explicit} does not run (\`--version\` failed)`);
    if (!atLeast(v.parts, MIN)) {
      throw new SetupError(
        `NATS_SERVER_BIN=${explicit} is nats-server ${v.text}; ${MIN.join('.')} or newer is required (auth callout)`
      );
    }
    return { path: resolve(explicit), version: v.text, source: 'NATS_SERVER_BIN' };
  }
  const fromPath = onPath('nats-server');
  if (fromPath) {
    const v = usable(fromPath);
    if (v) return { path: fromPath, version: v.text, source: 'PATH' };
    log(
      `ignoring ${fromPath}: ${versionOf(fromPath)?.text ?? 'unknown version'} is older than ${MIN.join('.')}`
    );
  }
  if (existsSync(RECORD)) {
    try {
      const rec = JSON.parse(readFileSync(RECORD, 'utf8'));
      if (rec.source?.startsWith('debian:') && usable(rec.path)) return rec;
    } catch {
      // unreadable record: look for a copy below
    }
  }
  // A copy installed before, though the record now names another choice
  // (a run with NATS_SERVER_BIN or PATH rewrote it): the newest usable one.
  const copies = readdirSync(TOOLS, { withFileTypes: true })
    .filter((e) => e.isDirectory() && /^nats-server-\d+\.\d+\.\d+$/.test(e.name))
    .map((e) => join(TOOLS, e.name, 'usr', 'sbin', 'nats-server'))
    .map((path) => ({ path, v: existsSync(path) ? usable(path) : null }))
    .filter((c) => c.v)
    .sort((a, b) => (atLeast(a.v.parts, b.v.parts) ? -1 : 1));
  if (copies.length > 0) {
    const { path, v } = copies[0];
    return { path, version: v.text, source: `debian:${path.split('/').at(-4)} (installed before)` };
  }
  return installFromDebian();
}

function build() {
  const require = createRequire(import.meta.url);
  const tsc = require.resolve('typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '--build'], { cwd: ROOT, stdio: 'inherit' });
  if (r.status !== 0) throw new SetupError('TypeScript build failed (see above)');
}

try {
  if (!existsSync(join(ROOT, 'node_modules', 'typescript'))) {
    throw new SetupError('npm dependencies are missing: run `npm ci` first');
  }
  mkdirSync(TOOLS, { recursive: true });
  const found = resolveNatsServer();
  const previous = existsSync(RECORD) ? readFileSync(RECORD, 'utf8') : '';
  const record = JSON.stringify(found, null, 2) + '\n';
  if (record !== previous) writeFileSync(RECORD, record);
  log(`nats-server ${found.version} (${found.source}): ${found.path}`);
  build();
} catch (err) {
  if (err instanceof SetupError) {
    log(`error: ${err.message}`);
    log(
      'install nats-server >= 2.10 yourself and set NATS_SERVER_BIN=/path/to/nats-server, then run again'
    );
    process.exit(1);
  }
  throw err;
}
