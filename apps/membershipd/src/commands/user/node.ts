import { randomUUID } from 'node:crypto';
import { userInfo } from 'node:os';
import { Option, type Command } from 'commander';
import { connect, nkeyAuthenticator, type NatsConnection } from 'nats';
import { CryptoError, loadIdentity } from '@sealbus/crypto';
import { MembershipStore, StoreError } from '@sealbus/store';
import { argParser, CliError, EXIT_CODES } from '../../cli.js';
import { readNodeInfo } from '../../daemon/nodefile.js';
import { nodeUsers, type NodeUsers } from '../../dataplane/keys.js';
import { announce } from '../../dataplane/reactor.js';
import type { ChangeEdge } from '../../usecases/users.js';
import { dataPaths } from '../../daemon/paths.js';
import { isLoopbackHost } from '@sealbus/protocol';
import { parseDuration } from '../../util/parse.js';

/** Flags of every command that works on a node's store over the privileged path. */
export interface NodeOptions {
  data: string;
  internalIdFile?: string;
  natsUrl?: string;
  ca?: string;
  timeout: number;
}

export function addNodeOptions(
  cmd: Command,
  defaults: { timeoutMs: number; timeoutLabel: string } = { timeoutMs: 30_000, timeoutLabel: '30s' }
): Command {
  return cmd
    .option('--data <dir>', "the node's data directory", './data')
    .option('--internal-id-file <path>', "the node's internal identity (default: DATA/internal.id)")
    .option('--nats-url <url>', "the node's NATS (comma list; default: from DATA/node.json)")
    .option(
      '--ca <file>',
      'CA certificate for TLS to NATS (required for a non-loopback --nats-url)'
    )
    .addOption(
      new Option('--timeout <duration>', 'give up after this long')
        .argParser(argParser(parseDuration))
        .default(defaults.timeoutMs, defaults.timeoutLabel)
    );
}

export interface NodeSession {
  store: MembershipStore;
  /** Account SEALBUS: control state and the change subject. */
  nc: NatsConnection;
  /** Account APP: persisted rooms' streams. */
  app: NatsConnection;
  natsUrl: string;
}

/** The node's NATS URL and TLS CA: flags first, then what `serve` wrote to DATA/node.json. */
async function resolveNode(opts: NodeOptions): Promise<{ url: string; ca: string | undefined }> {
  const info = opts.natsUrl && opts.ca ? null : await readNodeInfo(dataPaths(opts.data).nodeFile);
  return {
    url: opts.natsUrl ?? info?.nats_url ?? 'nats://127.0.0.1:4222',
    ca: opts.ca ?? info?.tls_ca ?? undefined,
  };
}

/** Refuses to send the privileged identity anywhere but loopback unless TLS pins a CA. */
function checkDestination(url: string, ca: string | undefined): string[] {
  const servers = url
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const s of servers) {
    let host: string;
    try {
      host = new URL(s.includes('://') ? s : `nats://${s}`).hostname;
    } catch {
      throw new CliError(EXIT_CODES.USAGE, `invalid NATS URL "${s}"`);
    }
    if (!isLoopbackHost(host) && !ca) {
      throw new CliError(
        EXIT_CODES.USAGE,
        `refusing non-loopback NATS URL ${s} without --ca: the internal identity must not travel unprotected`
      );
    }
  }
  return servers;
}

/**
 * Connects to the node's nats-server as the daemon's internal identity and
 * opens the existing store (bind-only), runs `body`, and closes. The whole
 * session is bounded by `--timeout`.
 */
export async function withNodeStore<T>(
  opts: NodeOptions,
  body: (s: NodeSession) => Promise<T>
): Promise<T> {
  const idFile = opts.internalIdFile ?? dataPaths(opts.data).internalId;
  let users: NodeUsers;
  try {
    users = nodeUsers(await loadIdentity(idFile));
  } catch (err) {
    if (err instanceof CryptoError && err.code === 'IDENTITY_NOT_FOUND') {
      throw new CliError(
        EXIT_CODES.FAILED,
        `no internal identity at ${idFile}: run this on a node, with --data DIR or --internal-id-file`
      );
    }
    throw err;
  }
  const node = await resolveNode(opts);
  const natsUrl = node.url;
  const servers = checkDestination(natsUrl, node.ca);

  const conns: NatsConnection[] = [];
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new CliError(
            EXIT_CODES.FAILED,
            `timed out after ${opts.timeout} ms (is the node's store reachable?)`
          )
        ),
      opts.timeout
    );
  });
  const session = (async () => {
    const as = async (kp: NodeUsers['internal']) => {
      const c = await connect({
        servers,
        name: 'membershipd-cli',
        authenticator: nkeyAuthenticator(kp.getSeed()),
        timeout: Math.min(opts.timeout, 5_000),
        maxReconnectAttempts: 2,
        reconnectTimeWait: 200,
        ...(node.ca ? { tls: { caFile: node.ca } } : {}),
      });
      conns.push(c);
      return c;
    };
    let nc: NatsConnection;
    let app: NatsConnection;
    try {
      nc = await as(users.internal);
      app = await as(users.app);
    } catch (err) {
      throw new CliError(
        EXIT_CODES.FAILED,
        `cannot connect to NATS at ${servers.join(',')} (${(err as Error).message}); is membershipd serve running on this node?`
      );
    }
    let store: MembershipStore;
    try {
      store = await MembershipStore.open(nc, {
        bindOnly: true,
        app,
        bootstrapBudgetMs: Math.min(opts.timeout, 10_000),
        attemptTimeoutMs: 2_000,
      });
    } catch (err) {
      if (err instanceof StoreError) throw new CliError(EXIT_CODES.FAILED, err.message);
      throw err;
    }
    return body({ store, nc, app, natsUrl: servers.join(',') });
  })();
  try {
    return await Promise.race([session, timeout]);
  } finally {
    clearTimeout(timer);
    session.catch(() => {}); // lost the race: its error has no one to tell
    for (const c of conns) await c.close().catch(() => {});
  }
}

