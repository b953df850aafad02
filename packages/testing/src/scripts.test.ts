// The setup and test scripts, and the repository's shape, as the README,
// RUNBOOK and deploy README describe them (docs/CLAIMS.md, "Needs a test of
// the setup and test scripts": R-1, R-2, R-5, R-6, R-7, R-8, B-1, B-2, D-4,
// R-211).
//
// scripts/setup.mjs and scripts/test.mjs work on the checkout they sit in
// (their parent directory), so each test here runs a COPY of the script in a
// temp root of its own: the real .tools/ and its nats-server.json are never
// read or written. nats-server, apt-get, dpkg-deb and tsc are small fakes in
// that root; PATH holds nothing else, so nothing is downloaded and no sudo is
// within reach. When this runs as root, every setup run drops to `nobody`.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  lchownSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { resolveNatsServerBinary } from '@sealbus/natsd';
import { freePort } from './ports.js';
import { runMembershipd, startDaemon } from './daemon.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** Setup runs as this uid/gid: never root (B-2, R-1 "nothing needs root"). */
const NOBODY = 65534;
const asRoot = process.getuid?.() === 0;
const runAs = asRoot ? { uid: NOBODY, gid: NOBODY } : {};

let base: string;

const sh = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/** A fake nats-server: prints `nats-server: vVERSION` for --version, refuses anything else. */
function fakeNatsServer(path: string, version: string): string {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(
    path,
    `#!/bin/sh\nif [ "$1" = "--version" ]; then echo "nats-server: v${version}"; exit 0; fi\n` +
      `echo "fake nats-server ${version}: $*" >&2\nexit 1\n`,
    { mode: 0o755 }
  );
  return path;
}

/** Records every call (argv, cwd, uid) next to the root; exits $FAKE_TSC_EXIT. */
const FAKE_TSC = `const fs = require('node:fs');
const path = require('node:path');
fs.appendFileSync(
  path.join(__dirname, '..', '..', '..', 'tsc.log'),
  JSON.stringify({ argv: process.argv.slice(2), cwd: process.cwd(), uid: process.getuid() }) + '\\n'
);
process.exit(Number(process.env.FAKE_TSC_EXIT || 0));
`;

/**
 * apt-get: logs each call with the source list it was given; `download`
 * drops nats-server_<v>-1_amd64.deb into its cwd if the suite named in that
 * list has a version in the config, else fails as apt does.
 */
const FAKE_APT = `const fs = require('node:fs');
const path = require('node:path');
const [confPath, ...args] = process.argv.slice(2);
const conf = JSON.parse(fs.readFileSync(confPath, 'utf8'));
const opt = (k) => args.find((a) => a.startsWith(k + '='))?.slice(k.length + 1);
const sourceList = fs.readFileSync(opt('Dir::Etc::SourceList'), 'utf8');
const suite = /\\s(\\S+)\\s+main\\s*$/.exec(sourceList.trim())?.[1];
fs.appendFileSync(conf.log, JSON.stringify({ tool: 'apt-get', args, cwd: process.cwd(), uid: process.getuid(), sourceList, suite }) + '\\n');
if (args.includes('download')) {
  const version = conf.suites[suite];
  if (!version) {
    console.error('E: Unable to locate package nats-server');
    process.exit(100);
  }
  fs.writeFileSync(path.join(process.cwd(), 'nats-server_' + version + '-1_amd64.deb'), 'fake ' + suite);
}
`;

/** dpkg-deb -x DEB DEST: unpacks a fake nats-server of the .deb's version into DEST/usr/sbin. */
const FAKE_DPKG = `const fs = require('node:fs');
const path = require('node:path');
const [confPath, flag, deb, dest] = process.argv.slice(2);
const conf = JSON.parse(fs.readFileSync(confPath, 'utf8'));
fs.appendFileSync(conf.log, JSON.stringify({ tool: 'dpkg-deb', args: [flag, deb, dest], uid: process.getuid() }) + '\\n');
if (flag !== '-x') process.exit(2);
const version = /nats-server_(\\d+\\.\\d+\\.\\d+)/.exec(path.basename(deb))[1];
fs.mkdirSync(path.join(dest, 'usr', 'sbin'), { recursive: true });
fs.writeFileSync(
  path.join(dest, 'usr', 'sbin', 'nats-server'),
  '#!/bin/sh\\nif [ "$1" = "--version" ]; then echo "nats-server: v' + version + '"; exit 0; fi\\nexit 1\\n',
  { mode: 0o755 }
);
`;

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface Record_ {
  path: string;
  version: string;
  source: string;
}

