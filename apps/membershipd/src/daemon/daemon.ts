import { mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { resolve } from 'node:path';
import { serve, type ServerType } from '@hono/node-server';
import { connect, nkeyAuthenticator, type NatsConnection } from 'nats';
import { loadOrCreateIdentity, userNkeyFromSeed, writeFileAtomic } from '@sealbus/crypto';
import { NatsServerProcess, reapOrphan, renderNatsConfig } from '@sealbus/natsd';
import { MembershipStore } from '@sealbus/store';
import { createApp } from '../http/app.js';
import type { AuthMode } from '../http/context.js';
import type { Logger } from '../log.js';
import { formatHostPort, type HostPort } from '../util/parse.js';
import { VERSION } from '../version.js';
import { bootstrapAdmin } from './bootstrap.js';
import { createHealth } from './health.js';
import { embeddedNatsConfig } from './natsconfig.js';
import { writeNodeInfo } from './nodefile.js';
import { dataPaths, type DataPaths } from './paths.js';

export interface DaemonOptions {
  dataDir: string;
  http: HostPort;
  /** Client port of the embedded nats-server. */
  natsPort: number;
  /** External NATS: no child is started, the URL's server must know the internal nkey. */
  natsUrl?: string;
  internalIdFile?: string;
  replicas: number;
  bootstrapBudgetMs: number;
  natsServerBin?: string;
  authMode: AuthMode;
  benchRoutes?: boolean;
  logger: Logger;
}

/** Exit codes of `membershipd serve`. */
export const EXIT = Object.freeze({ OK: 0, START_FAILED: 1, NATS_DIED: 3 });

/**
 * One membershipd node: supervises its nats-server child (embedded mode),
 * holds the privileged NATS connection and the store, serves HTTP. `done`
 * resolves with the process exit code once the daemon has fully stopped.
 */
export class Daemon {
  readonly paths: DataPaths;
  readonly httpUrl: string;
  readonly natsUrl: string;
  readonly done: Promise<number>;
  #logger: Logger;
  #child: NatsServerProcess | undefined;
  #nc: NatsConnection;
  #server: ServerType;
  #lifecycle: { stopping: boolean };
  #finish!: (code: number) => void;

  private constructor(parts: {
    paths: DataPaths;
    httpUrl: string;
    natsUrl: string;
    logger: Logger;
    child: NatsServerProcess | undefined;
    nc: NatsConnection;
    server: ServerType;
    lifecycle: { stopping: boolean };
  }) {
    this.paths = parts.paths;
    this.httpUrl = parts.httpUrl;
    this.natsUrl = parts.natsUrl;
    this.#logger = parts.logger;
    this.#child = parts.child;
    this.#nc = parts.nc;
    this.#server = parts.server;
    this.#lifecycle = parts.lifecycle;
    this.done = new Promise((r) => (this.#finish = r));
    this.#child?.exited.then((exit) => {
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
    const paths = dataPaths(resolve(o.dataDir));
    await mkdir(paths.natsDir, { recursive: true, mode: 0o700 });
    const cleanup: Array<() => Promise<unknown>> = [];
    try {
      const internal = await loadOrCreateIdentity(o.internalIdFile ?? paths.internalId);
      if (internal.created)
        log.info({ file: o.internalIdFile ?? paths.internalId }, 'created internal identity');
      const nkey = userNkeyFromSeed(internal.identity.signSeed);

      let child: NatsServerProcess | undefined;
      let natsUrl = o.natsUrl;
      if (!natsUrl) {
        const config = embeddedNatsConfig({
          paths,
          port: o.natsPort,
          internalNkey: nkey.publicKey,
          serverName: `sealbus-${internal.identity.signPubHex.slice(0, 12)}`,
        });
        await writeFileAtomic(paths.natsConfig, renderNatsConfig(config), { mode: 0o600 });
        const orphan = await reapOrphan(paths.natsPidFile, paths.natsConfig);
        if (orphan)
          log.warn({ pid: orphan }, 'stopped a nats-server left running by a previous membershipd');
        const natsLog = log.child({ component: 'nats-server' });
        child = await NatsServerProcess.start({
          configFile: paths.natsConfig,
          detached: true,
          ...(o.natsServerBin ? { bin: o.natsServerBin } : {}),
          onLog: (l) => natsLog[l.level === 'fatal' ? 'error' : l.level](l.msg),
        });
        cleanup.push(() => child!.stop());
        natsUrl = `nats://127.0.0.1:${o.natsPort}`;
        log.info({ nats_pid: child.pid, url: natsUrl }, 'nats-server ready');
      }

      const nc = await connect({
        servers: natsUrl.split(','),
        name: 'membershipd',
        authenticator: nkeyAuthenticator(new TextEncoder().encode(nkey.seed)),
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
        timeout: 5_000,
      });
      cleanup.push(() => nc.close());
      let natsConnected = true;
      void (async () => {
        for await (const s of nc.status()) {
          if (s.type === 'disconnect') natsConnected = false;
          if (s.type === 'reconnect') natsConnected = true;
          if (s.type === 'disconnect' || s.type === 'reconnect' || s.type === 'error') {
            log.warn({ event: s.type, data: String(s.data) }, 'nats connection');
          }
        }
      })();

      const store = await MembershipStore.open(nc, {
        replicas: o.replicas,
        bootstrapBudgetMs: o.bootstrapBudgetMs,
        logger: log,
      });
      const admin = await bootstrapAdmin(store, paths.adminId, log);
      if (admin?.created) {
        log.info({ sign_pub: admin.signPub, identity_file: admin.path }, 'created admin #0');
        process.stderr.write(
          `membershipd: created admin #0, identity in ${admin.path} (secret, mode 0600)\n` +
            `membershipd: admin #0 sign_pub ${admin.signPub}\n`
        );
      }

      const lifecycle = { stopping: false };
      const health = createHealth({
        nc,
        store,
        embedded: child !== undefined,
        authMode: o.authMode,
        tls: { http: false, nats: false },
        natsConnected: () => natsConnected,
        stopping: () => lifecycle.stopping,
      });
      const app = createApp({
        health,
        logger: log,
        store,
        authMode: o.authMode,
        benchRoutes: o.benchRoutes ?? false,
      });
      const server = await listen(app.fetch, o.http);
      cleanup.push(() => new Promise((r) => server.close(r)));
      const addr = server.address() as AddressInfo;
      const httpUrl = `http://${formatHostPort(o.http.host, addr.port)}`;

      const daemon = new Daemon({
        paths,
        httpUrl,
        natsUrl,
        logger: log,
        child,
        nc,
        server,
        lifecycle,
      });
      await writeNodeInfo(paths.nodeFile, {
        version: VERSION,
        pid: process.pid,
        nats_url: natsUrl,
        http_url: httpUrl,
        embedded: child !== undefined,
        nats_pid: child?.pid ?? null,
        started_at: new Date().toISOString(),
      });
      log.info(
        { http_url: httpUrl, nats_url: natsUrl, data_dir: paths.dataDir, version: VERSION },
        'membershipd ready'
      );
      return daemon;
    } catch (err) {
      for (const undo of cleanup.reverse()) await undo().catch(() => {});
      throw err;
    }
  }

  /**
   * Stops in dependency order: HTTP first (no new work), then drain NATS
   * (in-flight requests finish), then the nats-server child.
   */
  async stop(code: number = EXIT.OK): Promise<void> {
    if (this.#lifecycle.stopping) return;
    this.#lifecycle.stopping = true;
    this.#logger.info({ code }, 'stopping');
    await new Promise<void>((r) => {
      this.#server.close(() => r());
      // Idle keep-alive connections would hold close() open.
      if ('closeIdleConnections' in this.#server) this.#server.closeIdleConnections();
    });
    if (!this.#nc.isClosed()) {
      await Promise.race([
        this.#nc.drain().catch(() => {}),
        new Promise((r) => setTimeout(r, 5_000)),
      ]);
      await this.#nc.close().catch(() => {});
    }
    if (this.#child) {
      const exit = await this.#child.stop();
      this.#logger.info({ code: exit.code, signal: exit.signal }, 'nats-server stopped');
    }
    this.#logger.info({ code }, 'membershipd stopped');
    this.#finish(code);
  }
}

function listen(fetch: Parameters<typeof serve>[0]['fetch'], at: HostPort): Promise<ServerType> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch, hostname: at.host, port: at.port });
    server.once('listening', () => resolve(server));
    server.once('error', (err) =>
      reject(new Error(`cannot listen on ${formatHostPort(at.host, at.port)}: ${err.message}`))
    );
  });
}
