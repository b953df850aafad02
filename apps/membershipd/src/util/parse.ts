import { isIP } from 'node:net';

const UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses a duration like `1500ms`, `30s`, `5m`, `2h`, `30d` into milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(text.trim());
  if (!m) throw new Error(`invalid duration "${text}" (examples: 500ms, 30s, 5m, 2h, 30d)`);
  return Number(m[1]) * UNITS[m[2]!]!;
}

/** `--jetstream-sync`: `always`, or a flush interval (a duration, 100ms at least). */
export function parseJetStreamSync(text: string): 'always' | number {
  if (text.trim() === 'always') return 'always';
  const ms = parseDuration(text);
  if (ms < 100) throw new Error(`"${text}": a flush interval of at least 100ms, or always`);
  return ms;
}

export interface HostPort {
  host: string;
  port: number;
}

/** Parses `HOST:PORT` or `[IPv6]:PORT`; port 0 asks the OS for a free one. */
export function parseHostPort(text: string): HostPort {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535)
    throw new Error(
      `invalid address "${text}" (expected HOST:PORT, e.g. 127.0.0.1:8470 or [::1]:8470)`
    );
  const host = m[1] ?? m[2]!;
  if (m[1] && isIP(host) !== 6) throw new Error(`invalid IPv6 address in "${text}"`);
  return { host, port };
}

export function parsePort(text: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) throw new Error(`invalid port "${text}"`);
  return Number(text);
}

/** `http://host:port`, bracketing IPv6 literals. */
export function formatHostPort(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

const SIZE_UNITS: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 };

/**
 * Parses a size like `512KiB`, `256MiB`, `10GiB` or a plain byte count
 * (`65536`, `65536B`) into bytes. Binary units only: `MB` is refused
 * rather than guessed at.
 */
export function parseSize(text: string): number {
  const m = /^(\d+)(B|KiB|MiB|GiB)?$/.exec(text.trim());
  const bytes = m ? Number(m[1]) * SIZE_UNITS[m[2] ?? 'B']! : NaN;
  if (!m || !Number.isSafeInteger(bytes) || bytes <= 0)
    throw new Error(`invalid size "${text}" (examples: 65536, 64KiB, 256MiB, 10GiB)`);
  return bytes;
}

/**
 * Parses an HTTP authority `HOST[:PORT]` as clients put it in the Host
 * header: a DNS name or IPv4 address, or a bracketed IPv6 address; no port
 * means the scheme's default. Returned lowercase.
 */
export function parseAuthority(text: string): string {
  const t = text.trim().toLowerCase();
  const m = /^(?:\[([0-9a-f:.]+)\]|([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?))(?::(\d{1,5}))?$/.exec(t);
  if (!m || (m[3] !== undefined && Number(m[3]) > 65535) || (m[1] && isIP(m[1]) !== 6))
    throw new Error(
      `invalid authority "${text}" (expected HOST[:PORT], e.g. sealbus.example.com, 10.0.0.5:8470 or [::1]:8470)`
    );
  return t;
}

/** A positive integer count (`--max-rooms-per-user`). */
export function parseCount(text: string): number {
  if (!/^\d{1,9}$/.test(text.trim())) throw new Error(`invalid count "${text}"`);
  return Number(text.trim());
}