interface AptCall {
  tool: 'apt-get' | 'dpkg-deb';
  args: string[];
  cwd?: string;
  uid: number;
  sourceList?: string;
  suite?: string;
}

/**
 * A temp checkout root holding a copy of scripts/setup.mjs, a fake
 * `typescript` package (its tsc only records the call) and directories for
 * fake tools.
 */
class SetupRoot {
  readonly root: string;
  /** Directory of fakes meant for PATH (nats-server goes here when wanted). */
  readonly bin: string;
  /** Directory holding the fake apt-get and dpkg-deb, for PATH. */
  readonly aptBin: string;
  readonly keyring: string;
  readonly mirror = 'http://mirror.invalid/debian';
  private readonly aptConf: string;
  private readonly aptLog: string;

  constructor(name: string, suites: Record<string, string | null> = {}) {
    this.root = join(base, name);
    mkdirSync(join(this.root, 'scripts'), { recursive: true });
    copyFileSync(join(repo, 'scripts', 'setup.mjs'), join(this.root, 'scripts', 'setup.mjs'));
    const ts = join(this.root, 'node_modules', 'typescript');
    mkdirSync(join(ts, 'bin'), { recursive: true });
    writeFileSync(join(ts, 'package.json'), '{ "name": "typescript", "version": "0.0.0-fake" }\n');
    writeFileSync(join(ts, 'bin', 'tsc'), FAKE_TSC);
    this.bin = join(this.root, 'fake-bin');
    mkdirSync(this.bin);
    this.aptBin = join(this.root, 'fake-apt');
    mkdirSync(this.aptBin);
    this.aptLog = join(this.root, 'apt.log');
    this.aptConf = join(this.root, 'apt.json');
    writeFileSync(this.aptConf, JSON.stringify({ log: this.aptLog, suites }));
    for (const [tool, code] of [
      ['apt-get', FAKE_APT],
      ['dpkg-deb', FAKE_DPKG],
    ] as const) {
      const impl = join(this.root, `fake-${tool}.cjs`);
      writeFileSync(impl, code);
      writeFileSync(
        join(this.aptBin, tool),
        `#!/bin/sh\nexec ${sh(process.execPath)} ${sh(impl)} ${sh(this.aptConf)} "$@"\n`,
        { mode: 0o755 }
      );
    }
    this.keyring = join(this.root, 'debian-archive-keyring.gpg');
    writeFileSync(this.keyring, 'not a real keyring: the fake apt-get never reads it\n');
  }

  get recordPath(): string {
    return join(this.root, '.tools', 'nats-server.json');
  }

  /** .tools/nats-server.json as text, or null. */
  recordText(): string | null {
    return existsSync(this.recordPath) ? readFileSync(this.recordPath, 'utf8') : null;
  }

  record(): Record_ | null {
    const t = this.recordText();
    return t === null ? null : (JSON.parse(t) as Record_);
  }

  /** What an earlier Debian install by setup leaves: the unpacked copy and its record. */
  installedCopy(version: string): Record_ {
    const path = fakeNatsServer(
      join(this.root, '.tools', `nats-server-${version}`, 'usr', 'sbin', 'nats-server'),
      version
    );
    const rec = { path, version, source: `debian:nats-server_${version}-1_amd64.deb` };
    writeFileSync(this.recordPath, JSON.stringify(rec, null, 2) + '\n');
    return rec;
  }

  tscCalls(): Array<{ argv: string[]; cwd: string; uid: number }> {
    const log = join(this.root, 'tsc.log');
    if (!existsSync(log)) return [];
    return readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
  }

  aptCalls(): AptCall[] {
    if (!existsSync(this.aptLog)) return [];
    return readFileSync(this.aptLog, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as AptCall);
  }