/** How long a CLI change waits for the audit stream (a leader election takes 4-9 s). */
const AUDIT_RETRY_MS = 15_000;

/**
 * Audits a change made from the CLI on a node. The actor is the node's
 * operator, known to the system only as `via: cli` plus the local account.
 * A change is recorded twice: its `intent` before it is made (if that
 * cannot be written, nothing is changed), then its outcome, under one
 * request id.
 */
function cliAuditor(store: MembershipStore) {
  const requestId = `cli-${randomUUID()}`;
  const base = (
    action: string,
    target: string | null,
    outcome: 'intent' | 'ok' | 'error',
    detail: Record<string, string | number | boolean | null>
  ) => ({
    time: new Date().toISOString(),
    request_id: requestId,
    actor: null,
    via: 'cli' as const,
    action,
    target,
    outcome,
    detail: { ...detail, os_user: userInfo().username },
  });
  return {
    async intend(
      action: string,
      target: string | null,
      detail: Record<string, string | number | boolean | null> = {}
    ): Promise<void> {
      try {
        // Ride out a stream leader election rather than refuse the change.
        await store.audit.append(base(action, target, 'intent', detail), {
          retryForMs: AUDIT_RETRY_MS,
        });
      } catch (err) {
        throw new CliError(
          EXIT_CODES.FAILED,
          `${action} ${target ?? ''}: nothing was changed, the audit log cannot be written (${(err as Error).message})`
        );
      }
    },
    /** A change whose intent is on the log failed: say so (best effort). */
    async failed(action: string, target: string | null, err: unknown): Promise<void> {
      const code =
        typeof (err as { code?: unknown })?.code === 'string'
          ? (err as { code: string }).code
          : 'INTERNAL';
      await store.audit.append(base(action, target, 'error', { code })).catch(() => {});
    },
    async record(
      action: string,
      target: string,
      detail: Record<string, string | number | boolean | null>
    ): Promise<void> {
      try {
        // The change is already applied (its intent is on record): ride out
        // a stream leader election rather than report a missing outcome.
        // The store retries this one append under one message id of its
        // own, so the log holds it once.
        await store.audit.append(base(action, target, 'ok', detail), {
          retryForMs: AUDIT_RETRY_MS,
        });
      } catch (err) {
        throw new CliError(
          EXIT_CODES.FAILED,
          `${action} ${target} was applied (its intent is on the audit log) but its outcome could not be recorded (${(err as Error).message})`
        );
      }
    },
  };
}

/** The node's CLI as the edge of a use case: audited as `via: cli`, announced on the change subject. */
export function cliEdge(store: MembershipStore, nc: NatsConnection): ChangeEdge {
  return {
    store,
    ...cliAuditor(store),
    announce: (change) => announce(nc, change),
  };
}

/**
 * One line on the users bucket's replication, printed after every write. A
 * write is acknowledged by a quorum; a follower that is a few hundred ms
 * behind is given up to `settleMs` to catch up before the line is printed,
 * so the line says how replication stands, not how a race went.
 */
export async function replicationLine(store: MembershipStore, settleMs = 3_000): Promise<string> {
  try {
    const deadline = Date.now() + settleMs;
    let r = await store.replication('users');
    while (r.current < r.replicas && Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 100));
      r = await store.replication('users');
    }
    const behind = (r.behind ?? [])
      .map(
        (b) =>
          `${b.name} ${b.offline ? 'offline' : `${b.lag} behind, heard from ${(b.active_ms / 1000).toFixed(1)} s ago`}`
      )
      .join('; ');
    return `users bucket: replicas ${r.current}/${r.replicas} current, leader ${r.leader ?? 'unknown'}${behind ? ` (${behind})` : ''}`;
  } catch (err) {
    return `users bucket: replication status unavailable (${(err as Error).message})`;
  }
}
