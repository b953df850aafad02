import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { renderNatsConfig } from './config.js';
import { reapOrphan } from './process.js';
import {
  NATS_BIN,
  alive,
  freePort,
  killQuietly,
  natsInfo,
  sleep,
  tempDir,
  waitFor,
  type TempDir,
} from './test-support.js';

let dir: TempDir;
/** Everything started here, killed after each test whatever happened. */
let started: number[] = [];

/**
 * Starts `argv` the way a dead supervisor leaves its server: in a process
 * group of its own, nobody waiting on it. (It stays our child so that Node
 * collects it once it exits: a double fork would leave zombies wherever pid 1
 * does not collect them. reapOrphan looks only at the pid file and /proc.)
 */
async function orphan(argv: string[]): Promise<number> {
  const child = spawn(argv[0]!, argv.slice(1), { detached: true, stdio: 'ignore' });
  child.unref();
  const pid = await new Promise<number>((resolve, reject) => {
    child.once('spawn', () => resolve(child.pid!));
    child.once('error', reject);
  });
  started.push(pid);
  const want = argv.join('\0');
  await waitFor(() => cmdline(pid) === want, 5_000, `${argv[0]} to run`);
  return pid;
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0$/, '');
  } catch {
    return '';
  }
}

/** SIGKILL to the orphan's whole process group (a shell's sleep too). */
function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    killQuietly(pid);
  }
}

/** A real nats-server, orphaned, that writes its pid to `pidFile`; returns its pid and port. */
async function orphanServer(configFile: string, pidFile: string, bin = NATS_BIN) {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    await writeFile(
      configFile,
      renderNatsConfig({ host: '127.0.0.1', port, pid_file: pidFile, server_name: 'orphan' })
    );
    const pid = await orphan([bin, '-c', configFile]);
    try {
      await waitFor(() => pidFileIs(pidFile, pid), 5_000, 'the pid file');
      await natsInfo(port);
      return { pid, port };
    } catch (err) {
      killQuietly(pid);
      if (attempt < 3 && alive(pid) === false) continue; // port taken meanwhile
      throw err;
    }
  }
}

function pidFileIs(pidFile: string, pid: number): boolean {
  try {
    return readFileSync(pidFile, 'utf8').trim() === String(pid);
  } catch {
    return false;
  }
}

