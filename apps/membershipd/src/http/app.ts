import { Hono } from 'hono';
import type { Logger } from '../log.js';
import { HttpError, errorBody } from './errors.js';

/** The daemon's self-description served by `/healthz` (no secrets). */
export interface Posture {
  status: 'ok' | 'unavailable';
  version: string;
  uptime_s: number;
  store: { backend: 'jetstream-kv'; replicas: number; reachable: boolean };
  auth: { mode: 'enforce' | 'soft' | 'off' };
  nats: { embedded: boolean; connected: boolean; server_version: string | null };
  tls: { http: boolean; nats: boolean };
}

export interface HealthProbe {
  posture(): Promise<Posture>;
  /** Ready to serve: started, store reachable, not shutting down. */
  ready(): Promise<{ ready: boolean; reason?: string }>;
}

export function createApp(deps: { health: HealthProbe; logger: Logger }): Hono {
  const app = new Hono();

  app.get('/healthz', async (c) => {
    const p = await deps.health.posture();
    return c.json(p, p.status === 'ok' ? 200 : 503);
  });

  app.get('/readyz', async (c) => {
    const r = await deps.health.ready();
    return c.json(r, r.ready ? 200 : 503);
  });

  app.notFound((c) =>
    c.json(errorBody('NOT_FOUND', `no route for ${c.req.method} ${c.req.path}`), 404)
  );

  app.onError((err, c) => {
    if (err instanceof HttpError) return c.json(errorBody(err.code, err.message), err.status);
    deps.logger.error(
      { err, method: c.req.method, path: c.req.path },
      'unhandled error in request'
    );
    return c.json(errorBody('INTERNAL', 'internal error'), 500);
  });

  return app;
}
