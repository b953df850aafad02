import { inspect } from 'node:util';
import { readKeyText } from './atrest.js';

/** The route user every node presents to its peers (the secret is the password). */
export const ROUTE_USER = 'sealbus-route';
/** Child environment: the secret, and each route URL with it (never in the config file or argv). */
export const ROUTE_SECRET_ENV = 'SEALBUS_ROUTE_SECRET';
export const routeUrlEnv = (i: number): string => `SEALBUS_ROUTE_${i}`;

/** URL-safe, so it goes into a route URL as it is; long enough not to be guessed. */
const SECRET_RE = /^[A-Za-z0-9._~-]{32,256}$/;

/**
 * The shared secret that authenticates cluster routes when they have no
 * mutual TLS: every node's cluster block requires it of inbound routes, and
 * every node presents it on the routes it solicits. Read from a 0600 file,
 * handed to nats-server through its environment, never logged.
 */
export class RouteSecret {
  readonly #secret: string;

  private constructor(secret: string) {
    this.#secret = secret;
  }

  static async load(file: string): Promise<RouteSecret> {
    // The same file rules as the at-rest key (regular file, 0600, text);
    // no environment source: `{}` stands for an environment without one.
    const got = await readKeyText(
      file,
      { what: 'route secret', flag: '--route-secret-file', env: ROUTE_SECRET_ENV },
      {}
    );
    const text = got!.text.replace(/\r?\n$/, '');
    if (!SECRET_RE.test(text))
      throw new Error(
        `the route secret file ${file} must hold 32 to 256 characters of A-Z a-z 0-9 . _ ~ - ` +
          `(e.g. openssl rand -hex 32 > ${file})`
      );
    return new RouteSecret(text);
  }

  /** The environment nats-server reads the secret and the route URLs from. */
  childEnv(routes: readonly string[]): Record<string, string> {
    // nats-server parses a variable's value as configuration: unquoted, a
    // secret that starts with digits ("2e9f…") is read as a broken number
    // and the server refuses to start. Quoted, it is always a string (the
    // secret's alphabet has no quote or backslash).
    const quoted = (v: string) => `"${v}"`;
    const env: Record<string, string> = { [ROUTE_SECRET_ENV]: quoted(this.#secret) };
    routes.forEach((r, i) => {
      env[routeUrlEnv(i)] = quoted(
        r.replace(/^nats-route:\/\//, `nats-route://${ROUTE_USER}:${this.#secret}@`)
      );
    });
    return env;
  }

  toJSON(): string {
    return '[route secret]';
  }

  toString(): string {
    return '[route secret]';
  }

  [inspect.custom](): string {
    return '[route secret]';
  }
}