  /**
   * Runs the copied setup.mjs with exactly this environment: PATH is `path`
   * (nothing else: no apt-get, sudo or nats-server unless a fake is there).
   */
  run(path: string[], env: Record<string, string> = {}): Ran {
    if (asRoot) {
      for (const f of ['', ...readdirSync(this.root, { recursive: true, encoding: 'utf8' })]) {
        lchownSync(join(this.root, f), NOBODY, NOBODY);
      }
    }
    const r = spawnSync(process.execPath, [join(this.root, 'scripts', 'setup.mjs')], {
      cwd: this.root,
      env: {
        PATH: path.length > 0 ? path.join(':') : '/nonexistent',
        SEALBUS_DEBIAN_MIRROR: this.mirror,
        SEALBUS_DEBIAN_KEYRING: this.keyring,
        ...env,
      },
      encoding: 'utf8',
      timeout: 30_000,
      ...runAs,
    });
    if (r.error) throw r.error;
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  }
}

/** Setup succeeded, printed the version and path it chose, recorded exactly that, then ran tsc --build. */
function assertChose(s: SetupRoot, r: Ran, want: Record_, tscRunsBefore = 0) {
  assert.equal(r.code, 0, `setup failed:\n${r.stderr}`);
  assert.deepEqual(s.record(), want, 'the choice recorded in .tools/nats-server.json');
  assert.match(r.stderr, new RegExp(`nats-server ${want.version.replaceAll('.', '\\.')}\\b`));
  assert.ok(r.stderr.includes(want.path), `the chosen path is printed:\n${r.stderr}`);
  const tsc = s.tscCalls();
  assert.equal(tsc.length, tscRunsBefore + 1, 'tsc ran once');
  assert.deepEqual(tsc.at(-1)!.argv, ['--build']);
  assert.equal(tsc.at(-1)!.cwd, s.root);
}

/** Runs setup again on a record stamped with an old mtime: same output, file not rewritten. */
function assertIdempotent(s: SetupRoot, path: string[], env: Record<string, string> = {}) {
  const before = s.recordText();
  assert.ok(before !== null);
  const old = new Date('2001-02-03T04:05:06Z');
  utimesSync(s.recordPath, old, old);
  const again = s.run(path, env);
  assert.equal(again.code, 0, again.stderr);
  assert.equal(s.recordText(), before, 'the second run recorded the same choice');
  assert.equal(statSync(s.recordPath).mtimeMs, old.getTime(), 'and did not rewrite the record');
}

before(() => {
  base = mkdtempSync(join(tmpdir(), 'sealbus-scripts-'));
  chmodSync(base, 0o755); // `nobody` must reach the roots inside
});

after(() => {
  rmSync(base, { recursive: true, force: true });
});

