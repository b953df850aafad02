import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { pidAlive, tempDir, waitFor, type TempDir } from './fs.js';
import { freePorts } from './ports.js';

/** Path of the `membershipd` launcher, found the way npm links it. */
export function membershipdBin(): string {
  const require = createRequire(import.meta.url);
  return join(
    dirname(require.resolve('@sealbus/membershipd/package.json')),
    'bin',
    'membershipd.js'
  );
}

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface CliResult extends ProcessExit {
  stdout: string;
  stderr: string;
}

/** Runs a Node script to completion (bounded by `timeoutMs`), no stdin. */
export function runNode(
  script: string,
  args: string[],
  timeoutMs: number,
  env: Record<string, string> = {}
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(
        new Error(`${script} ${args.join(' ')} did not finish within ${timeoutMs} ms\n${stderr}`)
      );
    }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Runs `membershipd ARGS` to completion (bounded by `timeoutMs`), no stdin. */
export function runMembershipd(
  args: string[],
  { timeoutMs = 60_000, env = {} as Record<string, string> } = {}
): Promise<CliResult> {
  return runNode(membershipdBin(), args, timeoutMs, env);
}

export interface LogRecord {
  level: number;
  msg: string;
  [k: string]: unknown;
}

export interface TestDaemon extends AsyncDisposable {
  readonly proc: ChildProcess;
  readonly dataDir: string;
  readonly httpUrl: string;
  readonly natsUrl: string;
  readonly natsPort: number;
  readonly httpPort: number;
  /** pid of the supervised nats-server. */
  readonly natsPid: number;
  /** Every JSON log line so far. */
  readonly logs: LogRecord[];
  readonly stderr: () => string;
  readonly exited: Promise<ProcessExit>;
  /** Sends a signal and waits for membershipd to exit. */
  stop(signal?: NodeJS.Signals): Promise<ProcessExit>;
  /** SIGKILL membershipd and its nats-server, as a crash would (nothing cleans up). */
  crash(): Promise<void>;
  /** Stops if running, kills leftovers, removes the data dir if the helper made it. */
  dispose(): Promise<void>;
}

export interface StartDaemonOptions {
  /** Reuse a data directory (restart tests); default: a fresh temp dir. */
  dataDir?: string;
  /** Extra `serve` flags. */
  args?: string[];
  env?: Record<string, string>;
  readyTimeoutMs?: number;
}

/**
 * Starts `membershipd serve` as a real process on free loopback ports and
 * waits for its "ready" log line.
 */
export async function startDaemon(options: StartDaemonOptions = {}): Promise<TestDaemon> {
  let owned: TempDir | undefined;
  const dataDir = options.dataDir ?? (owned = await tempDir('sealbus-daemon-')).path;
  const [httpPort, natsPort] = (await freePorts(2)) as [number, number];
  const child = spawn(
    process.execPath,
    [
      membershipdBin(),
      'serve',
      '--data',
      dataDir,
      '--http',
      `127.0.0.1:${httpPort}`,
      '--nats-port',
      String(natsPort),
      // Most suites send floods of deliberately bad requests from one
      // address; damping is tested on its own (it is on by default).
      ...((options.args ?? []).includes('--auth-fail-limit') ? [] : ['--auth-fail-limit', '0']),
      // Tests read refusals nats-server logs (at debug: see refusalKind).
      ...((options.args ?? []).includes('--log-level') ? [] : ['--log-level', 'debug']),
      ...(options.args ?? []),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...options.env } }
  );
  const logs: LogRecord[] = [];
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  let natsPid = 0;
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      const rec = JSON.parse(line) as LogRecord;
      logs.push(rec);
      if (rec.msg === 'nats-server ready' && typeof rec.nats_pid === 'number')
        natsPid = rec.nats_pid;
    } catch {
      logs.push({ level: 30, msg: line });
    }
  });
  const exited = new Promise<ProcessExit>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal }))
  );
  let hasExited = false;
  void exited.then(() => (hasExited = true));

  const killLeftovers = async () => {
    if (!hasExited) child.kill('SIGKILL');
    await exited;
    if (natsPid && pidAlive(natsPid)) {
      process.kill(natsPid, 'SIGKILL');
      await waitFor(() => !pidAlive(natsPid), {
        timeoutMs: 5_000,
        what: 'nats-server to die',
      }).catch(() => {});
    }
  };

  // Ready when this process has written DATA/node.json (independent of the
  // log level, which may hide the "ready" line).
  let node:
    { pid: number; http_url: string; nats_url: string; nats_pid: number | null } | undefined;
  try {
    const ready = await waitFor(
      async () => {
        // Exited: stop waiting at once (a throw here would be retried).
        if (hasExited) return { exited: true as const };
        const info = JSON.parse(
          await readFile(join(dataDir, 'node.json'), 'utf8').catch(() => 'null')
        );
        return info?.pid === child.pid ? { exited: false as const, info } : undefined;
      },
      { timeoutMs: options.readyTimeoutMs ?? 60_000, what: 'membershipd ready' }
    );
    if (ready.exited) throw new Error(`membershipd exited during start:\n${stderr}`);
    node = ready.info;
    if (node!.nats_pid) natsPid = node!.nats_pid;
  } catch (err) {
    await killLeftovers();
    await owned?.remove();
    throw err;
  }

  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (!hasExited) child.kill(signal);
    return exited;
  };
  const dispose = async () => {
    if (!hasExited) {
      child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, 15_000)))]);
      clearTimeout(timer);
    }
    await killLeftovers();
    await owned?.remove();
  };
  return {
    proc: child,
    dataDir,
    httpUrl: node!.http_url,
    natsUrl: node!.nats_url,
    httpPort,
    natsPort,
    natsPid,
    logs,
    stderr: () => stderr,
    exited,
    stop,
    crash: killLeftovers,
    dispose,
    [Symbol.asyncDispose]: dispose,
  };
}

/** Runs `clientcheck ARGS` to completion (bounded by `timeoutMs`), no stdin. */
export function runClientcheck(args: string[], { timeoutMs = 120_000 } = {}): Promise<CliResult> {
  const require = createRequire(import.meta.url);
  const bin = join(
    dirname(require.resolve('@sealbus/clientcheck/package.json')),
    'bin',
    'clientcheck.js'
  );
  return runNode(bin, args, timeoutMs);
}
