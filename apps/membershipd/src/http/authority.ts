import { isIP } from 'node:net';
import { isLoopbackHost } from '../util/parse.js';

/** `host:port` as a client's Host header carries it (IPv6 bracketed). */
function hostPort(host: string, port: number): string {
  const h = host.toLowerCase();
  return `${isIP(h) === 6 ? `[${h}]` : h}:${port}`;
}

/**
 * The names a node answers to: what a signed request's `@authority` may be.
 * The configured ones (`--authority`, lowercase `HOST[:PORT]`) plus, once
 * the HTTP listener is bound, its own address; a listener on loopback or on
 * a wildcard address also answers to `localhost`, `127.0.0.1` and `[::1]`
 * with its port. On the scheme's default port (80, 443) the port-less form
 * is accepted too, since clients leave it out of the Host header.
 *
 * Until `bind` ran, no name is accepted: a request never verifies against a
 * half-built list.
 */
export class Authorities {
  readonly #configured: readonly string[];
  #names: ReadonlySet<string> = new Set();

  constructor(configured: readonly string[] = []) {
    this.#configured = Object.freeze(configured.map((a) => a.toLowerCase()));
  }

  /** Adds the listener's own names; `port` is the one actually bound. */
  bind(host: string, port: number, tls: boolean): void {
    const names = new Set(this.#configured);
    const bare = host.replace(/^\[|\]$/g, '');
    const hosts = [bare];
    if (isLoopbackHost(bare) || bare === '0.0.0.0' || bare === '::')
      hosts.push('localhost', '127.0.0.1', '::1');
    for (const h of hosts) {
      names.add(hostPort(h, port));
      if (port === (tls ? 443 : 80)) names.add(hostPort(h, port).replace(/:\d+$/, ''));
    }
    for (const a of this.#configured) {
      const m = /^(.*):(\d+)$/.exec(a);
      if (m && Number(m[2]) === (tls ? 443 : 80)) names.add(m[1]!);
    }
    this.#names = names;
  }

  has(authority: string): boolean {
    return this.#names.has(authority.toLowerCase());
  }

  /** Every accepted name, sorted (shown by `/healthz`). */
  list(): string[] {
    return [...this.#names].sort();
  }
}