describe('npm run setup (scripts/setup.mjs, a copy in a temp root, as a non-root user)', () => {
  test('R-6, B-1: NATS_SERVER_BIN comes first, over PATH and an earlier install; its version is printed and recorded', () => {
    const s = new SetupRoot('explicit-first');
    s.installedCopy('2.10.97');
    fakeNatsServer(join(s.bin, 'nats-server'), '2.10.99');
    const mine = fakeNatsServer(join(s.root, 'own', 'nats-server'), '2.10.98');
    const r = s.run([s.bin, s.aptBin], { NATS_SERVER_BIN: mine });
    assertChose(s, r, { path: mine, version: '2.10.98', source: 'NATS_SERVER_BIN' });
    assert.deepEqual(s.aptCalls(), []);
    assertIdempotent(s, [s.bin, s.aptBin], { NATS_SERVER_BIN: mine });
  });

  test('R-6: a NATS_SERVER_BIN older than 2.10 (or not runnable) fails setup and is never replaced by another', () => {
    const s = new SetupRoot('explicit-too-old');
    const earlier = s.installedCopy('2.10.97');
    const recordBefore = s.recordText();
    fakeNatsServer(join(s.bin, 'nats-server'), '2.10.99'); // a usable one on PATH...
    const old = fakeNatsServer(join(s.root, 'own', 'nats-server'), '2.9.25');
    for (const explicit of [old, join(s.root, 'own', 'missing')]) {
      const r = s.run([s.bin, s.aptBin], { NATS_SERVER_BIN: explicit });
      assert.notEqual(r.code, 0, `setup accepted NATS_SERVER_BIN=${explicit}:\n${r.stderr}`);
      assert.ok(r.stderr.includes(explicit), r.stderr);
      assert.match(r.stderr, /NATS_SERVER_BIN/);
      // ...and an earlier install are both there; neither was taken instead.
      assert.equal(s.recordText(), recordBefore, 'the record is untouched');
      assert.equal(s.record()!.path, earlier.path);
    }
    assert.match(s.run([s.bin], { NATS_SERVER_BIN: old }).stderr, /2\.9\.25/);
    assert.deepEqual(s.tscCalls(), [], 'a failed setup does not go on to build');
    assert.deepEqual(s.aptCalls(), [], 'nor does it install');
  });

  test('R-7: without NATS_SERVER_BIN, nats-server on PATH >= 2.10 comes before the copy under .tools/', () => {
    const s = new SetupRoot('path-second');
    s.installedCopy('2.10.97');
    const onPath = fakeNatsServer(join(s.bin, 'nats-server'), '2.10.99');
    const r = s.run([s.bin, s.aptBin]);
    assertChose(s, r, { path: onPath, version: '2.10.99', source: 'PATH' });
    assert.deepEqual(s.aptCalls(), []);
    assertIdempotent(s, [s.bin, s.aptBin]);
  });

  test('R-7: a nats-server on PATH older than 2.10 is passed over for the copy under .tools/', () => {
    const s = new SetupRoot('path-too-old');
    const earlier = s.installedCopy('2.10.97');
    fakeNatsServer(join(s.bin, 'nats-server'), '2.9.25');
    const r = s.run([s.bin, s.aptBin]);
    assertChose(s, r, earlier);
    assert.match(r.stderr, /2\.9\.25/, 'it says why the one on PATH was not taken');
    assert.deepEqual(s.aptCalls(), [], 'no download: the earlier copy is used');
    assertIdempotent(s, [s.bin, s.aptBin]);
  });

  test('R-7, B-2, R-6: otherwise apt-get with private state under .tools/apt/ fetches Debian stable (trixie) and dpkg-deb unpacks it into .tools/nats-server-<version>/, no root; the next run reuses that copy', () => {
    const s = new SetupRoot('debian-install', { trixie: '2.10.97', forky: '2.11.3' });
    const r = s.run([s.bin, s.aptBin]);
    const dest = join(s.root, '.tools', 'nats-server-2.10.97', 'usr', 'sbin', 'nats-server');
    assertChose(s, r, {
      path: dest,
      version: '2.10.97',
      source: 'debian:nats-server_2.10.97-1_amd64.deb',
    });
    assert.equal(
      spawnSync(dest, ['--version'], { encoding: 'utf8' }).stdout.trim(),
      'nats-server: v2.10.97'
    );

    const apt = s.aptCalls().filter((c) => c.tool === 'apt-get');
    assert.deepEqual(
      apt.map((c) => [c.suite, c.args.filter((a) => !a.startsWith('-') && !a.includes('='))]),
      [
        ['trixie', ['update']],
        ['trixie', ['download', 'nats-server']],
      ],
      'only the stable suite was needed'
    );
    const aptDir = join(s.root, '.tools', 'apt');
    for (const c of apt) {
      assert.equal(
        c.sourceList,
        `deb [signed-by=${s.keyring}] ${s.mirror} trixie main\n`,
        'its own source list: one suite, checked against the keyring'
      );
      const opts = c.args.filter((a) => a.startsWith('Dir::'));
      assert.ok(
        opts.includes(`Dir::Etc::SourceList=${join(aptDir, 'sources.list')}`),
        opts.join(' ')
      );
      assert.ok(opts.includes('Dir::Etc::SourceParts=-'), 'no /etc/apt/sources.list.d');
      assert.ok(opts.includes(`Dir::State::Lists=${join(aptDir, 'lists')}`));
      assert.ok(opts.includes(`Dir::Cache=${join(aptDir, 'cache')}`));
      for (const o of opts) {
        const v = o.slice(o.indexOf('=') + 1);
        assert.ok(v === '-' || v.startsWith(aptDir + sep), `${o} is outside .tools/apt/`);
      }
      assert.ok(!c.args.includes('APT::Sandbox::User=root'), 'no root sandbox user');
      assert.notEqual(c.uid, 0, 'apt-get ran without root');
    }
    assert.ok(apt[1]!.cwd!.startsWith(aptDir + sep), 'the .deb lands under .tools/apt/');
    assert.notEqual(s.tscCalls()[0]!.uid, 0, 'the whole setup ran without root');

    // Again: the copy under .tools/ is found, nothing is fetched.
    const calls = s.aptCalls().length;
    assertIdempotent(s, [s.bin, s.aptBin]);
    assert.equal(s.aptCalls().length, calls, 'the second run fetched nothing');
  });

  test('R-7: a newer Debian suite is tried only when the stable one fails', () => {
    const s = new SetupRoot('debian-fallback', { trixie: null, forky: '2.11.3' });
    const r = s.run([s.bin, s.aptBin]);
    assertChose(s, r, {
      path: join(s.root, '.tools', 'nats-server-2.11.3', 'usr', 'sbin', 'nats-server'),
      version: '2.11.3',
      source: 'debian:nats-server_2.11.3-1_amd64.deb',
    });
    const suites = s
      .aptCalls()
      .filter((c) => c.tool === 'apt-get' && c.args.includes('download'))
      .map((c) => c.suite);
    assert.deepEqual(suites, ['trixie', 'forky']);
  });

  test('R-8: when nothing works it says so, asks for NATS_SERVER_BIN, records nothing and does not build', () => {
    const s = new SetupRoot('nothing-works');
    // No nats-server anywhere, no earlier install, and no apt-get to fetch one.
    const r = s.run([s.bin]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /nats-server >= 2\.10/);
    assert.match(r.stderr, /set NATS_SERVER_BIN=/);
    assert.equal(s.recordText(), null);
    assert.deepEqual(s.tscCalls(), []);
  });

  test('R-8, R-1: after choosing, it compiles with tsc --build in the root, and a failed build fails setup', () => {
    const s = new SetupRoot('build');
    const onPath = fakeNatsServer(join(s.bin, 'nats-server'), '2.10.99');
    assertChose(s, s.run([s.bin]), { path: onPath, version: '2.10.99', source: 'PATH' });
    const failed = s.run([s.bin], { FAKE_TSC_EXIT: '2' });
    assert.notEqual(failed.code, 0, 'setup passed over a failed build');
    assert.match(failed.stderr, /TypeScript build failed/);
  });

  test('R-7: a copy setup installed under .tools/ is still picked after a run that chose NATS_SERVER_BIN or PATH', () => {
    for (const how of ['PATH', 'NATS_SERVER_BIN'] as const) {
      const s = new SetupRoot(`forgotten-${how}`);
      const earlier = s.installedCopy('2.10.97');
      const other = fakeNatsServer(join(s.bin, 'nats-server'), '2.10.99');
      const first = how === 'PATH' ? s.run([s.bin]) : s.run([], { NATS_SERVER_BIN: other });
      assert.equal(first.code, 0, first.stderr);
      const r = s.run([]); // neither any more; the copy under .tools/ is still there
      assert.ok(existsSync(earlier.path));
      assert.equal(
        r.code,
        0,
        `after a ${how} run, the copy under .tools/ was not picked:\n${r.stderr}`
      );
      assert.equal(s.record()!.path, earlier.path);
    }
  });
});

