import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  mkdtempSync,
  mkdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
  existsSync,
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
    const dry = await deploy(['--env', file, 'install'], fakeBin);
    for (const n of [1, 2, 3]) writeFileSync(join(dir, 'tls', `n${n}.crt`), 'x');
    const r = await deploy(['--env', file, '--apply', 'install'], fakeBin);
    assert.equal(r.code, 0, r.stderr);
    const printed = dry.stdout
      .split('\n')
      .filter((l) => /^\+ (ssh|scp|rsync) /.test(l))
      .map((l) => l.slice(2));
    assert.equal(recorded().length, printed.length);
    assert.deepEqual(
      recorded().map((l) => l.split(' ')[0]),
      printed.map((l) => l.split(' ')[0])
    );
    assert.ok(recorded().every((l) => !l.includes('<')));
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
    const exec = /ExecStart=\S+ node \/opt\/sealbus\/current\/(\S+) serve \$SEALBUS_ARGS/.exec(
      unit
    );
    assert.ok(exec && existsSync(join(repo, exec[1]!)), 'the unit starts the shipped entry point');
  });
});
