import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Server, Socket } from 'node:net';
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

/**
 * The slowest average rate a blob upload may arrive at: it gets
 * `requestTimeoutMs` plus its length at this rate (64 MiB: 30 + 64 s).
 */
export const MIN_UPLOAD_BYTES_PER_SEC = 1024 * 1024;

/** Extra time for a blob upload of `declared` bytes (or `maxBytes` when unsaid). */
export function blobUploadExtraMs(
  req: { method?: string | undefined; url?: string | undefined; headers: Record<string, unknown> },
  maxBytes: number
): number {
  if (req.method !== 'POST' || !/^\/rooms\/[^/?]+\/blobs\/?(\?|$)/.test(req.url ?? '')) return 0;
  const v = req.headers['content-length'];
  const n = typeof v === 'string' && /^[0-9]{1,15}$/.test(v) ? Number(v) : maxBytes;
  return Math.ceil((Math.min(n, maxBytes) / MIN_UPLOAD_BYTES_PER_SEC) * 1000);
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
  handshakeTimeout: number;
  maxHeaderSize: number;
} {
  return {
    headersTimeout: b.headersTimeoutMs,
    // Enforced per request by capConnections instead (a blob upload gets
    // time in proportion to its size; everything else requestTimeoutMs).
    requestTimeout: 0,
    keepAliveTimeout: 5_000,
    // HTTPS: a TLS handshake gets no longer than headers do (Node: 120 s).
    handshakeTimeout: b.headersTimeoutMs,
    maxHeaderSize: 16 * 1024,
    // Node checks the two timeouts on this interval (default 30 s, which
    // would let a slow client hold its socket up to 30 s past them).
    connectionsCheckingInterval: 1_000,
  };
}

/**
 * Caps connections on a listening HTTP(S) server, all together and per
 * remote address, and closes sockets that never send a request:
 * - a socket must start a request within `headersTimeoutMs` of connecting
 *   (Node's own header timeout only starts with the first byte);
 * - per address, past `maxConnectionsPerAddress`, a new socket is closed
 *   before a byte is read;
 * - a request must arrive whole (headers and body) within `requestTimeoutMs`
 *   of its first byte (its headers within `headersTimeoutMs`, its body within
 *   the rest), plus `extraTimeMs(req)` for a route that takes large bodies,
 *   or its socket is closed;
 * - past `maxConnections`, room is made by closing the oldest socket that is
 *   not in the middle of a request (never spoke, or idle keep-alive); only
 *   when every socket is busy is the new one closed. Busy sockets are bounded
 *   by the header and request timeouts, so holding the cap costs an
 *   attacker a steady stream of requests from many addresses.
 * Returns a reader of the counts.
 */
export function capConnections(
  server: Server,
  b: HttpBounds,
  /** Extra time (ms) a request may take to arrive whole: large bodies (blob uploads). */
  extraTimeMs: (req: IncomingMessage) => number = () => 0
): () => { open: number; refused: number; evicted: number } {
  const perAddress = new Map<string, number>();
  // Insertion order is age order; `busy` while a request is in flight. Keyed
  // by the peer's address and port: with HTTPS, a request's socket is the
  // TLS socket, not the TCP socket 'connection' saw.
  const sockets = new Map<string, { socket: Socket; busy: boolean }>();
  const keyOf = (s: { remoteAddress?: string | undefined; remotePort?: number | undefined }) =>
    `${s.remoteAddress ?? '?'}|${s.remotePort ?? 0}`;
  let refused = 0;
  let evicted = 0;
  server.on('connection', (socket: Socket) => {
    const addr = socket.remoteAddress ?? '?';
    const key = keyOf(socket);
    const n = perAddress.get(addr) ?? 0;
    if (n >= b.maxConnectionsPerAddress) {
      refused++;
      socket.destroy();
      return;
    }
    if (sockets.size >= b.maxConnections) {
      let victim: string | undefined;
      for (const [k, st] of sockets)
        if (!st.busy) {
          victim = k;
          break;
        }
      if (victim === undefined) {
        refused++;
        socket.destroy();
        return;
      }
      evicted++;
      sockets.get(victim)!.socket.destroy();
      sockets.delete(victim);
    }
    perAddress.set(addr, n + 1);
    const entry = { socket, busy: false };
    sockets.set(key, entry);
    // Until its first request starts, a silent socket is closed.
    socket.setTimeout(b.headersTimeoutMs, () => {
      if (!entry.busy) socket.destroy();
    });
    socket.once('close', () => {
      if (sockets.get(key) === entry) sockets.delete(key);
      const left = (perAddress.get(addr) ?? 1) - 1;
      if (left <= 0) perAddress.delete(addr);
      else perAddress.set(addr, left);
    });
  });
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const entry = sockets.get(keyOf(req.socket));
    if (!entry) return;
    entry.busy = true;
    entry.socket.setTimeout(0);
    // Counted from the end of the headers, which took up to headersTimeoutMs
    // already: what is left of requestTimeoutMs after that, so no request
    // holds its socket past requestTimeoutMs from its first byte (plus a
    // blob upload's extra time).
    const budget = Math.max(1_000, b.requestTimeoutMs - b.headersTimeoutMs);
    const late = setTimeout(
      () => {
        if (!req.complete) req.socket.destroy();
      },
      budget + extraTimeMs(req)
    );
    late.unref();
    req.once('end', () => clearTimeout(late));
    res.once('close', () => {
      clearTimeout(late);
      entry.busy = false;
    });
  });
  return () => ({ open: sockets.size, refused, evicted });
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
    .filter((r) => r.body !== undefined || r.streamBody)
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
