import { isLoopbackHost } from '@sealbus/protocol';
import { SealbusError } from './errors.js';

/**
 * Refused: a `nats://` or `http://` URL to a host that is not loopback, or
 * `tls://` mixed with plaintext, without `allowInsecure`. The message says
 * which URL and how to fix it.
 */
export class InsecureTransportError extends SealbusError {
  declare readonly code: 'INSECURE_TRANSPORT';
  readonly url: string;

  constructor(url: string, message: string) {
    super('INSECURE_TRANSPORT', message);
    this.url = url;
  }
}

let warned = false;
function warnInsecure(url: string): void {
  if (warned) return;
  warned = true;
  process.emitWarning(
    `Sealbus: ${url} is reached without TLS (allowInsecure): anyone on the path can read and change its traffic`,
    { code: 'SEALBUS_INSECURE_TRANSPORT' }
  );
}

/**
 * The transport rule for NATS servers: `tls://` always means TLS with
 * verification (the given CA, or the system's), never a silent plaintext
 * fallback; `nats://` (or no scheme) is plaintext and allowed only to a
 * loopback host unless `allowInsecure`. Returns whether the connection must
 * use TLS, and the servers rebuilt as `scheme://host:port` (what to dial).
 */
export function natsTransport(
  servers: readonly string[],
  allowInsecure = false
): { tls: boolean; servers: string[] } {
  let tls = 0;
  const plain: string[] = [];
  const normalized: string[] = [];
  for (const s of servers) {
    // Exactly scheme://host[:port]: no path, query, userinfo or backslash, so
    // the host checked here is the host nats.js dials (its own parser reads
    // such strings differently from WHATWG URL).
    const m = SERVER_RE.exec(s);
    if (!m)
      throw new InsecureTransportError(
        s,
        `not a NATS server URL: ${JSON.stringify(s)} (expected nats://host[:port] or tls://host[:port])`
      );
    const scheme = (m[1] ?? 'nats').toLowerCase();
    const host = m[2]!;
    const port = m[3] ?? '4222';
    if (scheme === 'tls') tls++;
    else if (!isLoopbackHost(host)) plain.push(s);
    normalized.push(`${scheme}://${host}:${port}`);
  }
  if (tls > 0 && tls < servers.length)
    throw new InsecureTransportError(
      servers.join(','),
      'NATS servers mix tls:// and nats://: a failover must never fall back to plaintext; use tls:// for all'
    );
  if (plain.length > 0) {
    if (!allowInsecure)
      throw new InsecureTransportError(
        plain[0]!,
        `${plain[0]} is not loopback and not TLS: use tls:// (with ca, or a certificate the system trusts), ` +
          'or pass allowInsecure: true to accept an unauthenticated, readable connection'
      );
    warnInsecure(plain[0]!);
  }
  return { tls: tls > 0, servers: normalized };
}

const SERVER_RE =
  /^(?:(nats|tls):\/\/)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::(\d{1,5}))?\/?$/i;

/** The same rule for control URLs: `http://` only to loopback unless `allowInsecure`. */
export function checkControlUrl(url: URL, allowInsecure = false): void {
  if (url.protocol !== 'http:' || isLoopbackHost(url.hostname)) return;
  if (!allowInsecure)
    throw new InsecureTransportError(
      url.href,
      `${url.origin} is not loopback and not https: answers from it are unauthenticated; ` +
        'use https://, or pass allowInsecure: true'
    );
  warnInsecure(url.origin);
}
