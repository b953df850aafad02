import { Option, type Command } from 'commander';
import { isLoopbackHost } from '@sealbus/protocol';
import { DEFAULT_ROOM_MAX_BYTES } from '@sealbus/store';
import { EXIT_CODES, argParser } from '../cli.js';
import { AT_REST_KEY_ENV, loadAtRestKey, type AtRestKey } from '../daemon/atrest.js';
import { Daemon, EXIT, type DaemonOptions } from '../daemon/daemon.js';
import { DEFAULT_APP_MAX_BYTES, type JetStreamSync } from '../daemon/natsconfig.js';
import { DEFAULT_CHANGES_PER_MINUTE, DEFAULT_MAX_ROOMS_PER_USER } from '../http/app.js';
import { DEFAULT_HTTP_BOUNDS } from '../http/bounds.js';
import { DEFAULT_BLOB_MAX_BYTES, DEFAULT_ROOM_BLOB_BYTES } from '../http/routes/blobs.js';
import type { AuthMode } from '../http/context.js';
import { createLogger } from '../log.js';
import { RouteSecret } from '../daemon/routesecret.js';
import {
  parseAuthority,
  parseCount,
  parseDuration,
  parseHostPort,
  parseJetStreamSync,
  parsePort,
  parseSize,
  type HostPort,
} from '../util/parse.js';

