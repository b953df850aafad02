import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, isAbsolute, resolve } from 'node:path';
import type { Readable } from 'node:stream';
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

/**
 * Parses `[pid] 2026/01/02 03:04:05.678901 [INF] message`, or `[pid] [INF] message`
 * when the config says `logtime: false`; anything else is info.
 */
export function parseNatsLogLine(line: string): NatsLogLine {
  const m = LOG_PREFIX.exec(line);
  if (m) return { level: LEVELS[m[1]!] ?? 'info', msg: m[2]! };
  return { level: 'info', msg: line };
}
const LOG_PREFIX = /^\[\d+\] (?:\S+ \S+ )?\[([A-Z]{3})\] (.*)$/;

/** Whether a line is one nats-server logged itself (its `[pid] … [LVL]` prefix). */
function isServerLine(line: string): boolean {
  return LOG_PREFIX.test(line);
}

/**
 * Calls `onLine` for each line of a stream, split on `\n` only (a `\r\n`
 * loses its `\r`). Not readline: it also splits on a lone `\r`, and a
 * client's bytes that a trace-level log quotes may carry one, which would
 * let a client start a line of its own in the server's log.
 */
function eachLine(stream: Readable, onLine: (line: string) => void): void {
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const parts = (rest + chunk).split('\n');
    rest = parts.pop()!;
    for (const p of parts) onLine(p.endsWith('\r') ? p.slice(0, -1) : p);
  });
  stream.on('end', () => {
    if (rest) onLine(rest);
    rest = '';
  });
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
/** nats-server 2.10 logs the words alone; later versions add the config's digest in parentheses. */
const RELOADED = /^Reloaded server configuration(?: \([^)]*\))? *$/;
const RELOAD_FAILED = 'Failed to reload server configuration: ';

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
  #lineWatchers: Set<(line: NatsLogLine, raw: string) => void>;
  #reloads: Promise<unknown> = Promise.resolve();

  private constructor(
    child: ChildProcess,
    exited: Promise<NatsExit>,
    lineWatchers: Set<(line: NatsLogLine, raw: string) => void>
  ) {
    this.#child = child;
    this.pid = child.pid!;
    this.exited = exited.then((e) => (this.#exit = e));
    this.#lineWatchers = lineWatchers;
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
    const lineWatchers = new Set<(line: NatsLogLine, raw: string) => void>();
    let markReady: () => void = () => {};
    const ready = new Promise<void>((r) => (markReady = r));
    for (const stream of [child.stdout!, child.stderr!]) {
      eachLine(stream, (line) => {
        lastLines.push(line);
        if (lastLines.length > KEEP_LINES) lastLines.shift();
        const parsed = parseNatsLogLine(line);
        if (parsed.msg === 'Server is ready' && isServerLine(line)) markReady();
        for (const watch of lineWatchers) watch(parsed, line);
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
    const proc = new NatsServerProcess(child, exited, lineWatchers);
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

  /** Sends a signal without waiting (SIGKILL for chaos; to reload, use {@link reload}). */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.running) this.#child.kill(signal);
  }

  /**
   * Makes the server re-read its config file (SIGHUP), e.g. to serve renewed
   * TLS certificates without a restart, and waits for its verdict in its log:
   * resolves once it logged "Reloaded server configuration"; rejects with
   * `RELOAD_FAILED` and the server's reason once it logged "Failed to reload
   * server configuration" (it then keeps running with the configuration it
   * had), or if it exits meanwhile; rejects with `RELOAD_TIMEOUT` if neither
   * came within `timeoutMs` (the server may still act on that signal later,
   * and a late verdict can be taken for the next call's). Calls are
   * serialised, so each sends its signal only after the previous verdict (two
   * SIGHUPs close together could make one reload). The verdict is read from
   * the server's stderr: a config that logs elsewhere (`log_file`, `syslog`)
   * times out.
   *
   * @example
   * await writeFile(certFile, renewedCert);
   * await server.reload(); // new connections get the new certificate
   */
  reload(timeoutMs = 10_000): Promise<void> {
    const run = this.#reloads.then(() => this.#reloadOnce(timeoutMs));
    this.#reloads = run.catch(() => {});
    return run;
  }

  async #reloadOnce(timeoutMs: number): Promise<void> {
    if (!this.running)
      throw new NatsdError('RELOAD_FAILED', `nats-server (pid ${this.pid}) is not running`);
    let watch: ((line: NatsLogLine, raw: string) => void) | undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      const verdict = new Promise<void>((resolve, reject) => {
        // Only the server's own lines count, at the level it logs them at:
        // a client's text quoted into a trace line is neither.
        watch = (line, raw) => {
          if (!isServerLine(raw)) return;
          if (RELOADED.test(line.msg) && line.level === 'info') resolve();
          else if (line.msg.startsWith(RELOAD_FAILED) && line.level === 'error')
            reject(
              new NatsdError(
                'RELOAD_FAILED',
                `nats-server kept its previous configuration: ${line.msg.slice(RELOAD_FAILED.length)}`
              )
            );
        };
        this.#lineWatchers.add(watch);
      });
      const gone = this.exited.then((e) => {
        throw new NatsdError(
          'RELOAD_FAILED',
          `nats-server exited during reload (code ${e.code}, signal ${e.signal})`
        );
      });
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new NatsdError(
                'RELOAD_TIMEOUT',
                `nats-server did not report on its reload within ${timeoutMs} ms`
              )
            ),
          timeoutMs
        );
      });
      this.#child.kill('SIGHUP');
      await Promise.race([verdict, gone, late]);
    } finally {
      clearTimeout(timer);
      if (watch) this.#lineWatchers.delete(watch);
    }
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

