import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { resolveNatsServerBinary } from './binary.js';
import { NatsdError } from './errors.js';

export type NatsLogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

export interface NatsLogLine {
  readonly level: NatsLogLevel;
  readonly msg: string;
}

const LEVELS: Record<string, NatsLogLevel> = {
  TRC: 'trace',
  DBG: 'debug',
  INF: 'info',
  WRN: 'warn',
  ERR: 'error',
  FTL: 'fatal',
};

/** Parses `[pid] 2026/01/02 03:04:05.678901 [INF] message`; anything else is info. */
export function parseNatsLogLine(line: string): NatsLogLine {
  const m = /^\[\d+\] \S+ \S+ \[([A-Z]{3})\] (.*)$/.exec(line);
  if (m) return { level: LEVELS[m[1]!] ?? 'info', msg: m[2]! };
  return { level: 'info', msg: line };
}

export interface NatsExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** The last lines the server logged, to say why it stopped. */
  readonly lastLines: readonly string[];
}

export interface StartOptions {
  configFile: string;
  /** nats-server binary; default: {@link resolveNatsServerBinary}. */
  bin?: string;
  /**
   * Environment of the child. Only PATH and what is passed here reach it, so
   * secrets meant for the server (at-rest key) never leak into a shared env.
   */
  env?: Record<string, string>;
  /** How long to wait for "Server is ready" (default 20 s). */
  readyTimeoutMs?: number;
  onLog?: (line: NatsLogLine) => void;
  /**
   * Run the server in its own process group, so a terminal's Ctrl-C (sent to
   * the whole foreground group) reaches only the supervisor, which then stops
   * the server in order (after draining its own connection).
   */
  detached?: boolean;
}

const KEEP_LINES = 20;

/**
 * A nats-server child process. `start` resolves once the server logged that
 * it is ready (listening for clients), and rejects with the server's own last
 * words if it exits first.
 */
export class NatsServerProcess {
  readonly pid: number;
  /** Resolves when the process has exited, for whatever reason. */
  readonly exited: Promise<NatsExit>;
  #child: ChildProcess;
  #exit: NatsExit | undefined;

  private constructor(child: ChildProcess, exited: Promise<NatsExit>) {
    this.#child = child;
    this.pid = child.pid!;
    this.exited = exited.then((e) => (this.#exit = e));
  }

  get running(): boolean {
    return this.#exit === undefined;
  }

  static async start(options: StartOptions): Promise<NatsServerProcess> {
    const bin = options.bin ?? resolveNatsServerBinary().path;
    const child = spawn(bin, ['-c', options.configFile], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: options.detached ?? false,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...options.env },
    });
    const lastLines: string[] = [];
    let markReady: () => void = () => {};
    const ready = new Promise<void>((r) => (markReady = r));
    for (const stream of [child.stdout!, child.stderr!]) {
      createInterface({ input: stream }).on('line', (line) => {
        lastLines.push(line);
        if (lastLines.length > KEEP_LINES) lastLines.shift();
        const parsed = parseNatsLogLine(line);
        if (parsed.msg === 'Server is ready') markReady();
        options.onLog?.(parsed);
      });
    }
    const exited = new Promise<NatsExit>((resolve) => {
      child.once('error', () => {}); // reported through 'exit' or the spawn check below
      child.once('close', (code, signal) => resolve({ code, signal, lastLines: [...lastLines] }));
    });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (err) =>
        reject(
          new NatsdError('START_FAILED', `cannot start ${bin}: ${err.message}`, { cause: err })
        )
      );
    });
    const proc = new NatsServerProcess(child, exited);
    const timeoutMs = options.readyTimeoutMs ?? 20_000;
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      ready.then(() => 'ready' as const),
      exited.then(() => 'exited' as const),
      new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (outcome === 'ready') return proc;
    if (outcome === 'timeout') await proc.stop();
    const exit = await exited;
    const why = exit.lastLines.map((l) => parseNatsLogLine(l).msg).join('\n  ');
    throw new NatsdError(
      outcome === 'timeout' ? 'READY_TIMEOUT' : 'START_FAILED',
      outcome === 'timeout'
        ? `nats-server was not ready within ${timeoutMs} ms:\n  ${why}`
        : `nats-server exited during start (code ${exit.code}, signal ${exit.signal}):\n  ${why}`
    );
  }

  /** Sends a signal without waiting (SIGKILL for chaos, SIGHUP to reload). */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.running) this.#child.kill(signal);
  }

  /**
   * Graceful stop: SIGINT (nats-server shuts down, flushing JetStream, and
   * exits 0; SIGTERM does the same but exits 1), then SIGKILL if it has not
   * exited within `graceMs`.
   */
  async stop(graceMs = 10_000): Promise<NatsExit> {
    if (!this.running) return this.exited;
    this.#child.kill('SIGINT');
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      this.exited.then(() => false),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(true), graceMs))),
    ]);
    clearTimeout(timer);
    if (timedOut) this.#child.kill('SIGKILL');
    return this.exited;
  }
}

/**
 * Stops a nats-server left running by a previous owner that died without
 * stopping it (SIGKILL of the daemon). Only a process whose command line
 * names `configFile` is touched, so a recycled pid is never killed by mistake.
 * Returns the pid it stopped, if any.
 */
export async function reapOrphan(
  pidFile: string,
  configFile: string,
  graceMs = 10_000
): Promise<number | null> {
  let pid: number;
  try {
    pid = Number.parseInt((await readFile(pidFile, 'utf8')).trim(), 10);
  } catch {
    return null;
  }
  if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) return null;
  let cmdline: string;
  try {
    cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').join(' ');
  } catch {
    return null; // not running (or no procfs: nothing we can prove, so leave it)
  }
  if (!cmdline.includes('nats-server') || !cmdline.includes(configFile)) return null;
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (alive() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (alive()) process.kill(pid, 'SIGKILL');
  while (alive() && Date.now() < deadline + 2_000) await new Promise((r) => setTimeout(r, 20));
  return pid;
}