interface ServeOptions {
  data: string;
  http: HostPort;
  natsPort: number;
  natsUrl?: string;
  internalIdFile?: string;
  replicas: number;
  bootstrapBudget: number;
  natsServerBin?: string;
  logLevel: string;
  auth: AuthMode;
  benchRoutes: boolean;
  authFailLimit: number;
  authFailWindow: number;
  calloutKeyFile?: string;
  userJwtTtl: number;
  adminIdFile?: string;
  natsHost: string;
  serverName?: string;
  clientAdvertise?: string;
  clusterName?: string;
  clusterHost: string;
  clusterPort?: number;
  routes?: string;
  clusterAdvertise?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  routeTlsCert?: string;
  routeTlsKey?: string;
  routeTlsCa?: string;
  routeSecretFile?: string;
  metrics?: HostPort;
  atRestKeyFile?: string;
  authority: string[];
  replicatedNonces?: boolean;
  maxRoomsPerUser: number;
  httpMaxConnections: number;
  changesPerMinute: number;
  httpMaxConnectionsPerAddress: number;
  roomMaxBytes: number;
  blobMaxBytes: number;
  roomBlobBytes: number;
  ownerBlobBytes?: number;
  appMaxBytes: number;
  appMaxBytesGiven?: boolean;
  jetstreamSync: JetStreamSync;
}

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('run a node: supervised nats-server, KV store, HTTP control plane')
    .option('--data <dir>', 'data directory', './data')
    .addOption(
      new Option('--http <host:port>', 'HTTP listen address')
        .argParser(argParser(parseHostPort))
        .default(parseHostPort('127.0.0.1:8470'), '127.0.0.1:8470')
    )
    .option(
      '--nats-port <port>',
      'client port of the embedded nats-server (loopback)',
      argParser(parsePort),
      4222
    )
    .option(
      '--nats-url <url>',
      'use this external NATS (comma list) instead of starting nats-server'
    )
    .option('--nats-host <host>', 'client listen address of the embedded nats-server', '127.0.0.1')
    .option(
      '--server-name <name>',
      'nats-server name (unique per node; default derived from the node identity)'
    )
    .option('--client-advertise <host:port>', 'client address the server advertises to clients')
    .option(
      '--cluster-name <name>',
      'join a cluster of this name (needs --cluster-port and --routes)'
    )
    .option('--cluster-host <host>', 'route listen address', '127.0.0.1')
    .option('--cluster-port <port>', 'route port', argParser(parsePort))
    .option('--routes <urls>', 'routes to the other nodes: nats-route://host:port, comma separated')
    .option(
      '--cluster-advertise <host:port>',
      'route address the other nodes should use for this node'
    )
    .addOption(
      new Option(
        '--authority <host[:port]>',
        'a name clients sign requests for (@authority); repeatable; the --http address (and loopback names on loopback) always count'
      )
        .argParser((v: string, prev: string[]) => [...prev, argParser(parseAuthority)(v)])
        .default([], 'the --http address')
    )
    .option(
      '--replicated-nonces',
      'record request nonces in the replicated bucket even on a single node (the default there is node memory: no write per request, but requests signed before a restart are refused after it)'
    )
    .addOption(
      new Option(
        '--changes-per-minute <n>',
        'changes (signed POST/PUT/DELETE) one non-admin key may make a minute, and at once; beyond it 429 RATE_LIMITED; 0: unlimited'
      )
        .argParser(argParser(parseCount))
        .default(DEFAULT_CHANGES_PER_MINUTE)
    )
    .addOption(
      new Option(
        '--http-max-connections <n>',
        'open HTTP connections, all clients together; more are closed at once'
      )
        .argParser(argParser(parseCount))
        .default(DEFAULT_HTTP_BOUNDS.maxConnections)
    )
    .addOption(
      new Option('--http-max-connections-per-address <n>', 'open HTTP connections from one address')
        .argParser(argParser(parseCount))
        .default(DEFAULT_HTTP_BOUNDS.maxConnectionsPerAddress)
    )
    .addOption(
      new Option(
        '--max-rooms-per-user <n>',
        'rooms one user may own; POST /rooms beyond it is 403 ROOM_QUOTA'
      )
        .argParser(argParser(parseCount))
        .default(DEFAULT_MAX_ROOMS_PER_USER)
    )
    .addOption(
      new Option(
        '--room-max-bytes <size>',
        'size cap of each new room stream (discard-new: a full room refuses new messages); e.g. 64MiB, 1GiB'
      )
        .argParser(argParser(parseSize))
        .default(DEFAULT_ROOM_MAX_BYTES, '256MiB')
    )
    .addOption(
      new Option(
        '--blob-max-bytes <size>',
        'largest room blob accepted (POST /rooms/{id}/blobs; 413 over it); e.g. 16MiB'
      )
        .argParser(argParser(parseSize))
        .default(DEFAULT_BLOB_MAX_BYTES, '64MiB')
    )
    .addOption(
      new Option(
        '--room-blob-bytes <size>',
        'bytes of blobs one room may hold (507 ROOM_BLOB_QUOTA over it), in account APP under --app-max-bytes'
      )
        .argParser(argParser(parseSize))
        .default(DEFAULT_ROOM_BLOB_BYTES, '1GiB')
    )
    .addOption(
      new Option(
        '--owner-blob-bytes <size>',
        "bytes of blobs all the rooms of one owner may hold together (507 OWNER_BLOB_QUOTA over it); default: a tenth of --app-max-bytes, so one user's rooms cannot take everyone's space"
      ).argParser(argParser(parseSize))
    )
    .addOption(
      new Option(
        '--app-max-bytes <size>',
        'JetStream storage cap of account APP (all room streams together), so room traffic cannot starve the control state'
      )
        .argParser(argParser(parseSize))
        .default(DEFAULT_APP_MAX_BYTES, '10GiB')
    )
    .addOption(
      new Option(
        '--jetstream-sync <always|duration>',
        'when JetStream writes reach the disk: always (fsync before each acknowledgement: acknowledged changes survive power loss) or a flush interval such as 2m (faster; a power loss can take acknowledged writes, warned)'
      )
        .argParser(argParser(parseJetStreamSync))
        .default('always' as JetStreamSync, 'always')
    )
    .option('--tls-cert <file>', 'server certificate for the NATS client port and HTTPS')
    .option('--tls-key <file>', 'its private key (0600)')
    .option(
      '--tls-ca <file>',
      'CA of that certificate (the daemon verifies its own connections with it)'
    )
    .option('--route-tls-cert <file>', 'route certificate (mutual TLS between nodes)')
    .option('--route-tls-key <file>', 'its private key (0600)')
    .option('--route-tls-ca <file>', 'the route CA (separate from the client CA)')
    .option(
      '--route-secret-file <file>',
      'shared route secret (0600 file, 32+ URL-safe characters): routes authenticate with it when they have no mutual TLS'
    )
    .option(
      '--at-rest-key-file <path>',
      `encrypt the store at rest with the key in this file (0600; or set ${AT_REST_KEY_ENV})`
    )
    .option(
      '--admin-id-file <path>',
      "admin #0's identity (default: DATA/admin.id; a cluster shares one)"
    )
    .option('--internal-id-file <path>', 'privileged internal identity (default: DATA/internal.id)')
    .option(
      '--callout-key-file <path>',
      'auth callout keys, the same on every node (default: DATA/callout.key)'
    )
    .addOption(
      new Option(
        '--user-jwt-ttl <duration>',
        'lifetime of user JWTs from the auth callout (re-check period)'
      )
        .argParser(argParser(parseDuration))
        .default(600_000, '10m')
    )
    .option(
      '--replicas <n>',
      'JetStream replicas of the buckets: 1 single node, 3 cluster',
      argParser((v) => {
        if (!/^[1-5]$/.test(v)) throw new Error('replicas must be 1 to 5');
        return Number(v);
      }),
      1
    )
    .addOption(
      new Option('--bootstrap-budget <duration>', 'how long to wait for JetStream at start')
        .argParser(argParser(parseDuration))
        .default(30_000, '30s')
    )
    .option(
      '--nats-server-bin <path>',
      'nats-server binary (default: the one `npm run setup` chose)'
    )
    .addOption(
      new Option(
        '--auth <mode>',
        'request authentication: enforce, soft (verify and log only) or off (loopback only)'
      )
        .choices(['enforce', 'soft', 'off'])
        .default('enforce')
    )
    .option(
      '--auth-fail-limit <n>',
      'failed authentications from one address per window before it gets 429 (0 disables)',
      argParser((v) => {
        if (!/^\d+$/.test(v)) throw new Error(`invalid count "${v}"`);
        return Number(v);
      }),
      20
    )
    .addOption(
      new Option('--auth-fail-window <duration>', 'the damping window')
        .argParser(argParser(parseDuration))
        .default(60_000, '1m')
    )
    .addOption(
      new Option(
        '--metrics <host:port>',
        'serve Prometheus metrics (GET /metrics, plain HTTP, no auth) on a separate listener; keep it on loopback'
      ).argParser(argParser(parseHostPort))
    )
    .addOption(
      new Option('--bench-routes', 'mount the benchmark-only /_bench routes')
        .default(false)
        .hideHelp()
    )
    .option(
      '--log-level <level>',
      LOG_LEVELS.join('|'),
      argParser((v) => {
        if (!LOG_LEVELS.includes(v))
          throw new Error(`log level must be one of ${LOG_LEVELS.join(', ')}`);
        return v;
      }),
      'info'
    )
    .action(async (opts: ServeOptions, cmd: Command) => {
      // The default cap is lowered to fit a small disk; a value given is kept.
      opts.appMaxBytesGiven = cmd.getOptionValueSource('appMaxBytes') !== 'default';
      process.exitCode = await serve(opts);
    });
}