describe('npm start, npm test and npx membershipd (R-1, R-5)', () => {
  test('R-1: npm start and npm test run setup (node scripts/setup.mjs) first', () => {
    const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    assert.equal(pkg.scripts.setup, 'node scripts/setup.mjs');
    for (const name of ['start', 'test']) {
      assert.match(
        pkg.scripts[name] ?? '',
        /^(node scripts\/setup\.mjs|npm run setup) && \S/,
        `npm ${name} must begin with setup: ${pkg.scripts[name]}`
      );
    }
  });

  test('R-5: npx membershipd --version and --help work from the repository root (offline: nothing fetched)', () => {
    const npx = (args: string[]) =>
      spawnSync('npx', args, {
        cwd: repo,
        // offline: a missing local bin fails instead of being fetched from the registry
        env: { ...process.env, npm_config_offline: 'true', npm_config_yes: 'false' },
        encoding: 'utf8',
        timeout: 30_000,
      });
    const { version } = JSON.parse(
      readFileSync(join(repo, 'apps', 'membershipd', 'package.json'), 'utf8')
    ) as { version: string };
    const v = npx(['membershipd', '--version']);
    assert.equal(v.status, 0, v.stderr);
    assert.equal(v.stdout.trim(), version);
    const h = npx(['membershipd', '--help']);
    assert.equal(h.status, 0, h.stderr);
    assert.match(h.stdout, /^Usage: membershipd /m);
    assert.match(h.stdout, /^\s+serve\b/m);
  });
});

