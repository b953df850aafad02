import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { delimiter, dirname, join, parse } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NatsdError } from './errors.js';

/** The oldest nats-server with auth callout, which the data plane relies on. */
export const MIN_NATS_SERVER_VERSION = Object.freeze([2, 10, 0] as const);

export interface NatsServerBinary {
  readonly path: string;
  readonly version: string;
}

/**
 * The version `bin --version` reports, from the line nats-server prints
 * (`nats-server: v2.10.27`); null if it does not run or prints anything else,
 * so another program's version number is never taken for the server's.
 */
export function natsServerVersion(bin: string): string | null {
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (r.error || r.status !== 0) return null;
  const m = /^nats-server: v(\d+\.\d+\.\d+)\b/m.exec(r.stdout);
  return m?.[1] ?? null;
}

export function versionAtLeast(
  version: string,
  min: readonly number[] = MIN_NATS_SERVER_VERSION
): boolean {
  const parts = version.split('.').map(Number);
  for (let i = 0; i < min.length; i++) {
    const p = parts[i] ?? 0;
    const m = min[i] ?? 0;
    if (p !== m) return p > m;
  }
  return true;
}

/** Walks up from this module to the checkout holding `.tools/nats-server.json`. */
function setupRecord(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  const { root } = parse(dir);
  while (dir !== root) {
    const rec = join(dir, '.tools', 'nats-server.json');
    if (existsSync(rec)) return rec;
    dir = dirname(dir);
  }
  return null;
}

/** Every nats-server on PATH, in order: an old one first must not hide a newer one later. */
function fromPath(): string[] {
  return (process.env.PATH ?? '')
    .split(delimiter)
    .map((dir) => join(dir || '.', 'nats-server'))
    .filter((p) => existsSync(p));
}

let cached: NatsServerBinary | undefined;

/**
 * Finds nats-server >= 2.10 the way `npm run setup` chose it: an explicit
 * `bin` argument, then $NATS_SERVER_BIN, then the setup record under
 * `.tools/`, then PATH. An explicit choice that is too old is an error, not
 * skipped.
 */
export function resolveNatsServerBinary(bin?: string): NatsServerBinary {
  if (!bin && cached) return cached;
  const candidates: Array<{ path: string; explicit: boolean }> = [];
  const explicit = bin ?? process.env.NATS_SERVER_BIN;
  if (explicit) candidates.push({ path: explicit, explicit: true });
  else {
    const rec = setupRecord();
    if (rec) {
      try {
        const { path } = JSON.parse(readFileSync(rec, 'utf8')) as { path?: string };
        if (path) candidates.push({ path, explicit: false });
      } catch {
        // a broken record is ignored; PATH may still have a usable server
      }
    }
    for (const p of fromPath()) candidates.push({ path: p, explicit: false });
  }
  for (const c of candidates) {
    const version = natsServerVersion(c.path);
    if (version && versionAtLeast(version)) {
      const found = Object.freeze({ path: c.path, version });
      if (!bin) cached = found;
      return found;
    }
    if (c.explicit) {
      throw version
        ? new NatsdError(
            'BINARY_TOO_OLD',
            `${c.path} is nats-server ${version}; ${MIN_NATS_SERVER_VERSION.join('.')} or newer is required`
          )
        : new NatsdError('BINARY_NOT_FOUND', `${c.path} is not a runnable nats-server`);
    }
  }
  throw new NatsdError(
    'BINARY_NOT_FOUND',
    'no nats-server >= 2.10 found: run `npm run setup`, or set NATS_SERVER_BIN'
  );
}
