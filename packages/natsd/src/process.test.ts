import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { NatsdError } from './errors.js';
import { NatsServerProcess, parseNatsLogLine, type NatsLogLine } from './process.js';
import {
  NATS_BIN,
  alive,
  freePort,
  killQuietly,
  natsInfo,
  pidsWithArg,
  startNats,
  tempDir,
  type TempDir,
} from './test-support.js';

let dir: TempDir;

const within = <T>(p: Promise<T>, ms: number, what: string): Promise<T> => {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
};

describe('NatsServerProcess', { timeout: 120_000 }, () => {
  before(async () => {
    dir = await tempDir('natsd-process-');
  });
  after(async () => {
    await dir.remove();
  });

  test('parseNatsLogLine', () => {
    assert.deepEqual(parseNatsLogLine('[123] 2026/01/02 03:04:05.678901 [WRN] careful'), {
      level: 'warn',
      msg: 'careful',
    });
    assert.deepEqual(parseNatsLogLine('[9] 2026/01/02 03:04:05.678901 [INF] Server is ready'), {
      level: 'info',
      msg: 'Server is ready',
    });
    // logtime: false
    assert.deepEqual(parseNatsLogLine('[123] [ERR] bad [thing]'), {
      level: 'error',
      msg: 'bad [thing]',
    });
    assert.deepEqual(parseNatsLogLine('[1] [FTL] x'), { level: 'fatal', msg: 'x' });
    assert.deepEqual(parseNatsLogLine('[1] [XYZ] x'), { level: 'info', msg: 'x' });
    assert.deepEqual(parseNatsLogLine('nats-server: Parse error'), {
      level: 'info',
      msg: 'nats-server: Parse error',
    });
  });

  test('start resolves only when the server accepts connections', async () => {
    const lines: NatsLogLine[] = [];
    // JetStream starts before the client listener, widening the gap a premature
    // "ready" would fall into.
    const s = await startNats(
      dir.path,
      (port) => ({ host: '127.0.0.1', port, jetstream: { store_dir: join(dir.path, 'js') } }),
      { onLog: (l) => lines.push(l) }
    );
    try {
      // no retry: the first connection after start must be answered
      const info = await natsInfo(s.port);
      assert.equal(info.port, s.port);
      assert.ok(s.proc.running);
      assert.ok(alive(s.proc.pid));
      assert.deepEqual(pidsWithArg(s.configFile), [s.proc.pid]);
      assert.ok(lines.some((l) => l.level === 'info' && l.msg === 'Server is ready'));
    } finally {
      await s.proc.stop();
    }
  });

  test('ready is seen with logtime: false too', async () => {
    const s = await startNats(dir.path, (port) => ({ host: '127.0.0.1', port, logtime: false }), {
      readyTimeoutMs: 5_000,
    });
    try {
      assert.ok(s.proc.running);
    } finally {
      await s.proc.stop();
    }
  });

  test('stop is graceful (SIGINT, exit 0) and leaves nothing listening', async () => {
    const s = await startNats(dir.path, (port) => ({ host: '127.0.0.1', port }));
    try {
      const t0 = Date.now();
      const exit = await s.proc.stop();
      assert.ok(Date.now() - t0 < 5_000);
      assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: 0, signal: null });
      assert.ok(exit.lastLines.some((l) => parseNatsLogLine(l).msg.startsWith('Server Exiting')));
      assert.equal(s.proc.running, false);
      assert.ok(!alive(s.proc.pid));
      await assert.rejects(natsInfo(s.port), /ECONNREFUSED/);
      // stopping again is harmless and reports the same exit
      assert.equal(await within(s.proc.stop(), 1_000, 'second stop'), exit);
    } finally {
      killQuietly(s.proc.running ? s.proc.pid : undefined);
    }
  });

  test('stop is bounded: a server that does not exit is killed after graceMs', async () => {
    const s = await startNats(dir.path, (port) => ({ host: '127.0.0.1', port }));
    try {
      process.kill(s.proc.pid, 'SIGSTOP'); // cannot act on SIGINT while stopped
      const t0 = Date.now();
      const exit = await within(s.proc.stop(300), 5_000, 'stop');
      const took = Date.now() - t0;
      assert.equal(exit.signal, 'SIGKILL');
      assert.ok(took >= 280 && took < 5_000, `took ${took} ms`);
      assert.ok(!alive(s.proc.pid));
    } finally {
      killQuietly(s.proc.running ? s.proc.pid : undefined);
    }
  });

  test('a server that dies on its own is reported through exited', async () => {
    const s = await startNats(dir.path, (port) => ({ host: '127.0.0.1', port }));
    try {
      process.kill(s.proc.pid, 'SIGKILL');
      const exit = await within(s.proc.exited, 5_000, 'exited');
      assert.deepEqual({ code: exit.code, signal: exit.signal }, { code: null, signal: 'SIGKILL' });
      assert.ok(exit.lastLines.some((l) => parseNatsLogLine(l).msg === 'Server is ready'));
      assert.equal(s.proc.running, false);
    } finally {
      killQuietly(s.proc.running ? s.proc.pid : undefined);
    }
  });

  test('a bad config fails the start with the parser error and leaves no process', async () => {
    const configFile = join(dir.path, 'bad.conf');
    await writeFile(configFile, 'port: 4222\nauthorization {\n');
    await assert.rejects(
      NatsServerProcess.start({ configFile, bin: NATS_BIN }),
      (e) => e instanceof NatsdError && e.code === 'START_FAILED' && /Parse error/.test(e.message)
    );
    assert.deepEqual(pidsWithArg(configFile), []);
  });

  test('a port in use fails the start clearly and leaves no process', async () => {
    const port = await freePort();
    const squatter = createServer();
    await new Promise<void>((r) => squatter.listen(port, '127.0.0.1', r));
    try {
      const configFile = join(dir.path, 'busy.conf');
      await writeFile(configFile, `host: "127.0.0.1"\nport: ${port}\n`);
      await assert.rejects(
        NatsServerProcess.start({ configFile, bin: NATS_BIN }),
        (e) =>
          e instanceof NatsdError &&
          e.code === 'START_FAILED' &&
          /address already in use/.test(e.message)
      );
      assert.deepEqual(pidsWithArg(configFile), []);
    } finally {
      await new Promise((r) => squatter.close(r));
    }
  });

  test('a missing binary fails the start', async () => {
    await assert.rejects(
      NatsServerProcess.start({
        configFile: join(dir.path, 'nats.conf'),
        bin: join(dir.path, 'no-such-nats-server'),
      }),
      (e) => e instanceof NatsdError && e.code === 'START_FAILED' && /ENOENT/.test(e.message)
    );
  });

  test('a server that never gets ready is stopped after readyTimeoutMs', async () => {
    // a stand-in that runs, keeps its arguments, and never logs "Server is ready"
    const bin = join(dir.path, 'silent-server');
    await writeFile(
      bin,
      `#!/bin/sh\nexec '${process.execPath}' -e 'setTimeout(() => {}, 30000)' -- "$@"\n`,
      { mode: 0o755 }
    );
    const configFile = join(dir.path, 'silent.conf');
    await writeFile(configFile, '');
    const t0 = Date.now();
    await assert.rejects(
      NatsServerProcess.start({ configFile, bin, readyTimeoutMs: 500 }),
      (e) => e instanceof NatsdError && e.code === 'READY_TIMEOUT'
    );
    assert.ok(Date.now() - t0 < 5_000);
    assert.deepEqual(pidsWithArg(configFile), []);
  });
});
