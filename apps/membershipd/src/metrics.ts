import { createServer, type Server } from 'node:http';
import { DEFAULT_HTTP_BOUNDS, capConnections, serverOptions } from './http/bounds.js';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { KvObserver, MirrorStats } from '@sealbus/store';
import { formatHostPort, type HostPort } from './util/parse.js';

/** What the auth callout decided about a connection. */
export type CalloutDecision = 'allow' | 'deny';

/**
 * Why, as a small fixed set (the free-text reason is in the log):
 * `active` (allowed), `no_proof` (no nkey or no signature over the nonce),
 * `bad_proof` (the signature does not verify), `unknown_key`, `sign_key`
 * (a registered sign_pub presented as a NATS key: never admitted), `unbound`
 * (no verified key binding for the NATS key), `revoked`,
 * `expired` (the user's grant), `unavailable` (the store did not answer),
 * `unreadable` (a request that could not be opened or decoded: never answered).
 */
export type CalloutReason =
  | 'active'
  | 'no_proof'
  | 'bad_proof'
  | 'unknown_key'
  | 'sign_key'
  | 'unbound'
  | 'revoked'
  | 'expired'
  | 'unavailable'
  | 'unreadable';

/** `blocked`: a request refused with 429; `tripped`: an address crossed the limit. */
export type DampingDecision = 'blocked' | 'tripped';

/**
 * The daemon's counters, as the parts that move them see it. Every method is
 * cheap and never throws. Components take it as an optional option: without
 * one nothing is counted.
 */
export interface Metrics {
  /** The registry the metrics live in (one per daemon, never prom-client's global one). */
  readonly registry: Registry;
  /** One answered HTTP request; `route` is the matched pattern or `unmatched`. */
  httpRequest(route: string, method: string, status: number, seconds: number): void;
  /** A request authentication refused, by its stable code (REPLAYED included). */
  signatureFailure(code: string): void;
  /** A nonce replay refused. */
  replay(): void;
  /** A request nonce recorded: in this node's memory or the replicated bucket. */
  nonce(scope: 'node' | 'replicated'): void;
  /** Reports the in-memory caches' lookups (hits, misses to the store) at each scrape. */
  caches(stats: Record<'users' | 'members', MirrorStats>): void;
  damping(decision: DampingDecision): void;
  callout(decision: CalloutDecision, reason: CalloutReason, seconds: number): void;
  /** Connections kicked after a revocation or removal. */
  kicked(connections: number): void;
  /** The store's KV observer (`OpenStoreOptions.observe`). */
  readonly kvOperation: KvObserver;
  natsConnected(up: boolean): void;
  /** The store answers and (replicated) has a leader backed by a majority: /healthz's verdict. */
  storeAvailable(up: boolean): void;
  natsReconnect(): void;
  /** The outcome of an audit append itself (not of the audited request). */
  auditAppend(outcome: 'ok' | 'error'): void;
  /** Blob bytes stored (`in`, counted when an upload is committed) or sent (`out`). */
  blobBytes(direction: 'in' | 'out', bytes: number): void;
}

/** The metric names are a contract: dashboards and alerts use them. */
export const METRIC_NAMES = Object.freeze([
  'sealbus_http_requests_total',
  'sealbus_http_request_duration_seconds',
  'sealbus_signature_failures_total',
  'sealbus_replays_total',
  'sealbus_auth_damping_total',
  'sealbus_callout_decisions_total',
  'sealbus_callout_duration_seconds',
  'sealbus_kicks_total',
  'sealbus_kv_operation_duration_seconds',
  'sealbus_nats_connected',
  'sealbus_store_available',
  'sealbus_nats_reconnects_total',
  'sealbus_audit_appends_total',
  'sealbus_blob_bytes_total',
  'sealbus_build_info',
] as const);

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
const FAST_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];

/**
 * Creates the metrics of one daemon in a registry of its own (several
 * daemons in one process do not collide), with Node's process metrics
 * prefixed `sealbus_`.
 */
