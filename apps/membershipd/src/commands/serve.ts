import { Option, type Command } from 'commander';
import { argParser } from '../cli.js';
import { Daemon, EXIT } from '../daemon/daemon.js';
import type { AuthMode } from '../http/context.js';
import { createLogger } from '../log.js';
import {
  isLoopbackHost,
  parseDuration,
  parseHostPort,
  parsePort,
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
  calloutKeyFile?: string;
  userJwtTtl: number;
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
    .action(async (opts: ServeOptions) => {
      process.exitCode = await serve(opts);
    });
}

async function serve(opts: ServeOptions): Promise<number> {
  const logger = createLogger(opts.logLevel);
  let daemon: Daemon | undefined;
  let stopRequested = false;
  const onSignal = (signal: NodeJS.Signals) => {
    logger.info({ signal }, 'signal received');
    stopRequested = true;
    void daemon?.stop(EXIT.OK);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  if (!isLoopbackHost(opts.http.host)) {
    if (opts.auth === 'off') {
      process.stderr.write(
        'membershipd serve: --auth off is refused unless --http is a loopback address\n'
      );
      return EXIT.START_FAILED;
    }
    logger.warn({ http: opts.http.host }, 'HTTP listens beyond loopback without TLS');
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
      userJwtTtlSec: Math.max(5, Math.round(opts.userJwtTtl / 1000)),
      ...(opts.calloutKeyFile ? { calloutKeyFile: opts.calloutKeyFile } : {}),
      ...(opts.natsServerBin ? { natsServerBin: opts.natsServerBin } : {}),
      logger,
    });
  } catch (err) {
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