describe('reapOrphan', { timeout: 120_000 }, () => {
  before(async () => {
    dir = await tempDir('natsd-reap-');
  });
  afterEach(() => {
    for (const pid of started) killGroup(pid);
    started = [];
  });
  after(async () => {
    await dir.remove();
  });

  test('stops the orphaned nats-server of this config file, and only that one', async () => {
    const configA = join(dir.path, 'a.conf');
    const configB = join(dir.path, 'b.conf');
    const pidFile = join(dir.path, 'a.pid');
    const { pid, port } = await orphanServer(configA, pidFile);

    assert.equal(await reapOrphan(pidFile, configB), null);
    // a prefix of its config file is another file
    assert.equal(await reapOrphan(pidFile, join(dir.path, 'a')), null);
    assert.equal(await reapOrphan(pidFile, configA + '.next'), null);
    assert.equal(await reapOrphan(pidFile, 'a.conf'), null);
    assert.ok(alive(pid));
    await natsInfo(port);

    const t0 = Date.now();
    assert.equal(await reapOrphan(pidFile, configA), pid);
    assert.ok(Date.now() - t0 < 5_000);
    assert.ok(!alive(pid));
    await assert.rejects(natsInfo(port), /ECONNREFUSED/);
  });

  test('matches the exact argument, not a substring of the command line', async () => {
    const configA = join(dir.path, 'exact.conf');
    const pidFile = join(dir.path, 'exact.pid');
    // the server runs with exact.conf.next; it is not the orphan of exact.conf
    const { pid } = await orphanServer(configA + '.next', pidFile);
    assert.equal(await reapOrphan(pidFile, configA), null);
    assert.ok(alive(pid));
    assert.equal(await reapOrphan(pidFile, configA + '.next'), pid);
    assert.ok(!alive(pid));
  });

  test('never kills a process that merely mentions nats-server and the config', async () => {
    const configA = join(dir.path, 'mention.conf');
    const pidFile = join(dir.path, 'mention.pid');
    const wrapper = join(dir.path, 'nats-server-wrapper');
    await symlink(process.execPath, wrapper);
    const keepBusy = 'setTimeout(() => {}, 60000)';
    const impostors = [
      ['/bin/sh', '-c', 'sleep 60; exit 0', 'nats-server', configA],
      ['/bin/sh', '-c', 'sleep 60; exit 0', 'nats-server', '-c', configA],
      ['/bin/sh', '-c', 'sleep 60; exit 0', NATS_BIN, '--config', configA],
      [process.execPath, '-e', keepBusy, 'nats-server', '-c', configA],
      [process.execPath, '-e', keepBusy, '--', `${NATS_BIN} -c ${configA}`],
      // its name only contains nats-server
      [wrapper, '-e', keepBusy, '--', '-c', configA],
    ];
    for (const argv of impostors) {
      const pid = await orphan(argv);
      await writeFile(pidFile, String(pid));
      assert.equal(await reapOrphan(pidFile, configA), null, argv.join(' '));
      await sleep(50);
      assert.ok(alive(pid), `${argv.join(' ')} was killed`);
      killGroup(pid);
    }
  });

  test('a server started through another name is reaped when that binary is named', async () => {
    const bin = join(dir.path, 'my-nats');
    await symlink(NATS_BIN, bin);
    const configA = join(dir.path, 'named.conf');
    const pidFile = join(dir.path, 'named.pid');
    const { pid } = await orphanServer(configA, pidFile, bin);
    assert.equal(await reapOrphan(pidFile, configA), null);
    assert.ok(alive(pid));
    assert.equal(await reapOrphan(pidFile, configA, { bin }), pid);
    assert.ok(!alive(pid));
  });

  test('kills after graceMs when SIGTERM is not enough', async () => {
    const configA = join(dir.path, 'stuck.conf');
    const pidFile = join(dir.path, 'stuck.pid');
    const { pid } = await orphanServer(configA, pidFile);
    process.kill(pid, 'SIGSTOP'); // SIGTERM stays pending while stopped
    const t0 = Date.now();
    assert.equal(await reapOrphan(pidFile, configA, { graceMs: 300 }), pid);
    const took = Date.now() - t0;
    assert.ok(took >= 280 && took < 3_000, `took ${took} ms`);
    assert.ok(!alive(pid));
  });

  test('a missing, stale or garbled pid file stops nothing', async () => {
    const configA = join(dir.path, 'garbled.conf');
    const pidFile = join(dir.path, 'garbled.pid');
    const { pid } = await orphanServer(configA, pidFile);
    assert.equal(await reapOrphan(join(dir.path, 'missing.pid'), configA), null);
    assert.equal(await reapOrphan(dir.path, configA), null); // a directory
    const dead = spawnSync('true').pid!;
    for (const text of [
      String(dead),
      '',
      '\n',
      'abc',
      `${pid}abc`, // parseInt would read the live server's pid out of this
      `${pid}.0`,
      `-${pid}`,
      `+${pid}`,
      '0',
      '1',
      '-1',
      String(process.pid),
      '99999999999',
      `${pid}\n${pid}`,
    ]) {
      await writeFile(pidFile, text);
      assert.equal(await reapOrphan(pidFile, configA), null, JSON.stringify(text));
    }
    assert.ok(alive(pid));
    // with surrounding whitespace, as some tools write it, it is still read
    await writeFile(pidFile, ` ${pid}\n`);
    assert.equal(await reapOrphan(pidFile, configA), pid);
  });
});