export function createMetrics(version: string): Metrics {
  const registry = new Registry();
  const registers = [registry];
  collectDefaultMetrics({ register: registry, prefix: 'sealbus_' });

  const http = new Counter({
    name: 'sealbus_http_requests_total',
    help: 'HTTP requests answered, by matched route pattern, method and status',
    labelNames: ['route', 'method', 'status'] as const,
    registers,
  });
  const httpDuration = new Histogram({
    name: 'sealbus_http_request_duration_seconds',
    help: 'HTTP request latency, by matched route pattern and method',
    labelNames: ['route', 'method'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers,
  });
  const sigFail = new Counter({
    name: 'sealbus_signature_failures_total',
    help: 'request authentications refused, by error code',
    labelNames: ['code'] as const,
    registers,
  });
  const replays = new Counter({
    name: 'sealbus_replays_total',
    help: 'requests refused because their nonce was used before',
    registers,
  });
  const nonces = new Counter({
    name: 'sealbus_request_nonces_total',
    help: 'request nonces recorded (first uses), by where: node (memory of a single-node deployment) or replicated (the nonces bucket)',
    labelNames: ['scope'] as const,
    registers,
  });
  const damping = new Counter({
    name: 'sealbus_auth_damping_total',
    help: 'auth-failure damping decisions: blocked (429 sent), tripped (an address crossed the limit)',
    labelNames: ['decision'] as const,
    registers,
  });
  const callout = new Counter({
    name: 'sealbus_callout_decisions_total',
    help: 'auth callout decisions, by decision and reason',
    labelNames: ['decision', 'reason'] as const,
    registers,
  });
  const calloutDuration = new Histogram({
    name: 'sealbus_callout_duration_seconds',
    help: 'time to decide and answer one auth callout request',
    buckets: FAST_BUCKETS,
    registers,
  });
  const kicks = new Counter({
    name: 'sealbus_kicks_total',
    help: 'client connections kicked after a revocation or a member removal',
    registers,
  });
  const kv = new Histogram({
    name: 'sealbus_kv_operation_duration_seconds',
    help: 'JetStream KV operation latency, by bucket and operation',
    labelNames: ['bucket', 'op'] as const,
    buckets: FAST_BUCKETS,
    registers,
  });
  const connected = new Gauge({
    name: 'sealbus_nats_connected',
    help: "1 while the daemon's store connection to NATS is up, else 0",
    registers,
  });
  const storeUp = new Gauge({
    name: 'sealbus_store_available',
    help: '1 while the store answers and has a quorum (what /healthz checks, probed every 5 s), else 0',
    registers,
  });
  const reconnects = new Counter({
    name: 'sealbus_nats_reconnects_total',
    help: "reconnections of the daemon's store connection to NATS",
    registers,
  });
  const audit = new Counter({
    name: 'sealbus_audit_appends_total',
    help: 'audit log appends, by outcome of the append itself',
    labelNames: ['outcome'] as const,
    registers,
  });
  const blobBytes = new Counter({
    name: 'sealbus_blob_bytes_total',
    help: 'room blob bytes stored (in: committed uploads) and sent (out: downloads)',
    labelNames: ['direction'] as const,
    registers,
  });
  let cacheStats: Partial<Record<'users' | 'members', MirrorStats>> = {};
  new Counter({
    name: 'sealbus_cache_lookups_total',
    help: 'lookups of the in-memory user and member caches: hit (answered from memory) or miss (read from the store: not loaded, not proved current, or a record the store must judge)',
    labelNames: ['cache', 'result'] as const,
    registers,
    collect() {
      this.reset();
      for (const [cache, st] of Object.entries(cacheStats)) {
        this.inc({ cache, result: 'hit' }, st.hits);
        this.inc({ cache, result: 'miss' }, st.misses);
      }
    },
  });
  new Gauge({
    name: 'sealbus_build_info',
    help: 'always 1; the version is a label',
    labelNames: ['version'] as const,
    registers,
  }).set({ version }, 1);
  // Series that exist before their first event read 0, not "no data", so
  // rate() and absence alerts work from the start.
  for (const decision of ['blocked', 'tripped']) damping.inc({ decision }, 0);
  for (const outcome of ['ok', 'error']) audit.inc({ outcome }, 0);
  for (const direction of ['in', 'out']) blobBytes.inc({ direction }, 0);
  connected.set(0);
  storeUp.set(0);

  return {
    registry,
    httpRequest(route, method, status, seconds) {
      const m = METHODS.has(method) ? method : 'OTHER';
      http.inc({ route, method: m, status: String(status) });
      httpDuration.observe({ route, method: m }, seconds);
    },
    signatureFailure: (code) => sigFail.inc({ code }),
    replay: () => replays.inc(),
    nonce: (scope) => nonces.inc({ scope }),
    caches: (stats) => (cacheStats = stats),
    damping: (decision) => damping.inc({ decision }),
    callout(decision, reason, seconds) {
      callout.inc({ decision, reason });
      calloutDuration.observe(seconds);
    },
    kicked: (n) => {
      if (n > 0) kicks.inc(n);
    },
    kvOperation: (e) => kv.observe({ bucket: e.bucket, op: e.op }, e.seconds),
    natsConnected: (up) => connected.set(up ? 1 : 0),
    storeAvailable: (up) => storeUp.set(up ? 1 : 0),
    natsReconnect: () => reconnects.inc(),
    auditAppend: (outcome) => audit.inc({ outcome }),
    blobBytes: (direction, bytes) => {
      if (bytes > 0) blobBytes.inc({ direction }, bytes);
    },
  };
}

export interface MetricsServer {
  /** The port it listens on (the one asked for, or the one the OS picked for 0). */
  readonly port: number;
  close(): Promise<void>;
}

/**
 * A separate plain-HTTP listener for Prometheus: `GET /metrics` in the text
 * exposition format, JSON 404 for anything else. No authentication, so it
 * belongs on loopback (or behind something that guards it).
 */
export function serveMetrics(metrics: Metrics, at: HostPort): Promise<MetricsServer> {
  // The same bounds as the API listener, a smaller cap: scrapers are few.
  const bounds = { ...DEFAULT_HTTP_BOUNDS, maxConnections: 64, maxConnectionsPerAddress: 16 };
  const server = createServer(serverOptions(bounds), (req, res) => {
    // A body is never read here: close rather than drain it.
    if (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'])
      res.setHeader('connection', 'close');
    const path = (req.url ?? '/').split('?')[0];
    const json = (status: number, code: string, message: string, headers = {}) => {
      res.writeHead(status, { 'content-type': 'application/json', ...headers });
      res.end(JSON.stringify({ error: { code, message } }));
    };
    if (path !== '/metrics') return json(404, 'NOT_FOUND', `no route for ${req.method} ${path}`);
    if (req.method !== 'GET' && req.method !== 'HEAD')
      return json(405, 'METHOD_NOT_ALLOWED', 'use GET /metrics', { allow: 'GET, HEAD' });
    metrics.registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': metrics.registry.contentType });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (err: unknown) => json(500, 'INTERNAL', `cannot collect metrics: ${(err as Error).message}`)
    );
  });
  capConnections(server, bounds);
  return new Promise((resolve, reject) => {
    server.once('error', (err) =>
      reject(
        new Error(`cannot listen on ${formatHostPort(at.host, at.port)} (metrics): ${err.message}`)
      )
    );
    server.listen(at.port, at.host, () => {
      resolve({ port: (server.address() as AddressInfo).port, close: () => close(server) });
    });
  });
}

function close(server: Server): Promise<void> {
  return new Promise((r) => {
    server.close(() => r());
    // A scraper's keep-alive connection would hold close() open.
    server.closeAllConnections();
  });
}
