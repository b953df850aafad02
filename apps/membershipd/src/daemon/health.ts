import type { NatsConnection } from 'nats';
import type { MembershipStore } from '@sealbus/store';
import type { HealthProbe, Posture } from '../http/app.js';
import { VERSION } from '../version.js';

export interface HealthState {
  nc: NatsConnection;
  store: MembershipStore;
  embedded: boolean;
  authMode: Posture['auth']['mode'];
  tls: Posture['tls'];
  /** False while NATS reports the connection as down. */
  natsConnected: () => boolean;
  stopping: () => boolean;
}

const PROBE_TTL_MS = 1_000;

/**
 * Health with a store probe cached for a second and shared by concurrent
 * callers, so a burst of health checks costs one JetStream call.
 */
export function createHealth(s: HealthState): HealthProbe {
  const startedAt = Date.now();
  let last: { at: number; ok: boolean } | undefined;
  let inflight: Promise<boolean> | undefined;

  const storeReachable = (): Promise<boolean> => {
    if (last && Date.now() - last.at < PROBE_TTL_MS) return Promise.resolve(last.ok);
    inflight ??= s.store
      .replication('users')
      .then(
        () => true,
        () => false
      )
      .then((ok) => {
        last = { at: Date.now(), ok };
        inflight = undefined;
        return ok;
      });
    return inflight;
  };

  return {
    async posture(): Promise<Posture> {
      const reachable = !s.stopping() && (await storeReachable());
      return {
        status: reachable ? 'ok' : 'unavailable',
        version: VERSION,
        uptime_s: Math.round((Date.now() - startedAt) / 1000),
        store: { backend: 'jetstream-kv', replicas: s.store.replicas, reachable },
        auth: { mode: s.authMode },
        nats: {
          embedded: s.embedded,
          connected: s.natsConnected(),
          server_version: s.nc.info?.version ?? null,
        },
        tls: s.tls,
      };
    },
    async ready() {
      if (s.stopping()) return { ready: false, reason: 'shutting down' };
      if (!(await storeReachable())) return { ready: false, reason: 'store unreachable' };
      return { ready: true };
    },
  };
}
