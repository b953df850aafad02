import { X509Certificate, createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { existsSync, readFileSync, statfsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo, Server } from 'node:net';
import { resolve } from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import { connect, nkeyAuthenticator, type NatsConnection } from 'nats';
import type { KeyPair } from 'nkeys.js';
import { loadOrCreateIdentity, writeFileAtomic } from '@sealbus/crypto';
import { NatsServerProcess, reapOrphan, renderNatsConfig } from '@sealbus/natsd';
import { MembershipStore, StoreError, withBootstrapRetry } from '@sealbus/store';
import { offlineHolder } from '../backup/offline.js';
import { recoverSwap } from '../backup/swap.js';
import { AppendService } from '../dataplane/append.js';
import { CalloutService, userOfNatsKey } from '../dataplane/callout.js';
import { loadOrCreateCalloutKeys, nodeUsers } from '../dataplane/keys.js';
import { Reactor, announce, type Change } from '../dataplane/reactor.js';
import { LogThrottle } from '../logthrottle.js';
import {
  DEFAULT_HTTP_BOUNDS,
  blobUploadExtraMs,
  capConnections,
  serverOptions,
  type HttpBounds,
} from '../http/bounds.js';
import { createApp } from '../http/app.js';
import { DEFAULT_BLOB_MAX_BYTES } from '../http/routes/blobs.js';
import { Authorities } from '../http/authority.js';
import { LocalNonces } from '../http/localnonces.js';
import { NonceRegistry } from '../http/nonceregistry.js';
import type { DampingOptions } from '../http/damping.js';
import type { AuthMode } from '../http/context.js';
import type { Logger } from '../log.js';
import { createMetrics, serveMetrics } from '../metrics.js';
import { formatHostPort, type HostPort } from '../util/parse.js';
import { VERSION } from '../version.js';
import {
  AtRestError,
  checkStore,
  markInitialized,
  writeStoreMarker,
  type AtRestKey,
} from './atrest.js';
import { bootstrapAdmin } from './bootstrap.js';
import { createHealth } from './health.js';
import {
  AUTH_TIMEOUT_S,
  DEFAULT_APP_MAX_BYTES,
  embeddedNatsConfig,
  type ClusterOptions,
  type TlsFiles,
  type JetStreamSync,
} from './natsconfig.js';
import { writeNodeInfo } from './nodefile.js';
import { CLIENT_AUTH, SERVER_AUTH, pemCertificates, verifyRenewedPair } from './tlscheck.js';
import { dataPaths, legacyStoreLayout, type DataPaths } from './paths.js';

export interface DaemonOptions {
  dataDir: string;
  /** How often expired memberships are looked for (their rooms need a rekey); default 15 s. */
  expirySweepMs?: number;
  http: HostPort;
  /** Client port of the embedded nats-server. */
  natsPort: number;
  /** External NATS: no child is started; its config must match the embedded one (accounts, callout). */
  natsUrl?: string;
  internalIdFile?: string;
  calloutKeyFile?: string;
  replicas: number;
  bootstrapBudgetMs: number;
  natsServerBin?: string;
  authMode: AuthMode;
  /** Lifetime of user JWTs issued by the auth callout, seconds. */
  userJwtTtlSec: number;
  /** Client listen address of the embedded nats-server (default 127.0.0.1). */
  natsHost?: string;
  serverName?: string;
  /** TLS for the NATS client port and HTTPS for the control plane. */
  tls?: TlsFiles;
  clientAdvertise?: string;
  cluster?: ClusterOptions;
  /** Changes one non-admin key may make a minute (0: unlimited). */
  changesPerMinute?: number;
  /** Limits of the HTTP listener (defaults: DEFAULT_HTTP_BOUNDS). */
  httpBounds?: Partial<HttpBounds>;
  /** Admin #0's identity (default DATA/admin.id); a cluster shares one. */
  adminIdFile?: string;
  benchRoutes?: boolean;
  /** Auth-failure damping (see AuthDamper). */
  damping?: DampingOptions;
  /** Serve Prometheus metrics on a separate plain-HTTP listener here (off when absent). */
  metrics?: HostPort;
  /** JetStream storage cap of account APP (room streams), bytes. */
  appMaxBytes?: number;
  /** `appMaxBytes` was asked for (not the default): never lowered, refused when it cannot fit. */
  appMaxBytesGiven?: boolean;
  /** JetStream's sync policy for the embedded nats-server (default `always`). */
  jetstreamSync?: JetStreamSync;
  /** Encrypt the embedded store at rest with this key (embedded nats-server only). */
  atRestKey?: AtRestKey | null;
  /** Extra names a signed request's `@authority` may be (`--authority`); the listen address is always one. */
  authorities?: string[];
  /**
   * Record every request nonce in the replicated bucket even when this node
   * is the whole deployment (`--replicated-nonces`): a node-local record is
   * lost on restart, so requests signed before a start are refused then.
   */
  replicatedNonces?: boolean;
  /** Rooms one user may own (default 100). */
  maxRoomsPerUser?: number;
  /** Size cap of each room stream created (default 256 MiB). */
  roomMaxBytes?: number;
  /** Largest blob accepted (default 64 MiB). */
  blobMaxBytes?: number;
  /** Bytes of blobs one room may hold (default 1 GiB). */
  roomBlobBytes?: number;
  /** Bytes of blobs all rooms of one owner may hold (default: a tenth of `appMaxBytes`). */
  ownerBlobBytes?: number;
  /**
   * A stop asked for during start-up (SIGTERM while waiting for nats-server
   * or a store quorum): start gives up at its next wait, undoes what it
   * started and throws the signal's reason.
   */
  signal?: AbortSignal;
  logger: Logger;
}

type Fetch = Parameters<typeof serve>[0]['fetch'];

/**
 * What the HTTP listener answers until the node is ready: alive, not ready,
 * every other route 503 `STARTING` (clients go to another node).
 */
export function startingFetch(req: Request): Response {
  const path = new URL(req.url).pathname;
  const json = (body: unknown, status: number) =>
    new Response(JSON.stringify(body), {
      status,
      headers: { 'content-type': 'application/json', 'retry-after': '1' },
    });
  const why = 'membershipd is starting: it waits for nats-server and a store quorum';
  if ((req.method === 'GET' || req.method === 'HEAD') && path === '/livez')
    return json({ live: true, starting: true }, 200);
  if (req.method === 'GET' && path === '/readyz')
    return json({ ready: false, reason: 'starting' }, 503);
  if (req.method === 'GET' && path === '/healthz')
    return json({ status: 'starting', reason: why }, 503);
  return json({ error: { code: 'STARTING', message: why } }, 503);
}

/** Exit codes of `membershipd serve`. */
export const EXIT = Object.freeze({ OK: 0, START_FAILED: 1, NATS_DIED: 3 });

type Step = () => Promise<unknown>;

/**
 * One membershipd node: supervises its nats-server child (embedded mode),
 * holds its three NATS connections (store, callout service, system), answers
 * the auth callout, reacts to membership changes, serves HTTP. `done`
 * resolves with the process exit code once the daemon has fully stopped.
 */
export class Daemon {
  readonly paths: DataPaths;
  readonly httpUrl: string;
  readonly natsUrl: string;
  /** `http://host:port` of the metrics listener (GET /metrics), or null when off. */
  readonly metricsUrl: string | null;
  readonly done: Promise<number>;
  readonly #logger: Logger;
  /** Shutdown steps, in the order they must run. */
  readonly #shutdown: Step[];
  readonly #lifecycle: { stopping: boolean };
  readonly #reloadTls: () => Promise<string[]>;
  #finish!: (code: number) => void;

  private constructor(p: {
    paths: DataPaths;
    httpUrl: string;
    natsUrl: string;
    metricsUrl: string | null;
    logger: Logger;
    shutdown: Step[];
    lifecycle: { stopping: boolean };
    child: NatsServerProcess | undefined;
    reloadTls: () => Promise<string[]>;
  }) {
    this.#reloadTls = p.reloadTls;
    this.paths = p.paths;
    this.httpUrl = p.httpUrl;
    this.natsUrl = p.natsUrl;
    this.metricsUrl = p.metricsUrl;
    this.#logger = p.logger;
    this.#shutdown = p.shutdown;
    this.#lifecycle = p.lifecycle;
    this.done = new Promise((r) => (this.#finish = r));
    p.child?.exited.then((exit) => {
      if (this.#lifecycle.stopping) return;
      this.#logger.fatal(
        { code: exit.code, signal: exit.signal, last_lines: exit.lastLines },
        'nats-server exited unexpectedly; stopping membershipd'
      );
      void this.stop(EXIT.NATS_DIED);
    });
  }

  static async start(o: DaemonOptions): Promise<Daemon> {
    const log = o.logger;
    // Node-local nonces refuse requests signed before this moment: the
    // process before this one may have accepted them, and it has stopped
    // serving by now (its nats-server held the ports this one needs).
    const startedAtMs = Date.now();
    const paths = dataPaths(resolve(o.dataDir));
    await mkdir(paths.natsDir, { recursive: true, mode: 0o700 });
    // Undo steps for a failed start, and the same steps (reversed) for stop.
    const undo: Step[] = [];
    const startedAt = Date.now();
    // Account APP's cap as nats-server gets it (an external server: as given).
    let appMaxBytes = o.appMaxBytes ?? DEFAULT_APP_MAX_BYTES;
    // Counted from the start even though the listener opens last: nothing
    // is lost between the first connection and the first scrape.
    const metrics = o.metrics ? createMetrics(VERSION) : undefined;
    const httpBounds: HttpBounds = { ...DEFAULT_HTTP_BOUNDS, ...o.httpBounds };
    const signal = o.signal;
    try {
      // Listening from the first second: /livez answers (and everything else
      // says STARTING) while the node waits for nats-server and a quorum.
      let serving: Fetch = startingFetch;
      const server = await listen(
        (req, env) => serving(req, env),
        o.http,
        httpBounds,
        o.tls,
        o.blobMaxBytes ?? DEFAULT_BLOB_MAX_BYTES
      );
      undo.push(() => closeHttp(server));
      const addr = server.address() as AddressInfo;
      const httpUrl = `${o.tls ? 'https' : 'http'}://${formatHostPort(localHost(o.http.host), addr.port)}`;
      log.info({ http_url: httpUrl }, 'HTTP listening (starting: /livez only)');
      signal?.throwIfAborted();
      const internal = await loadOrCreateIdentity(o.internalIdFile ?? paths.internalId);
      if (internal.created)
        log.info({ file: o.internalIdFile ?? paths.internalId }, 'created internal identity');
      const users = nodeUsers(internal.identity);
      const serverName = o.serverName ?? `sealbus-${internal.identity.signPubHex.slice(0, 12)}`;
      const callout = await loadOrCreateCalloutKeys(o.calloutKeyFile ?? paths.calloutKey);
      if (callout.created)
        log.info({ file: o.calloutKeyFile ?? paths.calloutKey }, 'created auth callout keys');

      let child: NatsServerProcess | undefined;
      let natsUrl = o.natsUrl;
      const natsUrlGiven = natsUrl !== undefined;
      const atRestKey = o.atRestKey ?? null;
      if (natsUrl && atRestKey) {
        throw new AtRestError(
          'at-rest encryption applies to the embedded nats-server; an external one is configured on its own'
        );
      }
      if (!natsUrl) {
        const holder = await offlineHolder(paths);
        if (holder !== null) {
          throw new Error(
            `an offline backup or restore (pid ${holder}) is using ${paths.dataDir}; start the node when it is done`
          );
        }
        // A restore or migration killed half-way through its swap: finished or undone.
        const recovered = await recoverSwap(paths);
        if (recovered) log.warn({ data_dir: paths.dataDir }, recovered);
        const legacy = legacyStoreLayout(paths);
        if (legacy) throw new Error(legacy);
      }
      // Checked before nats-server opens the store: a wrong key is refused
      // without anything read or written.
      const storeState = natsUrl
        ? null
        : await checkStore(paths.storeMarker, paths.jetstreamDir, atRestKey);
      // A new store gets its marker (encrypted or not, the key's check value)
      // before nats-server writes its first byte. An initialised store whose
      // marker was lost gets a new one only once its buckets opened with the
      // key given (a wrong key must not be recorded as the right one).
      let marker = storeState?.marker ?? null;
      if (storeState && !marker && !storeState.initialized) {
        marker = await writeStoreMarker(paths.storeMarker, atRestKey, false);
        log.info({ file: paths.storeMarker, at_rest: atRestKey !== null }, 'wrote store marker');
      }
      if (!natsUrl) {
        const config = embeddedNatsConfig({
          paths,
          host: o.natsHost ?? '127.0.0.1',
          port: o.natsPort,
          ...(o.tls ? { tls: o.tls } : {}),
          ...(o.clientAdvertise ? { clientAdvertise: o.clientAdvertise } : {}),
          ...(o.cluster ? { cluster: o.cluster } : {}),
          users: {
            internal: users.internal.getPublicKey(),
            app: users.app.getPublicKey(),
            service: users.service.getPublicKey(),
            system: users.system.getPublicKey(),
          },
          callout: {
            issuer: callout.keys.issuer.getPublicKey(),
            xkey: callout.keys.xkey.getPublicKey(),
          },
          serverName,
          atRest: atRestKey !== null,
          appMaxBytes: (appMaxBytes = fitAppMaxBytes(
            o.appMaxBytes ?? DEFAULT_APP_MAX_BYTES,
            o.appMaxBytesGiven ?? false,
            paths.natsDir,
            log
          )),
          ...(o.jetstreamSync !== undefined ? { jetstreamSync: o.jetstreamSync } : {}),
        });
        // Before this node's config replaces the one on disk: a membershipd
        // still serving this data dir is refused here, and its nats-server
        // must not reload a config written by another process.
        const orphan = await reapOrphan(
          paths.natsPidFile,
          paths.natsConfig,
          o.natsServerBin ? { bin: o.natsServerBin } : {}
        );
        if (orphan)
          log.warn({ pid: orphan }, 'stopped a nats-server left running by a previous membershipd');
        await writeFileAtomic(paths.natsConfig, renderNatsConfig(config), { mode: 0o600 });
        const natsLog = log.child({ component: 'nats-server' });
        const natsRefusals = new LogThrottle({
          summary: (kind, more, intervalMs) =>
            natsLog.info(
              { kind, more, interval_s: intervalMs / 1000 },
              'nats-server: refusals (more of this kind)'
            ),
        });
        undo.push(async () => natsRefusals.stop());
        child = await NatsServerProcess.start({
          configFile: paths.natsConfig,
          detached: true,
          env: {
            ...(atRestKey ? atRestKey.childEnv() : {}),
            ...(o.cluster?.secret ? o.cluster.secret.childEnv(o.cluster.routes) : {}),
          },
          ...(o.natsServerBin ? { bin: o.natsServerBin } : {}),
          onLog: (l) => {
            // Refusals a client can cause at will are debug lines, and one
            // line per kind and interval with a count at info.
            const kind = refusalKind(l.msg);
            if (!kind) return natsLog[l.level === 'fatal' ? 'error' : l.level](l.msg);
            if (natsRefusals.hit(kind)) natsLog.info({ kind }, l.msg);
            else natsLog.debug(l.msg);
          },
        });
        const proc = child;
        undo.push(() => proc.stop());
        signal?.throwIfAborted();
        natsUrl = `${o.tls ? 'tls' : 'nats'}://${localHost(o.natsHost)}:${o.natsPort}`;
        log.info({ nats_pid: child.pid, url: natsUrl }, 'nats-server ready');
      }

      const open = async (name: string, kp: KeyPair): Promise<NatsConnection> => {
        const nc = await connect({
          servers: natsUrl!.split(','),
          name: `membershipd-${name}`,
          authenticator: nkeyAuthenticator(kp.getSeed()),
          maxReconnectAttempts: -1,
          reconnectTimeWait: 250,
          timeout: 5_000,
          // A nats-server that stops answering (hung, stopped, cut off) is
          // noticed within ~15 s, not the client's default of minutes.
          pingInterval: 5_000,
          maxPingOut: 2,
          ...(o.tls?.ca ? { tls: { caFile: o.tls.ca } } : o.tls ? { tls: {} } : {}),
        });
        undo.push(async () => {
          await Promise.race([
            nc.drain().catch(() => {}),
            new Promise((r) => setTimeout(r, 5_000)),
          ]);
          await nc.close().catch(() => {});
        });
        return nc;
      };
      const nc = await open('store', users.internal);
      let natsConnected = true;
      metrics?.natsConnected(true);
      void (async () => {
        for await (const s of nc.status()) {
          if (s.type === 'disconnect') {
            natsConnected = false;
            metrics?.natsConnected(false);
          }
          if (s.type === 'reconnect') {
            natsConnected = true;
            metrics?.natsConnected(true);
            metrics?.natsReconnect();
          }
          if (s.type === 'disconnect' || s.type === 'reconnect' || s.type === 'error') {
            log.warn({ event: s.type, data: String(s.data) }, 'nats connection');
          }
        }
      })();
      const appNc = await open('app', users.app);
      const sys = await open('system', users.system);
      const svc = await open('callout', users.service);

      // A single node whose store was initialised before opens its buckets
      // bind-only: were one missing (a wrong at-rest key hides them all, or
      // the data is gone), creating it empty would bury the real one for good.
      // Cluster peers create-if-missing: a peer's copy may lag the meta group.
      const bindOnly = (storeState?.initialized ?? false) && !o.cluster;
      let store: MembershipStore;
      try {
        store = await MembershipStore.open(nc, {
          replicas: o.replicas,
          bootstrapBudgetMs: o.bootstrapBudgetMs,
          bindOnly,
          app: appNc,
          logger: log,
          ...(signal ? { signal } : {}),
          ...(o.roomMaxBytes !== undefined ? { roomMaxBytes: o.roomMaxBytes } : {}),
          ...(metrics ? { observe: metrics.kvOperation } : {}),
        });
      } catch (err) {
        if (bindOnly && err instanceof StoreError && err.code === 'NOT_INITIALIZED') {
          throw new AtRestError(
            `wrong at-rest key or missing data: the store in ${paths.jetstreamDir} was initialised before, ` +
              `but ${err.message.replace(/:.*$/, '')}; refusing to create it empty. ` +
              'Start with the right key, or restore the data dir from a backup (docs/RUNBOOK.md)'
          );
        }
        throw err;
      }
      if (marker && !marker.initialized) await markInitialized(paths.storeMarker, marker);
      if (storeState && !marker) {
        await writeStoreMarker(paths.storeMarker, atRestKey, true);
        log.info(
          { file: paths.storeMarker, at_rest: atRestKey !== null },
          'rewrote a lost store marker'
        );
      }
      if (o.replicas > 1) {
        // Persisted rooms created while a peer was down have fewer replicas:
        // raised as soon as the peers can hold them (checked every 10 s; the
        // streams are scanned for such rooms at start and every 10 min).
        let warnedAt = 0;
        const raise = async () => {
          const r = await store.rooms.raiseReplicas();
          for (const room of r.raised)
            log.info({ room, replicas: o.replicas }, 'room stream replicas raised');
          // Still short of replicas: said once a minute, with the reason.
          if (r.waiting > 0 && Date.now() - warnedAt > 60_000) {
            warnedAt = Date.now();
            log.warn(
              { rooms: r.waiting, replicas: o.replicas, error: r.lastError },
              'room streams below their replica count (a peer is missing); raised when it is back'
            );
          }
        };
        const scan = () => void store.rooms.findUnderReplicated().catch(() => 0);
        scan();
        const raiseTimer = setInterval(() => void raise().catch(() => {}), 10_000);
        const scanTimer = setInterval(scan, 600_000);
        raiseTimer.unref();
        scanTimer.unref();
        undo.push(async () => {
          clearInterval(raiseTimer);
          clearInterval(scanTimer);
        });
      }
      // Every membership in memory (a watch), so the callout's decision costs
      // the same whatever the user's room count; never staler than a scan.
      const memberCache = store.startMemberCache((err) =>
        log.warn(
          { err: err.message },
          'member cache watch ended; restarting it (callouts scan meanwhile)'
        )
      );
      undo.push(() => memberCache.stop());
      // Every user record in memory, for signed requests: served while a
      // heartbeat proves it current within USER_CACHE_BOUND_MS (a revocation
      // older than that is seen everywhere), else the store is read.
      const userCache = store.startUserCache((err) =>
        log.warn(
          { err: err.message },
          'user cache watch ended; restarting it (signed requests read the store meanwhile)'
        )
      );
      undo.push(() => userCache.stop());
      metrics?.caches({ users: userCache.stats, members: memberCache.stats });
      const calloutService = new CalloutService({
        nc: svc,
        store,
        keys: callout.keys,
        logger: log,
        jwtTtlSec: o.userJwtTtlSec,
        storeBudgetMs: (AUTH_TIMEOUT_S - 2) * 1_000,
        ...(metrics ? { metrics } : {}),
      });
      calloutService.start();
      await svc.flush();
      undo.push(() => calloutService.stop());
      const appendService = new AppendService({
        control: nc,
        app: appNc,
        store,
        resolveUser: (nkey) => userOfNatsKey(store, nkey),
        logger: log,
      });
      appendService.start();
      await nc.flush();
      undo.push(() => appendService.stop());
      // A change forgets cached append grants on this node before the
      // request that made it is answered (other nodes: when it reaches them).
      const forgetGrants = (change: Change): void => {
        if (change.type === 'user.revoked') appendService.forget(change.sign_pub);
        if (change.type === 'member.removed') appendService.forget(change.sign_pub, change.room);
      };
      const reactor = new Reactor({
        nc,
        app: appNc,
        sys,
        store,
        logger: log,
        onChange: (change) => forgetGrants(change),
        // The embedded cluster's size; an external nats-server: unknown (the ping waits its bound).
        ...(natsUrlGiven ? {} : { servers: o.cluster ? o.cluster.routes.length + 1 : 1 }),
        ...(metrics ? { metrics } : {}),
      });
      reactor.start();
      reactor.startExpirySweep(o.expirySweepMs);
      undo.push(() => reactor.stop());

      const admin = await withBootstrapRetry(
        'bootstrap admin #0',
        startedAt + o.bootstrapBudgetMs,
        log,
        () => bootstrapAdmin(store, o.adminIdFile ?? paths.adminId, log),
        signal
      );
      signal?.throwIfAborted();
      if (admin?.created) {
        log.info({ sign_pub: admin.signPub, identity_file: admin.path }, 'created admin #0');
        process.stderr.write(
          `membershipd: created admin #0, identity in ${admin.path} (secret, mode 0600)\n` +
            `membershipd: admin #0 sign_pub ${admin.signPub}\n`
        );
      }

      const lifecycle = { stopping: false };
      const health = createHealth({
        http: httpBounds,
        nc,
        store,
        embedded: child !== undefined,
        authMode: o.authMode,
        tls: { http: o.tls !== undefined, nats: o.tls !== undefined },
        atRest: atRestKey !== null,
        natsConnected: () => natsConnected,
        stopping: () => lifecycle.stopping,
        nodeName: serverName,
        diskFree: () => {
          if (!child) return null;
          try {
            const f = statfsSync(paths.jetstreamDir);
            return f.bavail * f.bsize;
          } catch {
            return null;
          }
        },
      });
      if (metrics) {
        // The gauge alerts read: the same verdict as /healthz, every 5 s.
        const probe = () =>
          void health
            .posture()
            .then((p) => metrics.storeAvailable(p.status === 'ok'))
            .catch(() => metrics.storeAvailable(false));
        probe();
        const probeTimer = setInterval(probe, 5_000);
        probeTimer.unref();
        undo.push(async () => clearInterval(probeTimer));
      }
      const authorities = new Authorities(o.authorities ?? []);
      // Where request nonces are recorded. A node that is the whole
      // deployment (its own nats-server, no cluster) is the only place a
      // request can be presented: every name keeps them in memory. A
      // cluster node keeps in memory those of the names only it answers to
      // (claimed in the nonces bucket; see NonceRegistry); an external
      // nats-server or --replicated-nonces: all in the replicated bucket.
      const nonceScope: 'node' | 'claimed' | 'replicated' =
        child === undefined || o.replicatedNonces ? 'replicated' : o.cluster ? 'claimed' : 'node';
      let localNonces: LocalNonces | undefined;
      // The first start after a restore: the restored nonces bucket lacks
      // the requests the node served after the backup was made, so nothing
      // signed before this start is accepted, whatever the nonce scope.
      // (One signed ahead of the clock and served just before the restore
      // may still pass once: docs/SECURITY.md.)
      const restored = existsSync(paths.restoredMarker);
      if (restored) log.info('first start after a restore: requests signed before it are refused');
      const notBeforeSec = Math.ceil(startedAtMs / 1000);
      if (nonceScope !== 'replicated') {
        // What the process before left in the bucket (requests signed ahead
        // of its clock) is remembered here before anything is served. A
        // store that cannot list it now (a cluster electing leaders right
        // after a restart): tried for 10 s, then every nonce goes to the
        // bucket for this process's life.
        let keys: string[] | undefined;
        for (const until = Date.now() + 10_000; ;) {
          try {
            keys = await store.nonceKeys();
            break;
          } catch (err) {
            if (Date.now() > until) {
              log.warn(
                { err: (err as Error).message },
                'request nonces in the bucket cannot be read: every first use is checked there too'
              );
              break;
            }
            await new Promise((r) => setTimeout(r, 250));
          }
        }
        localNonces = new LocalNonces({
          maxAgeSec: 300,
          skewSec: 30,
          startedAtMs: notBeforeSec * 1000,
        });
        if (keys) {
          const loaded = localNonces.preload(keys);
          log.debug({ loaded }, 'request nonces from the bucket loaded');
        } else localNonces.assumeBucketHolds();
      }
      // Every node claims its names in the nonces bucket, whatever its
      // scope: another daemon sharing this store (an external nats-server,
      // a peer given this node's address) must see which names this one
      // keeps in memory, and refuse them. Keyed by the embedded
      // nats-server's name (one per store: the same node started again, or
      // restored elsewhere, replaces its own claims); a daemon on an
      // external nats-server adds its host and data dir.
      const registry = new NonceRegistry(
        store.bucket('nonces'),
        child
          ? serverName
          : `${serverName}@${hostname()}:${createHash('sha256').update(resolve(paths.dataDir)).digest('hex').slice(0, 12)}`,
        authorities,
        log,
        { claims: !localNonces ? 'none' : nonceScope === 'node' ? 'all' : 'address' }
      );
      const localNonceOption = localNonces && {
        store: localNonces,
        covers: (a: string) => registry.covers(a),
        names: () => registry.local(),
      };
      const app = createApp({
        health,
        authorities,
        ...(localNonceOption ? { localNonces: localNonceOption } : {}),
        ...(restored ? { notBeforeSec } : {}),
        claimsCurrent: () => registry.current(),
        ...(o.maxRoomsPerUser !== undefined ? { maxRoomsPerUser: o.maxRoomsPerUser } : {}),
        ...(o.changesPerMinute ? { changesPerMinute: o.changesPerMinute } : {}),
        ...(o.blobMaxBytes !== undefined ? { blobMaxBytes: o.blobMaxBytes } : {}),
        ...(o.roomBlobBytes !== undefined ? { roomBlobBytes: o.roomBlobBytes } : {}),
        // One owner's rooms together: a share of account APP, so one user
        // cannot take the blob space every other user needs.
        ownerBlobBytes: o.ownerBlobBytes ?? Math.floor(appMaxBytes / 10),
        logger: log,
        store,
        authMode: o.authMode,
        benchRoutes: o.benchRoutes ?? false,
        ...(o.damping ? { damping: o.damping } : {}),
        ...(metrics ? { metrics } : {}),
        announce: (change) => {
          forgetGrants(change);
          return announce(nc, change);
        },
      });
      authorities.bind(o.http.host, addr.port);
      // Node-local nonces refuse what was signed before the start second
      // (rounded up): ready no earlier than that, so that a request signed
      // once the node says it is ready is never refused for it.
      if (localNonces || restored) {
        const wait = notBeforeSec * 1000 - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        // Kept until no signature made before the restore can be accepted
        // (6 minutes): a start that fails after this point, and the next
        // one, still refuse what was signed before them.
        if (restored) {
          const forget = setTimeout(
            () => void rm(paths.restoredMarker, { force: true }).catch(() => {}),
            (300 + 2 * 30 + 1) * 1000
          );
          forget.unref();
          undo.push(async () => clearTimeout(forget));
        }
      }
      {
        // A store that cannot take the claims now: every name records its
        // nonces in the bucket until a renewal succeeds.
        await registry
          .claim()
          .catch((err: Error) =>
            log.warn({ err: err.message }, 'authority claims not written; nonces go to the bucket')
          );
        registry.start();
        const r = registry;
        undo.push(async () => r.stop());
      }
      serving = app.fetch;
      log.info(
        {
          authorities: authorities.list(),
          local_nonce_names: localNonceOption?.names() ?? [],
        },
        'signed requests accepted for these names'
      );
      let metricsUrl: string | null = null;
      if (metrics && o.metrics) {
        const ms = await serveMetrics(metrics, o.metrics);
        undo.push(() => ms.close());
        metricsUrl = `http://${formatHostPort(localHost(o.metrics.host), ms.port)}`;
        log.info({ metrics_url: metricsUrl }, 'metrics listener ready');
      }

      await writeNodeInfo(paths.nodeFile, {
        version: VERSION,
        pid: process.pid,
        nats_url: natsUrl,
        http_url: httpUrl,
        embedded: child !== undefined,
        nats_pid: child?.pid ?? null,
        tls_ca: o.tls?.ca ? resolve(o.tls.ca) : null,
        server_name: child ? serverName : null,
        started_at: new Date().toISOString(),
        metrics_url: metricsUrl,
      });
      log.info(
        { http_url: httpUrl, nats_url: natsUrl, data_dir: paths.dataDir, version: VERSION },
        'membershipd ready'
      );
      // Stop in reverse order of start: metrics, HTTP, reactor, callout,
      // connections (drained), then the nats-server child.
      // The certificates served now: a renewal must keep naming what they name.
      const inUse = {
        https: o.tls ? firstCertificate(o.tls.cert) : undefined,
        route: o.cluster?.tls ? firstCertificate(o.cluster.tls.cert) : undefined,
      };
      return new Daemon({
        paths,
        httpUrl,
        natsUrl,
        metricsUrl,
        logger: log,
        shutdown: undo.reverse(),
        lifecycle,
        child,
        reloadTls: () => reloadTls(server, { https: o.tls, route: o.cluster?.tls }, child, inUse),
      });
    } catch (err) {
      for (const step of undo.reverse()) await step().catch(() => {});
      throw err;
    }
  }

  /**
   * Re-reads the TLS certificates without a restart (SIGHUP): the HTTPS
   * listener's pair from its files, and nats-server's client and route
   * certificates by its own config reload. Both pairs are checked before
   * either is swapped in; on any error nothing changes and the old
   * certificates stay in use. Resolves with what was reloaded.
   */
  async reloadTls(): Promise<string[]> {
    if (this.#lifecycle.stopping) throw new Error('membershipd is stopping');
    return this.#reloadTls();
  }

  async stop(code: number = EXIT.OK): Promise<void> {
    if (this.#lifecycle.stopping) return;
    this.#lifecycle.stopping = true;
    this.#logger.info({ code }, 'stopping');
    for (const step of this.#shutdown) {
      await step().catch((err: unknown) =>
        this.#logger.warn({ err: (err as Error).message }, 'shutdown step failed')
      );
    }
    this.#logger.info({ code }, 'membershipd stopped');
    this.#finish(code);
  }
}

/**
 * nats-server gives JetStream 75% of the free space of its store's
 * filesystem and refuses to start when an account reserves more. The
 * default room cap (10 GiB) would keep a node on a small disk from ever
 * starting: it is lowered to half the free space (the rest stays for the
 * control state), with a warning. A cap the operator asked for is kept, and
 * refused here with a clear message when it cannot fit.
 */
export function fitAppMaxBytes(wanted: number, given: boolean, dir: string, log: Logger): number {
  let free: number;
  try {
    const f = statfsSync(dir);
    free = f.bavail * f.bsize;
  } catch {
    return wanted;
  }
  const jetstream = Math.floor(free * 0.75);
  if (wanted < jetstream) return wanted;
  if (given)
    throw new Error(
      `--app-max-bytes ${wanted} does not fit: nats-server gives JetStream ${jetstream} bytes ` +
        `(75% of the ${free} bytes free under ${dir}); free space or lower --app-max-bytes`
    );
  const fitted = Math.max(1024 * 1024, Math.floor(free / 2));
  log.warn(
    { app_max_bytes: fitted, default: wanted, free_bytes: free },
    'the default --app-max-bytes does not fit this disk: room streams are capped at half the free space'
  );
  return fitted;
}

function firstCertificate(file: string): X509Certificate | undefined {
  try {
    return pemCertificates(readFileSync(file), file)[0];
  } catch {
    return undefined; // nothing to compare a renewal with
  }
}

async function reloadTls(
  server: ServerType,
  tls: { https: TlsFiles | undefined; route: TlsFiles | undefined },
  child: NatsServerProcess | undefined,
  inUse: { https?: X509Certificate | undefined; route?: X509Certificate | undefined }
): Promise<string[]> {
  const reloaded: string[] = [];
  // Both pairs are checked before either is swapped in (see tlscheck.ts):
  // a pair clients or peers would not trust changes nothing.
  const https = tls.https
    ? await verifyRenewedPair('HTTPS and NATS client', tls.https, {
        usages: [SERVER_AUTH],
        ...(inUse.https ? { current: inUse.https } : {}),
      })
    : undefined;
  const route =
    tls.route && child
      ? await verifyRenewedPair('route', tls.route, {
          usages: [SERVER_AUTH, CLIENT_AUTH],
          ...(inUse.route ? { current: inUse.route } : {}),
        })
      : undefined;
  if (child) {
    await child.reload();
    reloaded.push('nats-server');
    if (route) inUse.route = route.leaf;
  }
  if (https) {
    (server as HttpsServer).setSecureContext({ cert: https.cert, key: https.key });
    inUse.https = https.leaf;
    reloaded.push('https');
  }
  return reloaded;
}

function closeHttp(server: ServerType): Promise<void> {
  return new Promise<void>((r) => {
    server.close(() => r());
    // Idle keep-alive connections would hold close() open.
    if ('closeIdleConnections' in server) server.closeIdleConnections();
  });
}

/** Where this host reaches a listener bound to `host`. */
function localHost(host: string | undefined): string {
  return !host || ['0.0.0.0', '::', 'localhost'].includes(host) ? '127.0.0.1' : host;
}

function listen(
  fetch: Parameters<typeof serve>[0]['fetch'],
  at: HostPort,
  bounds: HttpBounds,
  tls: TlsFiles | undefined,
  blobMaxBytes: number
): Promise<ServerType> {
  return new Promise((resolve, reject) => {
    const server = tls
      ? serve({
          fetch,
          hostname: at.host,
          port: at.port,
          createServer: createHttpsServer,
          serverOptions: {
            ...serverOptions(bounds),
            cert: readFileSync(tls.cert),
            key: readFileSync(tls.key),
          },
        })
      : serve({ fetch, hostname: at.host, port: at.port, serverOptions: serverOptions(bounds) });
    // Node's own cap would refuse newcomers while idle sockets hold every slot.
    // A blob upload gets time for its size (at 1 MiB/s), the rest requestTimeoutMs.
    capConnections(server as Server, bounds, (req) => blobUploadExtraMs(req, blobMaxBytes));
    server.once('listening', () => resolve(server));
    server.once('error', (err) =>
      reject(new Error(`cannot listen on ${formatHostPort(at.host, at.port)}: ${err.message}`))
    );
  });
}

/** The kind of a nats-server log line that a client can cause at will, or null. */
export function refusalKind(msg: string): string | null {
  if (
    /Authorization Violation|authentication (error|timeout)|Authentication Failure|Auth callout service returned an error/i.test(
      msg
    )
  )
    return 'auth';
  if (/Publish Violation/i.test(msg)) return 'publish_permission';
  if (/Subscription Violation/i.test(msg)) return 'subscribe_permission';
  if (/maximum connections|max(imum)? payload/i.test(msg)) return 'limit';
  return null;
}
