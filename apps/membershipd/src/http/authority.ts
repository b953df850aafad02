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
  /** The listener's own address (not a loopback alias, not a configured name). */
  #own: ReadonlySet<string> = new Set();
  /** Names taken back (another node claims them): never accepted again by this process. */
  readonly #refused = new Set<string>();

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
    const withDefault = (a: string) => {
      // A client leaves a default port out of the Host header, and the
      // scheme is not covered (TLS may end at a proxy): 80 and 443 also
      // count without their port.
      const m = /^(.*):(80|443)$/.exec(a);
      return m ? [a, m[1]!] : [a];
    };
    for (const a of [...hosts.map((h) => hostPort(h, port)), ...this.#configured])
      for (const n of withDefault(a)) if (!this.#refused.has(n)) names.add(n);
    // Own: the address bound, when it is one address (not a wildcard), and
    // not also configured (a configured name is one others may share).
    const own = new Set<string>();
    if (bare !== '0.0.0.0' && bare !== '::')
      for (const n of withDefault(hostPort(bare, port)))
        if (names.has(n) && !this.#configured.includes(n)) own.add(n);
    this.#names = names;
    this.#own = own;
  }

  has(authority: string): boolean {
    return this.#names.has(authority.toLowerCase());
  }

  /**
   * The names that are this listener's own address: candidates for
   * node-local nonces (loopback aliases and `--authority` names are not:
   * another node may answer to them too).
   */
  own(): string[] {
    return [...this.#own].sort();
  }

  /** Stops accepting a name (another node claims it as its own). */
  refuse(name: string): void {
    const n = name.toLowerCase();
    this.#refused.add(n);
    const names = new Set(this.#names);
    names.delete(n);
    this.#names = names;
    const own = new Set(this.#own);
    own.delete(n);
    this.#own = own;
  }

  /** Every accepted name, sorted (shown by `/healthz`). */
  list(): string[] {
    return [...this.#names].sort();
  }
}