/** Alive and not a zombie (an unreaped child of a dead parent is gone for our purposes). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** A test file (CommonJS, so no package.json is needed) that starts two processes and exits. */
const LEAKY_TEST = `const { test } = require('node:test');
const { spawn } = require('node:child_process');
const { writeFileSync } = require('node:fs');
test('leaves two processes behind', () => {
  // Marked by the inherited SEALBUS_TEST_RUN.
  const marked = spawn('sleep', ['300'], { detached: true, stdio: 'ignore' });
  marked.unref();
  // No marker in its environment, only the run's temp dir on its command line.
  const byDir = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 300000)', process.env.TMPDIR], {
    detached: true, stdio: 'ignore', env: {},
  });
  byDir.unref();
  writeFileSync(process.env.LEAK_REPORT, JSON.stringify({
    marked: marked.pid, byDir: byDir.pid, run: process.env.SEALBUS_TEST_RUN, tmp: process.env.TMPDIR,
  }));
});
`;

const TIDY_TEST = `const { test } = require('node:test');
const { spawnSync } = require('node:child_process');
test('starts a process and waits for it', () => {
  if (spawnSync('sleep', ['0.1']).status !== 0) throw new Error('sleep failed');
});
`;

function runTestScript(root: string, args: string[], env: Record<string, string>): Promise<Ran> {
  return new Promise((res, rej) => {
    // Without NODE_TEST_CONTEXT: set by the runner running this file, it
    // would make the inner `node --test` report to us instead of running.
    const { NODE_TEST_CONTEXT: _, ...inherited } = process.env;
    const child = spawn(process.execPath, [join(root, 'scripts', 'test.mjs'), ...args], {
      cwd: root,
      env: { ...inherited, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      rej(new Error(`test.mjs did not finish in 60 s\n${stdout}\n${stderr}`));
    }, 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      res({ code, stdout, stderr });
    });
  });
}

describe('npm test (scripts/test.mjs, a copy in a temp root) (R-2)', () => {
  let root: string;
  before(() => {
    root = join(base, 'test-runner');
    mkdirSync(join(root, 'scripts'), { recursive: true });
    copyFileSync(join(repo, 'scripts', 'test.mjs'), join(root, 'scripts', 'test.mjs'));
    mkdirSync(join(root, 'packages', 'leaky', 'dist'), { recursive: true });
    writeFileSync(join(root, 'packages', 'leaky', 'dist', 'leak.test.js'), LEAKY_TEST);
    mkdirSync(join(root, 'apps', 'tidy', 'dist'), { recursive: true });
    writeFileSync(join(root, 'apps', 'tidy', 'dist', 'tidy.test.js'), TIDY_TEST);
  });

  test('R-2: a run whose test leaves a process behind (by marker or by temp dir) exits non-zero, names it and kills it', async () => {
    const report = join(root, 'leak.json');
    let pids: number[] = [];
    try {
      const r = await runTestScript(root, ['leak.test'], { LEAK_REPORT: report });
      const leak = JSON.parse(readFileSync(report, 'utf8')) as {
        marked: number;
        byDir: number;
        run: string;
        tmp: string;
      };
      pids = [leak.marked, leak.byDir];
      assert.match(r.stdout, /leaves two processes behind/, 'the leaky test itself ran and passed');
      assert.notEqual(r.code, 0, `the run passed with processes left behind:\n${r.stderr}`);
      assert.match(r.stderr, /left running by the tests/);
      assert.match(r.stderr, new RegExp(`^\\s+${leak.marked} sleep 300$`, 'm'), r.stderr);
      assert.match(r.stderr, new RegExp(`^\\s+${leak.byDir} \\S+ -e .*${leak.tmp}`, 'm'), r.stderr);
      for (const pid of pids) assert.equal(running(pid), false, `pid ${pid} still runs`);
      // The marks: a fresh SEALBUS_TEST_RUN and a temp dir of the run's own, removed after.
      assert.match(leak.run, /^[0-9a-f]{12}$/);
      assert.notEqual(leak.run, process.env.SEALBUS_TEST_RUN);
      assert.equal(leak.tmp, join('/tmp', `sbt-${leak.run}`));
      assert.equal(existsSync(leak.tmp), false);
    } finally {
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone, as it should be */
        }
      }
    }
  });

  test('R-2: the same runner passes a run whose tests leave nothing behind', async () => {
    const r = await runTestScript(root, ['tidy.test'], {});
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /starts a process and waits for it/, 'the tidy test ran');
    assert.doesNotMatch(r.stderr, /left running/);
  });
});

