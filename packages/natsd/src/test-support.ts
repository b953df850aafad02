/**
 * Helpers for this package's own tests: real nats-server processes on
 * loopback, a minimal NATS protocol client (INFO, optional TLS upgrade,
 * CONNECT, PING/PONG) and process checks. Kept here rather than taken from
 * @sealbus/testing, which depends on this package. Not exported by mod.ts.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type PeerCertificate } from 'node:tls';
import { resolveNatsServerBinary } from './binary.js';
import { renderNatsConfig, type NatsConfigValue } from './config.js';
import { NatsServerProcess, type StartOptions } from './process.js';

export const NATS_BIN = process.env.NATS_SERVER_BIN || resolveNatsServerBinary().path;

/** A loopback port that was free a moment ago, below the ephemeral range. */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const free = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.unref();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port below 32000');
}

export interface TempDir {
  readonly path: string;
  remove(): Promise<void>;
}

export async function tempDir(prefix = 'natsd-test-'): Promise<TempDir> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `cond` every 20 ms until it holds; throws after `ms`. */
export async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

/** Whether `pid` is a live process (a zombie is not). */
export function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Live processes whose command line has `arg` as one of its arguments. */
export function pidsWithArg(arg: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.includes(arg) && alive(Number(entry))) found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

/** SIGKILL for cleanup in `finally`: never throws. */
export function killQuietly(pid: number | undefined): void {
  if (!pid) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

export interface TestServer {
  readonly proc: NatsServerProcess;
  readonly port: number;
  /** A second free port, for `http` (monitoring) when the config asks for one. */
  readonly port2: number;
  readonly configFile: string;
}

/**
 * Starts nats-server on free loopback ports with the config `make(port, port2)`
 * renders (or returns as text), retrying when a port was taken meanwhile.
 */
export async function startNats(
  dir: string,
  make: (port: number, port2: number) => Record<string, NatsConfigValue> | string,
  options: Partial<StartOptions> & { file?: string } = {}
): Promise<TestServer> {
  const { file, ...start } = options;
  const configFile = join(dir, file ?? 'nats.conf');
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    let port2 = await freePort();
    while (port2 === port) port2 = await freePort();
    const config = make(port, port2);
    await writeFile(configFile, typeof config === 'string' ? config : renderNatsConfig(config));
    try {
      const proc = await NatsServerProcess.start({
        configFile,
        bin: NATS_BIN,
        readyTimeoutMs: 10_000,
        ...start,
      });
      return { proc, port, port2, configFile };
    } catch (err) {
      if (attempt < 3 && /address already in use/i.test(String(err))) continue;
      throw err;
    }
  }
}

export interface ClientOptions {
  port: number;
  user?: string;
  pass?: string;
  /** CA to trust when the server requires TLS (only this CA). */
  ca?: string | Buffer;
  timeoutMs?: number;
}

/** A connected, authenticated NATS client speaking just enough protocol. */
export interface MiniClient {
  readonly info: Record<string, unknown>;
  /** The certificate the server presented, when TLS was used. */
  readonly peerCertificate: PeerCertificate | undefined;
  /** PING, resolved by the server's PONG (rejects on -ERR, close or timeout). */
  ping(timeoutMs?: number): Promise<void>;
  close(): void;
}

/** Thrown by {@link natsConnect} with the server's `-ERR` text or the socket error. */
export class ConnectError extends Error {
  override name = 'ConnectError';
}

