import { randomUUID } from 'node:crypto';
import { Hono, type MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { matchedRoutes } from 'hono/route';
import { z } from 'zod';
import { clientRequestId, userIsActiveAdmin } from '@sealbus/protocol';
import type { MembershipStore } from '@sealbus/store';
import type { Change } from '../dataplane/reactor.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { audit, type Services } from './guard.js';
import { verifyRequestSignature } from '@sealbus/crypto';
import type { Authorities } from './authority.js';
import type { LocalNonces } from './localnonces.js';
import { AuthDamper, type DampingOptions } from './damping.js';
import { signableRequest, signatureAuth } from './auth.js';
import type { AppEnv, AuthMode } from './context.js';
import { errorBody, HttpError, toHttpError } from './errors.js';
import { ChangeBudget, DenialBudget } from './denials.js';
import { LogThrottle } from '../logthrottle.js';
import { noBodyWhereNoneIsTaken } from './bounds.js';
import { openApiDocument } from './openapi.js';
import { normalTarget } from './target.js';
import { directoryRoutes } from './routes/directory.js';
import { roomRoutes } from './routes/rooms.js';
import { blobRoutes, DEFAULT_BLOB_MAX_BYTES, DEFAULT_ROOM_BLOB_BYTES } from './routes/blobs.js';
import type { RouteDef } from './routes/types.js';
import { userRoutes } from './routes/users.js';

/** The daemon's self-description served by `/healthz` (no secrets). */
export interface Posture {
  status: 'ok' | 'unavailable';
  /** Why not ok, when the store answers but cannot be used (`no store quorum`). */
  reason?: string;
  version: string;
  uptime_s: number;
  store: {
    backend: 'jetstream-kv';
    replicas: number;
    reachable: boolean;
    /** Leader of the users bucket (a server name), when clustered. */
    leader: string | null;
    /** Replicas of the users bucket that are current (leader included). */
    current: number | null;
    /**
     * The store took a small write just now (false: storage full, reason
     * `storage full`; null: not probed, the store is not usable anyway).
     */
    writable: boolean | null;
  };
  auth: { mode: AuthMode };
  nats: { embedded: boolean; connected: boolean; server_version: string | null };
  tls: { http: boolean; nats: boolean };
  /** The embedded JetStream store is encrypted at rest (false with an external NATS). */
  at_rest: boolean;
  /** The HTTP listener's limits. */
  http: {
    headers_timeout_ms: number;
    request_timeout_ms: number;
    max_connections: number;
    max_connections_per_address: number;
  };
}

export interface HealthProbe {
  posture(): Promise<Posture>;
  /** Ready to serve: started, store reachable, not shutting down. */
  ready(): Promise<{ ready: boolean; reason?: string }>;
}

export interface AppOptions {
  health: HealthProbe;
  logger: Logger;
  store: MembershipStore;
  authMode: AuthMode;
  /** Largest accepted request body in bytes (default 64 KiB). */
  bodyLimit?: number;
  /**
   * Mounts `GET /_bench/verify`, which only verifies a request signature (no
   * store access): the cryptographic floor that `npm run bench` compares the
   * full signed path against. Never on in production.
   */
  benchRoutes?: boolean;
  /** Auth-failure damping by source address (default 20 failures a minute; limit 0 disables). */
  damping?: DampingOptions;
  /** Tells the data plane about a change (kicks, user events). */
  announce: (change: Change) => Promise<void>;
  /** Counts requests, authentication failures, damping and audit appends. */
  metrics?: Metrics;
  /** What `@authority` may be (bound to the listener's address once it listens). */
  authorities: Authorities;
  /**
   * Remember request nonces in this node's memory instead of the replicated
   * bucket: only when no other node can be presented the same request (a
   * node that is the whole deployment).
   */
  /** Refuse requests signed before this second (SIGNED_BEFORE_START): the first start after a restore. */
  notBeforeSec?: number;
  /** Signed requests are 503 while this is false (the node's authority claims are not current). */
  claimsCurrent?: () => boolean;
  localNonces?: {
    store: LocalNonces;
    /** Whether a request signed for this `@authority` keeps its nonce in memory. */
    covers: (authority: string) => boolean;
    /** The names that do now (for /healthz). */
    names: () => string[];
  };
  /** `POST /rooms` refuses (403 ROOM_QUOTA) a signer that owns this many rooms (default 100). */
  maxRoomsPerUser?: number;
  /** How many refusals per signer reach the audit log (default: 20 at once, 20 a minute). */
  denials?: DenialBudget;
  /** Changes one non-admin signer may make a minute (and at once); 0 or absent: unlimited. */
  changesPerMinute?: number;
  /** Largest blob (`--blob-max-bytes`, default 64 MiB). */
  blobMaxBytes?: number;
  /** Bytes of blobs one room may hold (`--room-blob-bytes`, default 1 GiB). */
  roomBlobBytes?: number;
  /** Bytes of blobs all rooms of one owner may hold (default: `roomBlobBytes`). */
  ownerBlobBytes?: number;
}

/** `--changes-per-minute` when not given. */
export const DEFAULT_CHANGES_PER_MINUTE = 120;

/** `--max-rooms-per-user` when not given. */
export const DEFAULT_MAX_ROOMS_PER_USER = 100;

/**
 * The pattern of the route that answered (`/rooms/:id/members`), never the
 * raw path, so a metric label stays bounded; `unmatched` when no route did.
 * Middleware registered with `use` is method ALL and is skipped.
 */
function routeLabel(c: Parameters<MiddlewareHandler<AppEnv>>[0]): string {
  const routes = matchedRoutes(c);
  for (let i = routes.length - 1; i >= 0; i--) {
    if (routes[i]!.method !== 'ALL') return routes[i]!.path;
  }
  return 'unmatched';
}

function requestContext(logger: Logger, metrics?: Metrics): MiddlewareHandler<AppEnv> {
  // Unsigned or refused requests are logged per address once an interval, then counted.
  const refused = new LogThrottle({
    summary: (remote, more, intervalMs) =>
      logger.info(
        { remote, more, interval_s: intervalMs / 1000 },
        'http: unsigned or refused requests (more from this address)'
      ),
  });
  return async function requestContextMiddleware(c, next) {
    // The request id is the daemon's own. What the client sent is kept
    // apart, bounded, for correlation only: a client-chosen id must never
    // name (or deduplicate) an audit record.
    const id = randomUUID();
    const given = clientRequestId(c.req.header('x-request-id'));
    c.set('requestId', id);
    c.set('clientRequestId', given);
    c.set('actor', null);
    const t0 = performance.now();
    await next();
    c.header('x-request-id', id);
    const ms = performance.now() - t0;
    metrics?.httpRequest(routeLabel(c), c.req.method, c.res.status, ms / 1000);
    // Anything a stranger can send at will (no signed actor, or refused) is
    // logged per address once an interval, then counted; signed requests
    // that were served are always logged.
    const anonymousOrRefused = c.get('actor') === null || c.res.status >= 400;
    const level =
      anonymousOrRefused && !refused.hit(c.env?.incoming?.socket?.remoteAddress ?? 'unknown')
        ? 'debug'
        : 'info';
    logger[level](
      {
        request_id: id,
        ...(given !== undefined ? { client_request_id: given } : {}),
        method: c.req.method,
        // The client chose it: bounded.
        path: c.req.path.length > 256 ? `${c.req.path.slice(0, 256)}…` : c.req.path,
        status: c.res.status,
        ms: Math.round(ms * 10) / 10,
        actor: c.get('actor')?.sign_pub ?? null,
      },
      'http'
    );
  };
}

/** Every route the daemon serves behind signature auth. */
export const SIGNED_ROUTES: readonly RouteDef[] = Object.freeze([
  ...userRoutes,
  ...directoryRoutes,
  ...roomRoutes,
  ...blobRoutes,
]);

const PUBLIC_ROUTES: RouteDef[] = [
  {
    method: 'get',
    path: '/healthz',
    summary: 'Posture; 200 only while the store answers and has a quorum',
    access: 'public',
    status: 200,
    response: z.object({}).passthrough(),
    handler: async () => new Response(),
  },
  {
    method: 'get',
    path: '/readyz',
    summary: 'Readiness',
    access: 'public',
    status: 200,
    response: z.object({ ready: z.boolean(), reason: z.string().optional() }),
    handler: async () => new Response(),
  },
  {
    method: 'get',
    path: '/openapi.json',
    summary: 'This document',
    access: 'public',
    status: 200,
    response: z.object({}).passthrough(),
    handler: async () => new Response(),
  },
];

export function createApp(o: AppOptions): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const services: Services = {
    store: o.store,
    logger: o.logger,
    announce: o.announce,
    maxRoomsPerUser: o.maxRoomsPerUser ?? DEFAULT_MAX_ROOMS_PER_USER,
    denials: o.denials ?? new DenialBudget(),
    ...(o.metrics ? { metrics: o.metrics } : {}),
    blobs: {
      maxBytes: o.blobMaxBytes ?? DEFAULT_BLOB_MAX_BYTES,
      roomBytes: o.roomBlobBytes ?? DEFAULT_ROOM_BLOB_BYTES,
      ownerBytes: o.ownerBlobBytes ?? o.roomBlobBytes ?? DEFAULT_ROOM_BLOB_BYTES,
      uploading: new Map(),
      uploadingByOwner: new Map(),
      commits: new Map(),
    },
  };
  const openapi = openApiDocument([...PUBLIC_ROUTES, ...SIGNED_ROUTES]);

  app.use('*', requestContext(o.logger, o.metrics));
  app.use('*', normalTarget(o.metrics));
  app.use(
    '*',
    noBodyWhereNoneIsTaken(SIGNED_ROUTES, [
      ...PUBLIC_ROUTES.map((r) => r.path),
      '/livez',
      ...(o.benchRoutes ? ['/_bench/verify'] : []),
    ])
  );

  // Where request nonces are recorded: `node` (every accepted name keeps
  // them in memory), `replicated` (none does), `mixed` (the names listed).
  const noncePosture = () => {
    const local = o.localNonces?.names().filter((n) => o.authorities.has(n)) ?? [];
    const all = o.authorities.list();
    return {
      nonces: local.length === 0 ? 'replicated' : local.length === all.length ? 'node' : 'mixed',
      local_nonce_names: local,
    };
  };
  app.get('/healthz', async (c) => {
    const p = await o.health.posture();
    return c.json(
      {
        ...p,
        auth: {
          ...p.auth,
          authorities: o.authorities.list(),
          ...noncePosture(),
        },
      },
      p.status === 'ok' ? 200 : 503
    );
  });
  app.get('/readyz', async (c) => {
    const r = await o.health.ready();
    return c.json(r, r.ready ? 200 : 503);
  });
  app.get('/openapi.json', (c) => c.json(openapi));
  app.get('/livez', (c) => c.json({ live: true }));
  if (o.benchRoutes) {
    app.get('/_bench/verify', (c) => {
      const sig = verifyRequestSignature(signableRequest(c), new Uint8Array(), {});
      return c.json({ keyid: sig.keyid });
    });
  }

  const limitOf = (maxSize: number) =>
    bodyLimit({
      maxSize,
      onError: (c) => {
        // The rest of the body is never read: close rather than let Node drain it.
        c.header('connection', 'close');
        return c.json(errorBody('BODY_TOO_LARGE', `request body exceeds ${maxSize} bytes`), 413);
      },
    });
  const limit = limitOf(o.bodyLimit ?? 64 * 1024);
  const damper = new AuthDamper(o.damping ?? { limit: 20, windowMs: 60_000 }, o.metrics);
  const authOptions = {
    store: o.store,
    mode: o.authMode,
    logger: o.logger,
    damper,
    policy: { authorities: o.authorities },
    ...(o.localNonces ? { localNonces: o.localNonces } : {}),
    ...(o.notBeforeSec !== undefined ? { notBeforeSec: o.notBeforeSec } : {}),
    ...(o.claimsCurrent ? { claimsCurrent: o.claimsCurrent } : {}),
    ...(o.metrics ? { metrics: o.metrics } : {}),
  };
  const auth = signatureAuth(authOptions);
  // Blob uploads: the signed headers are verified before a byte of the body
  // is read, and the handler checks the digest while it streams the body.
  const streamAuth = signatureAuth({ ...authOptions, streamBody: true });
  const changes = o.changesPerMinute ? new ChangeBudget({ perMinute: o.changesPerMinute }) : null;
  const changeGate: MiddlewareHandler<AppEnv> = async (c, next) => {
    const actor = c.get('actor');
    if (changes && actor && !userIsActiveAdmin(actor, Date.now())) {
      const waitMs = changes.take(actor.sign_pub);
      if (waitMs > 0) {
        await audit(services, c, 'change', null, 'denied', { reason: 'rate limited' });
        c.header('Retry-After', String(Math.ceil(waitMs / 1000)));
        throw new HttpError(
          429,
          'RATE_LIMITED',
          `too many changes from this key; retry in ${Math.ceil(waitMs / 1000)} s`
        );
      }
    }
    await next();
  };
  for (const r of SIGNED_ROUTES) {
    const path = r.path.replace(/\{(\w+)\}/g, ':$1');
    // Room changes carry the owner's statement (all members): a larger room needs more.
    const lim = r.maxBody ? limitOf(Math.max(r.maxBody, o.bodyLimit ?? 0)) : limit;
    if (r.streamBody)
      app.on(r.method.toUpperCase(), path, streamAuth, changeGate, (c) => r.handler(c, services));
    else if (r.method === 'get') app.on('GET', path, lim, auth, (c) => r.handler(c, services));
    else app.on(r.method.toUpperCase(), path, lim, auth, changeGate, (c) => r.handler(c, services));
  }

  app.notFound((c) =>
    c.json(errorBody('NOT_FOUND', `no route for ${c.req.method} ${c.req.path}`), 404)
  );
  app.onError(async (err, c) => {
    const e = toHttpError(err);
    // A change whose intent is on the audit log failed: record how (best
    // effort; the intent is there either way).
    const intent = c.get('auditIntent');
    if (intent) {
      c.set('auditIntent', undefined);
      await audit(services, c, intent.action, intent.target, 'error', {
        code: e?.code ?? 'INTERNAL',
      }).catch(() => {});
    }
    if (e) {
      if (e.status >= 500)
        o.logger.error(
          { request_id: c.get('requestId'), code: e.code, err: err.message },
          'request failed'
        );
      return c.json(errorBody(e.code, e.message), e.status);
    }
    o.logger.error(
      { request_id: c.get('requestId'), err: err.message, stack: err.stack },
      'unhandled error in request'
    );
    return c.json(errorBody('INTERNAL', 'internal error'), 500);
  });
  return app;
}

export { HttpError };
