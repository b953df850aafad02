import { isIP } from 'node:net';
import { isLoopbackHost } from '@sealbus/protocol';

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
 * with its port. A name on port 80 or 443 is also accepted without its
 * port, the way clients send a default port; a configured name without a
 * port matches only a Host header without one.
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
  bind(host: string, port: number): void {
    const names = new Set<string>();
    const bare = host.replace(/^\[|\]$/g, '');
    const hosts = [bare];
    if (isLoopbackHost(bare) || bare === '0.0.0.0' || bare === '::')
      hosts.push('localhost', '127.0.0.1', '::1');
    for (const a of [...hosts.map((h) => hostPort(h, port)), ...this.#configured]) {
      names.add(a);
      // A client leaves a default port out of the Host header, and the
      // scheme is not covered (TLS may end at a proxy): 80 and 443 also
      // count without their port.
      const m = /^(.*):(80|443)$/.exec(a);
      if (m) names.add(m[1]!);
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
