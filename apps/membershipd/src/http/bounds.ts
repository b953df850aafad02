import type { Server } from 'node:net';
import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from './context.js';
import type { RouteDef } from './routes/types.js';
import { errorBody } from './errors.js';

/** How long and how many: the HTTP listener's limits, as `/healthz` reports them. */
export interface HttpBounds {
  /** A client must finish its request headers within this (ms). */
  headersTimeoutMs: number;
  /** And its whole request, body included, within this (ms). */
  requestTimeoutMs: number;
  /** Open connections, all clients together; more are closed at once. */
  maxConnections: number;
  /** Open connections from one address. */
  maxConnectionsPerAddress: number;
}

export const DEFAULT_HTTP_BOUNDS: Readonly<HttpBounds> = Object.freeze({
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  maxConnections: 1_024,
  maxConnectionsPerAddress: 128,
});

/** Node's own options for the server: timeouts that close a slow client's socket. */
export function serverOptions(b: HttpBounds): {
  headersTimeout: number;
  requestTimeout: number;
  keepAliveTimeout: number;
  connectionsCheckingInterval: number;
} {
  return {
    headersTimeout: b.headersTimeoutMs,
    requestTimeout: b.requestTimeoutMs,
    keepAliveTimeout: 5_000,
    // Node checks the two timeouts on this interval (default 30 s, which
    // would let a slow client hold its socket up to 30 s past them).
    connectionsCheckingInterval: 1_000,
  };
}

/**
 * Caps connections on a listening server: all together (`maxConnections`,
 * enforced by Node, which closes the excess) and per remote address
 * (closed here before a byte is read). Returns a reader of the counts.
 */
export function capConnections(
  server: Server,
  b: HttpBounds
): () => { open: number; refused: number } {
  server.maxConnections = b.maxConnections;
  const perAddress = new Map<string, number>();
  let open = 0;
  let refused = 0;
  server.on('connection', (socket) => {
    const addr = socket.remoteAddress ?? '?';
    const n = perAddress.get(addr) ?? 0;
    if (n >= b.maxConnectionsPerAddress) {
      refused++;
      socket.destroy();
      return;
    }
    perAddress.set(addr, n + 1);
    open++;
    socket.once('close', () => {
      open--;
      const left = (perAddress.get(addr) ?? 1) - 1;
      if (left <= 0) perAddress.delete(addr);
      else perAddress.set(addr, left);
    });
  });
  return () => ({ open, refused });
}

/**
 * Refuses, without reading it, a request body sent where none is taken:
 * unmatched paths (404), public routes and signed routes without a body
 * schema (413). The answer closes the connection, so Node does not drain
 * the body either.
 */
export function noBodyWhereNoneIsTaken(
  routes: readonly RouteDef[],
  otherPaths: readonly string[]
): MiddlewareHandler<AppEnv> {
  const pattern = (path: string) => new RegExp('^' + path.replace(/\{\w+\}/g, '[^/]+') + '$');
  const taking = routes
    .filter((r) => r.body !== undefined)
    .map((r) => ({ method: r.method.toUpperCase(), re: pattern(r.path) }));
  const known = [...routes.map((r) => r.path), ...otherPaths].map(pattern);
  return async function noBodyMiddleware(c, next) {
    const length = c.req.header('content-length');
    const hasBody =
      c.req.header('transfer-encoding') !== undefined || (length !== undefined && length !== '0');
    if (hasBody && !taking.some((t) => t.method === c.req.method && t.re.test(c.req.path))) {
      c.header('connection', 'close');
      if (!known.some((re) => re.test(c.req.path)))
        return c.json(errorBody('NOT_FOUND', `no route for ${c.req.method} ${c.req.path}`), 404);
      return c.json(
        errorBody('BODY_NOT_ALLOWED', `${c.req.method} ${c.req.path} takes no request body`),
        413
      );
    }
    await next();
  };
}
