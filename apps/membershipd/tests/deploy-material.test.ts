import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  mkdtempSync,
  mkdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
  existsSync,
  readlinkSync,
  renameSync,
  symlinkSync,
  readdirSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runMembershipd } from '@sealbus/testing';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');
const deployDir = join(repo, 'deploy/cluster');
const script = join(deployDir, 'deploy.sh');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs deploy.sh with ssh, scp, rsync and curl replaced by recorders on PATH:
 * nothing leaves the machine, and the recorders show what would have run.
 */
function deploy(args: string[], fakeBin: string): Promise<Run> {
  return new Promise((res) => {
    // Run as the docs do (`./deploy.sh …`): it must be executable.
    const child = spawn(script, args, {
      env: { ...process.env, PATH: `${fakeBin}:${process.env.PATH}` },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      res({ code, stdout, stderr });
    });
  });
}

describe('deploy/cluster material', () => {
  let dir: string;
  let fakeBin: string;
  let calls: string;
  const inventory = (filled: boolean) => {
    const tpl = readFileSync(join(deployDir, 'nodes.env.example'), 'utf8');
    const body = filled
      ? tpl
          .replace(/<ssh-user>@<node(\d)-host>/g, 'ops@node$1')
          .replace(/<node(\d)-address>/g, '127.0.0.$1')
          .replace('TLS_DIR=./tls', `TLS_DIR=${join(dir, 'tls')}`)
          .replace('SECRETS_DIR=./secrets', `SECRETS_DIR=${join(dir, 'secrets')}`)
      : tpl;
    const file = join(dir, filled ? 'filled.env' : 'template.env');
    writeFileSync(file, body);
    return file;
  };
  const recorded = () => (existsSync(calls) ? readFileSync(calls, 'utf8').trim().split('\n') : []);

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'sealbus-deploy-'));
    fakeBin = join(dir, 'bin');
    calls = join(dir, 'calls.log');
    mkdirSync(fakeBin);
    for (const tool of ['ssh', 'scp', 'rsync', 'curl']) {
      const f = join(fakeBin, tool);
      writeFileSync(f, `#!/bin/sh\nprintf '%s\\n' "${tool} $*" >> '${calls}'\n`);
      chmodSync(f, 0o755);
    }
    mkdirSync(join(dir, 'tls'));
    mkdirSync(join(dir, 'secrets'));
    for (const f of ['client-ca.crt', 'route-ca.crt']) writeFileSync(join(dir, 'tls', f), 'x');
    for (const f of ['admin.id', 'callout.key']) writeFileSync(join(dir, 'secrets', f), 'x');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('the scripts the docs run as ./x.sh are executable in git, so in every clone', () => {
    const listed = execFileSync('git', ['ls-files', '-s', '--', 'deploy', 'scripts'], {
      cwd: repo,
    })
      .toString()
      .split('\n')
      .filter((l) => l.endsWith('.sh'))
      .map((l) => l.split(/\s+/));
    assert.ok(listed.length >= 2, 'deploy.sh and certs.sh are tracked');
    assert.deepEqual(
      listed.filter(([mode]) => mode !== '100755').map((l) => l.at(-1)),
      [],
      'scripts committed without their executable bit'
    );
  });

  test('the template has placeholders only, no addresses', () => {
    const tpl = readFileSync(join(deployDir, 'nodes.env.example'), 'utf8');
    assert.doesNotMatch(tpl, /\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b/, 'no IPv4 address');
    assert.match(tpl, /<node1-address>/);
  });

  test('dry run by default: prints every command for all three nodes, runs none', async () => {
    rmSync(calls, { force: true });
    const r = await deploy(['--env', inventory(false), 'install'], fakeBin);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(recorded(), [], 'nothing executed');
    for (const n of ['n1', 'n2', 'n3']) assert.match(r.stdout, new RegExp(`# node ${n} `));
    const lines = r.stdout.split('\n').filter((l) => l.startsWith('+ '));
    assert.ok(lines.length >= 3 * 15, `${lines.length} commands printed`);
    assert.match(r.stdout, /systemctl enable sealbus-membershipd/);
    assert.match(r.stdout, /dry run: nothing was executed/);
    // Start is by quorum: all three are started before any health wait.
    const s = await deploy(['--env', inventory(false), 'start'], fakeBin);
    const order = s.stdout.split('\n').filter((l) => /systemctl start|wait for/.test(l));
    assert.deepEqual(
      order.map((l) => (l.includes('systemctl start') ? 'start' : 'wait')),
      ['start', 'start', 'start', 'wait', 'wait', 'wait']
    );
  });

  test('D-8: install ships each node its own keys and the two CA certificates, never a CA key or a peer key', async () => {
    // CA keys lying in the TLS dir beside everything else (as certs.sh leaves them).
    for (const f of ['client-ca.key', 'route-ca.key'])
      writeFileSync(join(dir, 'tls', f), 'SECRET-CA-KEY');
    rmSync(calls, { force: true });
    const r = await deploy(['--env', inventory(true), 'install'], fakeBin);
    assert.equal(r.code, 0, r.stderr);
    const commands = r.stdout.split('\n').filter((l) => l.startsWith('+ '));
    assert.deepEqual(
      commands.filter((l) => /ca\.key/.test(l)),
      [],
      'a command names a CA key'
    );
    // The release is shipped without the TLS dir, the secrets or the inventory.
    const rsync = commands.filter((l) => /^\+ rsync /.test(l));
    assert.ok(rsync.length >= 3, r.stdout);
    for (const l of rsync)
      for (const ex of ['deploy/cluster/tls', 'deploy/cluster/secrets', 'deploy/cluster/nodes.env'])
        assert.ok(
          l.split(' ').includes(ex) && l.includes(`--exclude ${ex} `),
          `${ex} not excluded: ${l}`
        );
    // Per node: its own key files, no other node's.
    const sections = r.stdout.split(/^# node /m).slice(1);
    assert.equal(sections.length, 3);
    for (const sec of sections) {
      const me = sec.slice(0, 2);
      const keys = [...sec.matchAll(/tls\/(n\d)(-route)?\.key/g)].map((m) => m[1]);
      assert.ok(keys.length > 0, `node ${me} gets its keys`);
      assert.deepEqual([...new Set(keys)], [me], `node ${me} section names ${keys.join(', ')}`);
      assert.match(sec, /client-ca\.crt/);
      assert.match(sec, /route-ca\.crt/);
    }
  });

  test('--apply refuses an inventory that still has placeholders', async () => {
    rmSync(calls, { force: true });
    const r = await deploy(['--env', inventory(false), '--apply', 'install'], fakeBin);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /placeholders/);
    assert.deepEqual(recorded(), []);
  });

  test('--apply runs exactly the printed commands', async () => {
    rmSync(calls, { force: true });
    const file = inventory(true);
    const dry = await deploy(['--env', file, '--release', 't1', 'install'], fakeBin);
    for (const n of [1, 2, 3])
      for (const f of [`n${n}.crt`, `n${n}.key`, `n${n}-route.crt`, `n${n}-route.key`])
        writeFileSync(join(dir, 'tls', f), 'x');
    const r = await deploy(['--env', file, '--release', 't1', '--apply', 'install'], fakeBin);
    assert.equal(r.code, 0, r.stderr);
    const printed = dry.stdout
      .split('\n')
      .filter((l) => /^\+ (ssh|scp|rsync) /.test(l))
      .map((l) => l.slice(2));
    // Line for line, argument for argument (the recorders print "$*").
    assert.ok(printed.length >= 3 * 15, `${printed.length} commands`);
    assert.deepEqual(recorded(), printed);
    assert.ok(recorded().every((l) => !l.includes('<')));
  });

  test('the unit install writes takes every path and the user from nodes.env', async () => {
    const file = inventory(true);
    writeFileSync(
      file,
      readFileSync(file, 'utf8')
        .replace(/^INSTALL_DIR=\S+/m, 'INSTALL_DIR=/srv/sb-install')
        .replace(/^CONFIG_DIR=\S+/m, 'CONFIG_DIR=/srv/sb-config')
        .replace(/^DATA_DIR=\S+/m, 'DATA_DIR=/srv/sb-data')
        .replace(/^SERVICE_USER=\S+/m, 'SERVICE_USER=sbsvc')
    );
    const u = await deploy(['--env', file, 'unit'], fakeBin);
    assert.equal(u.code, 0, u.stderr);
    const body = u.stdout.split('\n').filter((l) => !l.startsWith('#'));
    assert.deepEqual(
      body.filter((l) =>
        /@[A-Z_]+@|\/opt\/sealbus|\/etc\/sealbus|\/var\/lib\/sealbus|=sealbus$/.test(l)
      ),
      [],
      'a path or user not from nodes.env'
    );
    for (const want of [
      'User=sbsvc',
      'Group=sbsvc',
      'EnvironmentFile=/srv/sb-config/membershipd.env',
      'WorkingDirectory=/srv/sb-data',
      'ReadWritePaths=/srv/sb-data',
      'ExecStart=/usr/bin/env node /srv/sb-install/current/apps/membershipd/bin/membershipd.js serve $SEALBUS_ARGS',
    ])
      assert.ok(body.includes(want), `unit has ${want}`);
    // install sends exactly that unit to every node.
    const r = await deploy(['--env', file, 'install'], fakeBin);
    const sent = [
      ...r.stdout.matchAll(
        /echo (\S+) \| base64 -d \| sudo install -m 0644 \/dev\/stdin \/etc\/systemd\/system\/sealbus-membershipd\.service/g
      ),
    ];
    assert.equal(sent.length, 3);
    for (const m of sent) assert.equal(Buffer.from(m[1]!, 'base64').toString(), u.stdout);
    // A path that could break out of the remote commands is refused.
    writeFileSync(
      file,
      readFileSync(file, 'utf8').replace(/^DATA_DIR=\S+/m, 'DATA_DIR="/x;reboot"')
    );
    const bad = await deploy(['--env', file, 'install'], fakeBin);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /DATA_DIR must be an absolute path/);
  });

  test('release.sh: upgrade keeps a previous release; a rollback that would change nothing is refused', () => {
    const releaseSh = join(deployDir, 'release.sh');
    const inst = join(dir, 'opt');
    for (const r of ['r1', 'r2']) mkdirSync(join(inst, 'releases', r), { recursive: true });
    const rel = (...args: string[]) => {
      try {
        return { code: 0, out: execFileSync(releaseSh, args, { stdio: 'pipe' }).toString() };
      } catch (err) {
        const e = err as { status: number; stderr: Buffer };
        return { code: e.status, out: e.stderr.toString() };
      }
    };
    const links = () => ({
      current: existsSync(join(inst, 'current')) ? readlinkSync(join(inst, 'current')) : null,
      previous: existsSync(join(inst, 'previous')) ? readlinkSync(join(inst, 'previous')) : null,
    });
    const r1 = join(inst, 'releases', 'r1');
    const r2 = join(inst, 'releases', 'r2');
    assert.equal(rel('activate', inst, r1).code, 0);
    assert.deepEqual(links(), { current: r1, previous: null });
    // A fresh install has nowhere to roll back to.
    let r = rel('rollback', inst);
    assert.equal(r.code, 1);
    assert.match(r.out, /no previous release/);
    assert.equal(rel('activate', inst, r2).code, 0);
    assert.deepEqual(links(), { current: r2, previous: r1 });
    // Upgrading again to the same release keeps the way back.
    r = rel('activate', inst, r2);
    assert.equal(r.code, 0);
    assert.match(r.out, /already on/);
    assert.deepEqual(links(), { current: r2, previous: r1 });
    assert.equal(rel('rollback', inst).code, 0);
    assert.deepEqual(links(), { current: r1, previous: r2 });
    // previous == current (what `ln -sfn` upgrades used to leave): refused, untouched.
    symlinkSync(r1, join(inst, '.p'));
    renameSync(join(inst, '.p'), join(inst, 'previous'));
    r = rel('rollback', inst);
    assert.equal(r.code, 1);
    assert.match(r.out, /would change nothing/);
    assert.deepEqual(links(), { current: r1, previous: r1 });
    assert.equal(rel('activate', inst, join(inst, 'releases', 'r9')).code, 1);
  });

  test('D-46: a rollback touches no data: per node it only moves the release links and restarts the unit (dry run), and release.sh leaves a data dir beside it byte for byte', async () => {
    rmSync(calls, { force: true });
    const r = await deploy(['--env', inventory(true), 'rollback'], fakeBin);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(recorded(), [], 'nothing executed');
    const cmds = r.stdout.split('\n').filter((l) => l.startsWith('+ '));
    // Per node: the links, the restart, the health wait; nothing else.
    assert.equal(cmds.length, 9, cmds.join('\n'));
    for (const n of [1, 2, 3]) {
      const mine = cmds.filter((l) => l.includes(`ops@node${n} `) || l.includes(`127.0.0.${n}:`));
      assert.deepEqual(
        mine.map((l) => l.replace(/^.*ops@node\d /, '').replace(/https:\/\/[^/]+/, 'URL')),
        [
          'sudo /opt/sealbus/release.sh rollback /opt/sealbus',
          'sudo systemctl restart sealbus-membershipd',
          '+ wait for URL/healthz (200 with every replica current)',
        ],
        `node ${n}`
      );
    }
    assert.doesNotMatch(
      r.stdout,
      /\/var\/lib\/sealbus|rsync|rm -|--data/,
      'no command names the data'
    );
    // release.sh itself, on a real install dir with a data dir beside it.
    const root = mkdtempSync(join(tmpdir(), 'sealbus-rollback-'));
    try {
      const inst = join(root, 'opt');
      const data = join(root, 'data');
      for (const rel of ['r1', 'r2']) mkdirSync(join(inst, 'releases', rel), { recursive: true });
      mkdirSync(join(data, 'nats', 'jetstream'), { recursive: true });
      writeFileSync(join(data, 'admin.id'), randomBytes(64));
      writeFileSync(join(data, 'nats', 'jetstream', 'msgs.blk'), randomBytes(4096));
      const snapshot = () =>
        ['admin.id', 'nats/jetstream/msgs.blk']
          .map(
            (f) =>
              `${f}:${createHash('sha256')
                .update(readFileSync(join(data, f)))
                .digest('hex')}`
          )
          .join(',');
      const before = snapshot();
      const releaseSh = join(deployDir, 'release.sh');
      execFileSync(releaseSh, ['activate', inst, join(inst, 'releases', 'r1')]);
      execFileSync(releaseSh, ['activate', inst, join(inst, 'releases', 'r2')]);
      execFileSync(releaseSh, ['rollback', inst]);
      assert.equal(readlinkSync(join(inst, 'current')), join(inst, 'releases', 'r1'));
      assert.equal(snapshot(), before);
      assert.deepEqual(readdirSync(root).sort(), ['data', 'opt']);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  test('--apply refuses to ship a checkout with uncommitted changes (a release name is one tree)', async () => {
    const copy = join(dir, 'dirty-repo');
    mkdirSync(join(copy, 'deploy'), { recursive: true });
    execFileSync('cp', ['-a', deployDir, join(copy, 'deploy', 'cluster')]);
    const git = (...a: string[]) =>
      execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@t', ...a], {
        cwd: copy,
        stdio: 'pipe',
      });
    git('init', '-q');
    git('add', '.');
    git('commit', '-qm', 'release');
    writeFileSync(join(copy, 'deploy', 'cluster', 'README.md'), 'changed\n');
    rmSync(calls, { force: true });
    const r = await new Promise<Run>((res) => {
      const child = spawn(
        join(copy, 'deploy', 'cluster', 'deploy.sh'),
        ['--env', inventory(true), '--apply', 'upgrade'],
        {
          env: { ...process.env, PATH: `${fakeBin}:${process.env.PATH}` },
          stdio: ['ignore', 'pipe', 'pipe'],
        }
      );
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('close', (code) => res({ code, stdout, stderr }));
    });
    assert.equal(r.code, 2, r.stdout);
    assert.match(r.stderr, /uncommitted changes \(release [0-9a-f]+-dirty\)/);
    assert.deepEqual(recorded(), [], 'nothing ran');
  });

  test('the flags written for each node are flags membershipd serve knows', async () => {
    const r = await deploy(['--env', inventory(true), 'install'], fakeBin);
    const args = /SEALBUS_ARGS=%s\\n' '([^']+)'/.exec(r.stdout)?.[1];
    assert.ok(args, 'SEALBUS_ARGS printed');
    const help = await runMembershipd(['serve', '--help']);
    assert.equal(help.code, 0, help.stderr);
    const flags = args.split(' ').filter((a) => a.startsWith('--'));
    assert.ok(flags.length > 15);
    for (const f of flags) assert.ok(help.stdout.includes(f), `serve has ${f}`);
    assert.match(
      args,
      /--routes nats-route:\/\/127\.0\.0\.2:6222,nats-route:\/\/127\.0\.0\.3:6222/
    );
    const unit = readFileSync(join(deployDir, 'sealbus-membershipd.service'), 'utf8');
    const exec = /ExecStart=\S+ node @INSTALL_DIR@\/current\/(\S+) serve \$SEALBUS_ARGS/.exec(unit);
    assert.ok(exec && existsSync(join(repo, exec[1]!)), 'the unit starts the shipped entry point');
  });
});