async function serve(opts: ServeOptions): Promise<number> {
  const logger = createLogger(opts.logLevel);
  let daemon: Daemon | undefined;
  let stopRequested = false;
  // A stop during start-up (waiting for nats-server or a quorum) is honoured
  // at once: the start gives up, undoes what it began, and serve exits 0.
  const starting = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => {
    logger.info({ signal }, 'signal received');
    stopRequested = true;
    if (daemon) void daemon.stop(EXIT.OK);
    else starting.abort(new Error(`stopped by ${signal} during start-up`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // SIGHUP (`systemctl reload`): renewed TLS certificates, no restart.
  process.on('SIGHUP', () => {
    if (!daemon) return logger.warn('SIGHUP during start-up: ignored (nothing to reload yet)');
    daemon.reloadTls().then(
      (what) => logger.info({ reloaded: what }, 'TLS certificates reloaded'),
      (err: unknown) =>
        logger.error(
          { err: (err as Error).message },
          'TLS reload failed; the previous certificates stay in use'
        )
    );
  });
  let topology: Pick<DaemonOptions, 'tls' | 'cluster'>;
  let atRestKey: AtRestKey | null;
  try {
    topology = tlsAndCluster(opts);
  } catch (err) {
    // Half a TLS or cluster configuration, or routes nobody authenticates:
    // a usage error, before anything starts.
    process.stderr.write(`membershipd serve: ${(err as Error).message}\n`);
    return EXIT_CODES.USAGE;
  }
  try {
    if (topology.cluster && opts.routeSecretFile)
      topology.cluster.secret = await RouteSecret.load(opts.routeSecretFile);
    atRestKey = await loadAtRestKey(opts.atRestKeyFile);
  } catch (err) {
    process.stderr.write(`membershipd serve: ${(err as Error).message}\n`);
    return EXIT.START_FAILED;
  }
  if (!isLoopbackHost(opts.http.host)) {
    if (opts.auth === 'off') {
      process.stderr.write(
        'membershipd serve: --auth off is refused unless --http is a loopback address\n'
      );
      return EXIT.START_FAILED;
    }
    if (!topology.tls)
      logger.warn({ http: opts.http.host }, 'HTTP listens beyond loopback without TLS');
  }
  if (opts.metrics && !isLoopbackHost(opts.metrics.host)) {
    logger.warn(
      { metrics: opts.metrics.host },
      'metrics listen beyond loopback: plain HTTP without authentication'
    );
  }
  if (opts.jetstreamSync !== 'always' && opts.natsUrl) {
    logger.warn(
      { jetstream_sync_ms: opts.jetstreamSync },
      "--jetstream-sync has no effect with --nats-url: that nats-server's own config decides when writes reach the disk"
    );
  } else if (opts.jetstreamSync !== 'always') {
    logger.warn(
      { jetstream_sync_ms: opts.jetstreamSync },
      'JetStream flushes to disk only periodically: acknowledged changes (users, revocations, audit records) can be lost with the power'
    );
  }
  if (!isLoopbackHost(opts.natsHost) && !topology.tls) {
    logger.warn({ nats_host: opts.natsHost }, 'NATS clients connect beyond loopback without TLS');
  }
  if (opts.auth !== 'enforce') {
    const msg =
      opts.auth === 'off'
        ? 'AUTH OFF: requests are not authenticated at all; any caller acts as the key it names. Development only.'
        : 'AUTH SOFT: bad signatures and replays are logged but let through as the key they name. Migration only.';
    logger.warn({ auth: opts.auth }, msg);
    process.stderr.write(`membershipd serve: ${msg}\n`);
  }
  try {
    daemon = await Daemon.start({
      dataDir: opts.data,
      http: opts.http,
      natsPort: opts.natsPort,
      ...(opts.natsUrl ? { natsUrl: opts.natsUrl } : {}),
      ...(opts.internalIdFile ? { internalIdFile: opts.internalIdFile } : {}),
      replicas: opts.replicas,
      bootstrapBudgetMs: opts.bootstrapBudget,
      authMode: opts.auth,
      benchRoutes: opts.benchRoutes,
      damping: { limit: opts.authFailLimit, windowMs: opts.authFailWindow },
      ...(opts.metrics ? { metrics: opts.metrics } : {}),
      atRestKey,
      authorities: opts.authority,
      ...(opts.replicatedNonces ? { replicatedNonces: true } : {}),
      maxRoomsPerUser: opts.maxRoomsPerUser,
      changesPerMinute: opts.changesPerMinute,
      httpBounds: {
        maxConnections: opts.httpMaxConnections,
        maxConnectionsPerAddress: opts.httpMaxConnectionsPerAddress,
      },
      roomMaxBytes: opts.roomMaxBytes,
      blobMaxBytes: opts.blobMaxBytes,
      roomBlobBytes: opts.roomBlobBytes,
      ...(opts.ownerBlobBytes !== undefined ? { ownerBlobBytes: opts.ownerBlobBytes } : {}),
      appMaxBytes: opts.appMaxBytes,
      appMaxBytesGiven: opts.appMaxBytesGiven ?? true,
      jetstreamSync: opts.jetstreamSync,
      userJwtTtlSec: Math.max(5, Math.round(opts.userJwtTtl / 1000)),
      ...(opts.calloutKeyFile ? { calloutKeyFile: opts.calloutKeyFile } : {}),
      ...(opts.natsServerBin ? { natsServerBin: opts.natsServerBin } : {}),
      ...(opts.adminIdFile ? { adminIdFile: opts.adminIdFile } : {}),
      natsHost: opts.natsHost,
      ...(opts.serverName ? { serverName: opts.serverName } : {}),
      ...(opts.clientAdvertise ? { clientAdvertise: opts.clientAdvertise } : {}),
      ...topology,
      signal: starting.signal,
      logger,
    });
  } catch (err) {
    if (stopRequested) {
      logger.info({ reason: (err as Error).message }, 'stopped during start-up');
      logger.flush();
      process.exit(EXIT.OK);
    }
    logger.fatal({ error: (err as Error).message }, 'start failed');
    process.stderr.write(`membershipd serve: ${(err as Error).message}\n`);
    return EXIT.START_FAILED;
  }
  if (stopRequested) void daemon.stop(EXIT.OK);
  const code = await daemon.done;
  logger.flush();
  // Everything is closed; exit now rather than wait on stray timers.
  process.exit(code);
}

/** Checks the TLS and cluster flags as sets: half a configuration is an error, not a default. */
export function tlsAndCluster(o: ServeOptions): Pick<DaemonOptions, 'tls' | 'cluster'> {
  const out: Pick<DaemonOptions, 'tls' | 'cluster'> = {};
  if (o.tlsCert || o.tlsKey || o.tlsCa) {
    if (!o.tlsCert || !o.tlsKey) throw new Error('--tls-cert and --tls-key go together');
    out.tls = { cert: o.tlsCert, key: o.tlsKey, ...(o.tlsCa ? { ca: o.tlsCa } : {}) };
  }
  const routeTls = o.routeTlsCert || o.routeTlsKey || o.routeTlsCa;
  if (o.clusterName) {
    if (!o.clusterPort || !o.routes)
      throw new Error('--cluster-name needs --cluster-port and --routes');
    const routes = o.routes
      .split(',')
      .map((r) => r.trim())
      .filter(Boolean);
    for (const r of routes) {
      if (!/^nats-route:\/\/[^\s/]+:\d+$/.test(r))
        throw new Error(`invalid route ${r} (expected nats-route://host:port)`);
    }
    if (routeTls && (!o.routeTlsCert || !o.routeTlsKey || !o.routeTlsCa)) {
      throw new Error('--route-tls-cert, --route-tls-key and --route-tls-ca go together');
    }
    // Anyone who can reach a route port and is not asked who it is becomes
    // part of the cluster (and sees its traffic): routes always authenticate.
    if (!routeTls && !o.routeSecretFile)
      throw new Error(
        'cluster routes must authenticate: add --route-secret-file FILE (a 0600 file with a ' +
          'shared secret, e.g. openssl rand -hex 32 > FILE, the same on every node) or mutual TLS ' +
          '(--route-tls-cert, --route-tls-key, --route-tls-ca)'
      );
    out.cluster = {
      name: o.clusterName,
      host: o.clusterHost,
      port: o.clusterPort,
      routes,
      ...(o.clusterAdvertise ? { advertise: o.clusterAdvertise } : {}),
      ...(routeTls
        ? { tls: { cert: o.routeTlsCert!, key: o.routeTlsKey!, ca: o.routeTlsCa! } }
        : {}),
    };
  } else if (o.clusterPort || o.routes || routeTls || o.routeSecretFile) {
    throw new Error(
      '--cluster-port, --routes, --route-tls-* and --route-secret-file need --cluster-name'
    );
  }
  return out;
}