export interface ReapOptions {
  /** How long to wait after SIGTERM before SIGKILL (default 10 s). */
  graceMs?: number;
  /**
   * The nats-server binary the orphan was started with, when its file name is
   * not `nats-server` (default: {@link resolveNatsServerBinary}, if any).
   */
  bin?: string;
}

/** The binary NatsServerProcess would start by default, if there is one. */
function knownBinary(): string | undefined {
  try {
    return resolveNatsServerBinary().path;
  } catch {
    return undefined; // none found: only a binary named nats-server qualifies
  }
}

// Go's flag package takes -c, --c, -config and --config, each as `-c x` or `-c=x`.
const CONFIG_FLAGS = new Set(['-c', '--c', '-config', '--config']);

/** Whether `argv` is a nats-server started with exactly `configFile` as its config. */
function isNatsServerFor(argv: readonly string[], configFile: string, bin?: string): boolean {
  const [argv0, ...args] = argv;
  if (!argv0 || (basename(argv0) !== 'nats-server' && argv0 !== (bin ?? knownBinary())))
    return false;
  const same = (p: string) =>
    p === configFile ||
    (isAbsolute(p) && isAbsolute(configFile) && resolve(p) === resolve(configFile));
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (CONFIG_FLAGS.has(a) && args[i + 1] !== undefined && same(args[i + 1]!)) return true;
    const eq = a.indexOf('=');
    if (eq > 0 && CONFIG_FLAGS.has(a.slice(0, eq)) && same(a.slice(eq + 1))) return true;
  }
  return false;
}

/**
 * Stops a nats-server left running by a previous owner that died without
 * stopping it (SIGKILL of the daemon). Only a process whose command line is
 * a nats-server binary (named `nats-server`, or `options.bin`) given exactly
 * `configFile` with -c/--config is touched: a recycled pid, or any other
 * process whose arguments merely mention the file, is left alone. Returns the
 * pid it stopped, if any.
 *
 * @example
 * const pid = await reapOrphan(paths.natsPidFile, paths.natsConfig);
 */
export async function reapOrphan(
  pidFile: string,
  configFile: string,
  options: ReapOptions = {}
): Promise<number | null> {
  const graceMs = options.graceMs ?? 10_000;
  let text: string;
  try {
    text = (await readFile(pidFile, 'utf8')).trim();
  } catch {
    return null;
  }
  if (!/^\d{1,10}$/.test(text)) return null;
  const pid = Number(text);
  if (pid <= 1 || pid === process.pid) return null;
  let argv: string[];
  try {
    argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
  } catch {
    return null; // not running (or no procfs: nothing we can prove, so leave it)
  }
  if (argv.at(-1) === '') argv.pop();
  if (!isNatsServerFor(argv, configFile, options.bin)) return null;
  // Not an orphan while the membershipd that started it runs: a second
  // daemon on the same data dir must not take the store from under it.
  const parent = await parentOf(pid);
  if (parent !== null && parent > 1 && parent !== process.pid) {
    const parentArgv = (await readFile(`/proc/${parent}/cmdline`, 'utf8').catch(() => '')).split(
      '\0'
    );
    if (parentArgv.includes('serve') && parentArgv.some((a) => /membershipd/.test(a)))
      throw new Error(
        `nats-server ${pid} of this data dir is run by membershipd ${parent}: another membershipd serves this data dir (stop it first)`
      );
  }
  if (!signal(pid, 'SIGTERM')) return null; // exited since we read its command line
  const deadline = Date.now() + graceMs;
  while (running(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  if (running(pid)) signal(pid, 'SIGKILL');
  while (running(pid) && Date.now() < deadline + 2_000) await new Promise((r) => setTimeout(r, 20));
  // Dead, but its pid is taken until its parent (init, usually) collects it;
  // give that a moment, so callers that probe the pid see it gone.
  const collected = Date.now() + 2_000;
  while (signal(pid, 0) && Date.now() < collected) await new Promise((r) => setTimeout(r, 20));
  return pid;
}

/** The parent pid of a running process (from /proc), or null when it cannot be read. */
async function parentOf(pid: number): Promise<number | null> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // pid (comm) state ppid ...: comm may hold spaces and parentheses.
    const m = /\) \S+ (\d+)/.exec(stat.slice(stat.lastIndexOf(')')));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** Sends `sig` (0: none, just the check); false if there is no such process. */
function signal(pid: number, sig: NodeJS.Signals | 0): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

/** Whether `pid` still runs: a zombie (exited, not yet collected by its parent) does not. */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}
