import type { NatsConnection } from 'nats';
import type { BucketReplication, MembershipStore } from '@sealbus/store';
import type { HealthProbe, Posture } from '../http/app.js';
import { VERSION } from '../version.js';
import type { HttpBounds } from '../http/bounds.js';

export interface HealthState {
  nc: NatsConnection;
  store: MembershipStore;
  embedded: boolean;
  authMode: Posture['auth']['mode'];
  tls: Posture['tls'];
  http: HttpBounds;
  /** The embedded store is encrypted at rest. */
  atRest: boolean;
  /** False while NATS reports the connection as down. */
  natsConnected: () => boolean;
  /** This node's name, for its write probe's key. */
  nodeName: string;
  /** Free bytes on the filesystem of the embedded store, or null (external NATS). */
  diskFree: () => number | null;
  stopping: () => boolean;
}

const PROBE_TTL_MS = 1_000;
/**
 * Below this much free space the store's filesystem counts as full: some
 * writes may still fit in a block's last page, others (a new block, the
 * audit log) do not, and which is which is luck.
 */
export const LOW_DISK_BYTES = 4 * 1024 * 1024;

/**
 * Health with a store probe cached for a second and shared by concurrent
 * callers, so a burst of health checks costs one JetStream call.
 */
export function createHealth(s: HealthState): HealthProbe {
  const startedAt = Date.now();
  let last: { at: number; rep: BucketReplication | null } | undefined;
  let inflight: Promise<BucketReplication | null> | undefined;
  let lastWrite: { at: number; full: boolean } | undefined;
  let writing: Promise<boolean> | undefined;
  /**
   * True when the store refuses writes for lack of space (a full disk, a
   * storage limit): every signed request would fail (its nonce is a write),
   * so the node is not usable though it answers. Other write failures
   * (timeouts during an election) are left to the quorum check.
   */
  const storageFull = (): Promise<boolean> => {
    // statfs is cheap: looked at every time, before any cached write probe.
    const free = s.diskFree();
    if (free !== null && free < LOW_DISK_BYTES) return Promise.resolve(true);
    if (lastWrite && Date.now() - lastWrite.at < PROBE_TTL_MS)
      return Promise.resolve(lastWrite.full);
    writing ??= s.store
      .probeWrite(s.nodeName)
      .then(
        () => false,
        (err: { code?: string }) => err?.code === 'FULL'
      )
      .then((full) => {
        lastWrite = { at: Date.now(), full };
        writing = undefined;
        return full;
      });
    return writing;
  };

  /** The users bucket's replication, or null when the store does not answer. */
  const probe = (): Promise<BucketReplication | null> => {
    if (last && Date.now() - last.at < PROBE_TTL_MS) return Promise.resolve(last.rep);
    inflight ??= s.store
      .replication('users')
      .catch(() => null)
      .then((rep) => {
        last = { at: Date.now(), rep };
        inflight = undefined;
        return rep;
      });
    return inflight;
  };
  /**
   * The store can take reads and writes: it answers, and (replicated) its
   * stream has a leader backed by a majority. A survivor without quorum
   * still answers stream info from its own copy (leader null): that is not
   * a store anyone can use.
   */
  const usable = (rep: BucketReplication | null): boolean =>
    rep !== null && rep.leader !== null && rep.current > rep.replicas / 2;

  return {
    async posture(): Promise<Posture> {
      const rep = s.stopping() ? null : await probe();
      const reachable = rep !== null;
      const full = usable(rep) ? await storageFull() : null;
      return {
        status: usable(rep) && !full ? 'ok' : 'unavailable',
        ...(reachable && !usable(rep) ? { reason: 'no store quorum' } : {}),
        ...(full ? { reason: 'storage full' } : {}),
        version: VERSION,
        uptime_s: Math.round((Date.now() - startedAt) / 1000),
        store: {
          backend: 'jetstream-kv',
          replicas: s.store.replicas,
          reachable,
          leader: rep?.leader ?? null,
          current: rep?.current ?? null,
          writable: full === null ? null : !full,
        },
        auth: { mode: s.authMode },
        nats: {
          embedded: s.embedded,
          connected: s.natsConnected(),
          server_version: s.nc.info?.version ?? null,
        },
        tls: s.tls,
        at_rest: s.atRest,
        http: {
          headers_timeout_ms: s.http.headersTimeoutMs,
          request_timeout_ms: s.http.requestTimeoutMs,
          max_connections: s.http.maxConnections,
          max_connections_per_address: s.http.maxConnectionsPerAddress,
        },
      };
    },
    async ready() {
      if (s.stopping()) return { ready: false, reason: 'shutting down' };
      const rep = await probe();
      if (rep === null) return { ready: false, reason: 'store unreachable' };
      if (!usable(rep)) return { ready: false, reason: 'no store quorum' };
      if (await storageFull()) return { ready: false, reason: 'storage full' };
      return { ready: true };
    },
  };
}