describe('running your own nats-server under systemd (D-4)', () => {
  test('D-4: the unit reads its environment from a file, and neither the unit nor deploy.sh pins another binary', () => {
    const unit = readFileSync(
      join(repo, 'deploy', 'cluster', 'sealbus-membershipd.service'),
      'utf8'
    );
    const service = /^\[Service\]\n([\s\S]*?)(?=^\[|(?![\s\S]))/m.exec(unit)?.[1] ?? '';
    assert.match(
      service,
      /^EnvironmentFile=\S+$/m,
      'NATS_SERVER_BIN=... can be set in the environment file'
    );
    const exec = /^ExecStart=(.*)$/m.exec(service)?.[1] ?? '';
    assert.match(exec, /membershipd\.js serve/);
    assert.doesNotMatch(exec, /--nats-server-bin/, 'a flag would beat the environment');
    const deploy = readFileSync(join(repo, 'deploy', 'cluster', 'deploy.sh'), 'utf8');
    assert.doesNotMatch(deploy, /--nats-server-bin|NATS_SERVER_BIN=/);
  });

  test('D-4: membershipd serve runs the nats-server NATS_SERVER_BIN names (and refuses one older than 2.10)', async () => {
    const dir = mkdtempSync(join(base, 'd4-'));
    const real = resolveNatsServerBinary().path;
    const log = join(dir, 'wrapper.log');
    const wrapper = join(dir, 'own', 'nats-server');
    mkdirSync(dirname(wrapper));
    writeFileSync(wrapper, `#!/bin/sh\necho "$*" >> ${sh(log)}\nexec ${sh(real)} "$@"\n`, {
      mode: 0o755,
    });
    const daemon = await startDaemon({
      env: { NATS_SERVER_BIN: wrapper },
      args: ['--log-level', 'warn'],
    });
    try {
      assert.ok(existsSync(log), 'NATS_SERVER_BIN was never run');
      const started = readFileSync(log, 'utf8')
        .trim()
        .split('\n')
        .filter((l) => l !== '--version');
      assert.ok(started.length >= 1, 'nats-server was started through NATS_SERVER_BIN');
      assert.ok(daemon.natsPid > 0);
    } finally {
      // stop first: dispose() of a running daemon leaves a 15 s timer behind
      await daemon.stop();
      await daemon.dispose();
    }

    const old = fakeNatsServer(join(dir, 'old', 'nats-server'), '2.9.25');
    const r = await runMembershipd(
      [
        'serve',
        '--data',
        join(dir, 'data'),
        '--http',
        '127.0.0.1:0',
        '--nats-port',
        String(await freePort()),
      ],
      { env: { NATS_SERVER_BIN: old }, timeoutMs: 30_000 }
    );
    assert.notEqual(r.code, 0);
    assert.ok(r.stderr.includes(`${old} is nats-server 2.9.25`), r.stderr);
  });
});

// ---------------------------------------------------------------------------
// R-211: the workspace graph, from package.json files and source imports.

interface Workspace {
  name: string;
  dir: string;
  declared: Set<string>;
  /** Every module specifier in its sources, with the file it is in. */
  imports: Array<{ spec: string; file: string }>;
}

const IMPORT =
  /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+|\brequire\s*\(\s*|\bexport\s*\*\s*from\s*)['"]([^'"]+)['"]/g;

function sourcesOf(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((f) => !f.split(sep).some((p) => p === 'node_modules' || p === 'dist'))
    .filter((f) => /\.(ts|mts|cts|js|mjs|cjs)$/.test(f) && !f.endsWith('.d.ts'))
    .map((f) => join(dir, f));
}

function workspaces(): Workspace[] {
  const root = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as {
    workspaces: string[];
  };
  return root.workspaces.map((w) => {
    const dir = join(repo, w);
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    const declared = new Set<string>();
    for (const k of [
      'dependencies',
      'devDependencies',
      'peerDependencies',
      'optionalDependencies',
    ]) {
      for (const d of Object.keys((pkg[k] as Record<string, string>) ?? {})) declared.add(d);
    }
    const imports = sourcesOf(dir).flatMap((file) =>
      [...readFileSync(file, 'utf8').matchAll(IMPORT)].map((m) => ({ spec: m[1]!, file }))
    );
    return { name: pkg.name as string, dir, declared, imports };
  });
}

/** The other workspaces `ws` declares or imports (by package name, or a relative path into them). */
function edges(ws: Workspace, all: Workspace[]): Map<string, string> {
  const out = new Map<string, string>(); // name -> why
  const byName = new Map(all.map((w) => [w.name, w]));
  for (const d of ws.declared) if (byName.has(d) && d !== ws.name) out.set(d, 'package.json');
  for (const { spec, file } of ws.imports) {
    let target: Workspace | undefined;
    if (spec.startsWith('.')) {
      const p = resolve(dirname(file), spec);
      target = all.find((w) => p === w.dir || p.startsWith(w.dir + sep));
    } else {
      target = byName.get(
        spec
          .split('/')
          .slice(0, spec.startsWith('@') ? 2 : 1)
          .join('/')
      );
    }
    if (target && target !== ws) out.set(target.name, `${relative(repo, file)}: '${spec}'`);
  }
  return out;
}

const HTTP_LIB =
  /^(node:)?(http|https|http2)(\/|$)|^hono(\/|$)|^@hono\/|^undici(\/|$)|^(axios|node-fetch|got|ky|express|fastify|koa|superagent)(\/|$)/;

describe('the workspace graph (R-211)', () => {
  let all: Workspace[];
  const get = (name: string) => all.find((w) => w.name === name)!;
  before(() => {
    all = workspaces();
    for (const n of ['crypto', 'protocol', 'store', 'membershipd']) {
      assert.ok(get(`@sealbus/${n}`), `workspace @sealbus/${n}`);
      assert.ok(get(`@sealbus/${n}`).imports.length > 0, `sources of @sealbus/${n} were read`);
    }
  });

  test('R-211: crypto and protocol are leaves: no other workspace in their package.json or their imports', () => {
    for (const name of ['@sealbus/crypto', '@sealbus/protocol']) {
      assert.deepEqual(Object.fromEntries(edges(get(name), all)), {}, name);
    }
  });

  test('R-211: store knows no HTTP: no HTTP library, server or client, declared or imported, no fetch, no SDK', () => {
    const store = get('@sealbus/store');
    const http = [...store.declared, ...store.imports.map((i) => i.spec)].filter((s) =>
      HTTP_LIB.test(s)
    );
    assert.deepEqual(http, []);
    for (const file of sourcesOf(store.dir)) {
      assert.doesNotMatch(readFileSync(file, 'utf8'), /\bfetch\s*\(/, relative(repo, file));
    }
    assert.equal(edges(store, all).has('@sealbus/client'), false, 'store does not use the SDK');
  });

  test('R-211: dependencies point one way: no cycle, no package depends on an app, the daemon composes crypto, protocol and store', () => {
    const graph = new Map(all.map((w) => [w.name, edges(w, all)]));
    const apps = new Set(
      all.filter((w) => relative(repo, w.dir).startsWith('apps' + sep)).map((w) => w.name)
    );
    for (const w of all) {
      if (apps.has(w.name)) continue;
      for (const [to, why] of graph.get(w.name)!) {
        assert.ok(!apps.has(to), `${w.name} depends on the app ${to} (${why})`);
      }
    }
    const state = new Map<string, 'open' | 'done'>();
    const visit = (n: string, path: string[]) => {
      if (state.get(n) === 'done') return;
      assert.notEqual(state.get(n), 'open', `cycle: ${[...path, n].join(' -> ')}`);
      state.set(n, 'open');
      for (const to of graph.get(n)!.keys()) visit(to, [...path, n]);
      state.set(n, 'done');
    };
    for (const n of graph.keys()) visit(n, []);

    const daemon = get('@sealbus/membershipd');
    const srcImports = new Set(
      daemon.imports
        .filter(
          (i) => i.file.startsWith(join(daemon.dir, 'src') + sep) && !i.file.endsWith('.test.ts')
        )
        .map((i) => i.spec)
    );
    for (const dep of ['@sealbus/crypto', '@sealbus/protocol', '@sealbus/store']) {
      assert.ok(daemon.declared.has(dep), `membershipd declares ${dep}`);
      assert.ok(srcImports.has(dep), `membershipd's sources import ${dep}`);
    }
  });
});