export async function natsConnect(o: ClientOptions): Promise<MiniClient> {
  const timeoutMs = o.timeoutMs ?? 5_000;
  const raw = netConnect({ host: '127.0.0.1', port: o.port });
  let sock: Socket = raw;
  let timer: NodeJS.Timeout | undefined;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ConnectError(`no answer in ${timeoutMs} ms`)), timeoutMs);
    });
    const infoLine = await Promise.race([readLine(raw), timeout]);
    if (!infoLine.startsWith('INFO '))
      throw new ConnectError(`expected INFO, got ${infoLine.slice(0, 80)}`);
    const info = JSON.parse(infoLine.slice(5)) as Record<string, unknown>;
    let peerCertificate: PeerCertificate | undefined;
    if (info.tls_required) {
      if (!o.ca) throw new ConnectError('server requires TLS and no CA was given');
      const secure = tlsConnect({ socket: raw, ca: o.ca, host: '127.0.0.1' });
      await Promise.race([
        new Promise<void>((resolve, reject) => {
          secure.once('secureConnect', resolve);
          secure.once('error', (err) => reject(new ConnectError(err.message, { cause: err })));
        }),
        timeout,
      ]);
      peerCertificate = secure.getPeerCertificate();
      sock = secure;
    }
    const client = new Client(sock, info, peerCertificate);
    const connect = { verbose: false, pedantic: false, protocol: 1, user: o.user, pass: o.pass };
    sock.write(`CONNECT ${JSON.stringify(connect)}\r\n`);
    await Promise.race([client.ping(timeoutMs), timeout]).catch((err) => {
      client.close();
      throw err;
    });
    return client;
  } catch (err) {
    sock.destroy();
    raw.destroy();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** The INFO a server sends before any authentication. */
export async function natsInfo(port: number): Promise<Record<string, unknown>> {
  const sock = netConnect({ host: '127.0.0.1', port });
  sock.setTimeout(5_000, () => sock.destroy(new Error('no INFO in 5 s')));
  try {
    const line = await readLine(sock);
    if (!line.startsWith('INFO '))
      throw new ConnectError(`expected INFO, got ${line.slice(0, 80)}`);
    return JSON.parse(line.slice(5)) as Record<string, unknown>;
  } finally {
    sock.destroy();
  }
}

/** The first CRLF-terminated line; leaves the socket paused with nothing else read. */
function readLine(sock: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (chunk: Buffer) => {
      buf += chunk.toString('utf8');
      const end = buf.indexOf('\r\n');
      if (end < 0) return;
      sock.off('data', onData);
      sock.off('error', onError);
      sock.pause();
      resolve(buf.slice(0, end));
    };
    const onError = (err: Error) => reject(new ConnectError(err.message, { cause: err }));
    sock.on('data', onData);
    sock.once('error', onError);
    sock.once('close', () => reject(new ConnectError('closed before INFO')));
  });
}

class Client implements MiniClient {
  #sock: Socket;
  #buf = '';
  #pongs: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  #closed: Error | undefined;

  constructor(
    sock: Socket,
    readonly info: Record<string, unknown>,
    readonly peerCertificate: PeerCertificate | undefined
  ) {
    this.#sock = sock;
    sock.on('data', (chunk: Buffer) => this.#onData(chunk));
    sock.on('error', (err) => this.#fail(new ConnectError(err.message, { cause: err })));
    sock.on('close', () => this.#fail(new ConnectError('connection closed')));
    sock.resume();
  }

  #onData(chunk: Buffer): void {
    this.#buf += chunk.toString('utf8');
    for (let end = this.#buf.indexOf('\r\n'); end >= 0; end = this.#buf.indexOf('\r\n')) {
      const line = this.#buf.slice(0, end);
      this.#buf = this.#buf.slice(end + 2);
      if (line === 'PONG') this.#pongs.shift()?.resolve();
      else if (line === 'PING') this.#sock.write('PONG\r\n');
      else if (line.startsWith('-ERR')) this.#fail(new ConnectError(line));
    }
  }

  #fail(err: Error): void {
    this.#closed ??= err;
    for (const p of this.#pongs.splice(0)) p.reject(err);
  }

  ping(timeoutMs = 5_000): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closed);
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new ConnectError('no PONG')), timeoutMs);
      this.#pongs.push({
        resolve: () => (clearTimeout(timer), resolve()),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      this.#sock.write('PING\r\n');
    });
  }

  close(): void {
    this.#closed ??= new ConnectError('closed by the client');
    this.#sock.destroy();
  }
}

/** GET a monitoring endpoint's JSON. */
export async function monitor(port: number, path: string): Promise<Record<string, unknown>> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    signal: AbortSignal.timeout(5_000),
  });
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return (await res.json()) as Record<string, unknown>;
}
