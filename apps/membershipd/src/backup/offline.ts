import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, nkeyAuthenticator, type NatsConnection } from 'nats';
import { createUser } from 'nkeys.js';
import { NatsServerProcess, renderNatsConfig } from '@sealbus/natsd';
import type { AtRestKey } from '../daemon/atrest.js';
import { DEFAULT_APP_MAX_BYTES, accountsBlock, jetstreamBlock } from '../daemon/natsconfig.js';
import { readNodeInfo } from '../daemon/nodefile.js';
import type { DataPaths } from '../daemon/paths.js';
import type { StoreConns } from './snapshot.js';

/** Why an offline operation on a data dir was refused. */
export class OfflineError extends Error {
  override readonly name = 'OfflineError';
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function cmdline(pid: number): Promise<string | null> {
  try {
    return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').join(' ');
  } catch {
    return null;
  }
}

/**
 * True when a node is serving from this data dir: its nats-server (pid file,
 * command line naming this config) or its membershipd (node.json pid).
 */
export async function nodeRunning(paths: DataPaths): Promise<boolean> {
  try {
    const pid = Number.parseInt((await readFile(paths.natsPidFile, 'utf8')).trim(), 10);
    if (Number.isInteger(pid) && pid > 1 && alive(pid)) {
      const cmd = await cmdline(pid);
      if (cmd === null || (cmd.includes('nats-server') && cmd.includes(paths.natsConfig)))
        return true;
    }
  } catch {
    /* no pid file */
  }
  const info = await readNodeInfo(paths.nodeFile).catch(() => null);
  if (info && Number.isInteger(info.pid) && info.pid !== process.pid && alive(info.pid)) {
    const cmd = await cmdline(info.pid);
    if (cmd === null || cmd.includes('membershipd')) return true;
  }
  return false;
}

const lockFile = (paths: DataPaths) => join(paths.natsDir, 'offline.lock');

/**
 * The pid of an offline backup or restore holding this data dir's store,
 * or null. A lock whose process is gone is stale and is removed.
 */
export async function offlineHolder(paths: DataPaths): Promise<number | null> {
  let pid: number;
  try {
    pid = Number.parseInt((await readFile(lockFile(paths), 'utf8')).trim(), 10);
  } catch {
    return null;
  }
  if (Number.isInteger(pid) && pid > 1 && alive(pid)) return pid;
  await rm(lockFile(paths), { force: true });
  return null;
}

/** One offline nats-server per store at a time, and never beside a node's own. */
async function acquireLock(paths: DataPaths): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(lockFile(paths), `${process.pid}\n`, { mode: 0o600, flag: 'wx' });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = await offlineHolder(paths);
      if (holder !== null) {
        throw new OfflineError(
          `another backup or restore (pid ${holder}) is using ${paths.dataDir}; wait for it`
        );
      }
    }
  }
  throw new OfflineError(`cannot lock ${lockFile(paths)}`);
}

async function releaseLock(paths: DataPaths): Promise<void> {
  await rm(lockFile(paths), { force: true });
}

/** The data dir belongs to a cluster node (nats-server keeps its meta group there). */
export function isClusterStore(paths: DataPaths): boolean {
  // nats-server keeps accounts under STORE/jetstream/<account>; the meta
  // group lives in the system account's `_js_` (ours is named SYS).
  return ['SYS', '$SYS'].some((acc) =>
    existsSync(join(paths.jetstreamDir, 'jetstream', acc, '_js_'))
  );
}

function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() =>
        typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no free port'))
      );
    });
  });
}

/**
 * Runs `body` against the store of a stopped single node: a private
 * nats-server on a free loopback port opens the data dir's JetStream store
 * (decrypting with `key` when given), with one user, created for this run
 * and forgotten after. Its config lives in a private temporary directory
 * and holds no secret (the key reaches the server through its environment).
 */
export async function withOfflineStore<T>(
  paths: DataPaths,
  options: {
    key: AtRestKey | null;
    natsServerBin?: string;
    /** Open this store dir instead of the data dir's (a restore's staging dir). */
    storeDir?: string;
    /**
     * `legacy`: a 0.1 store, whose control state is in account APP (read it
     * with one connection as both). Default: the current layout.
     */
    layout?: 'current' | 'legacy';
  },
  body: (conns: StoreConns) => Promise<T>
): Promise<T> {
  if (await nodeRunning(paths)) {
    throw new OfflineError(
      `a node is running on ${paths.dataDir}; stop it first (backup works against a running node by itself)`
    );
  }
  if (isClusterStore(paths)) {
    throw new OfflineError(
      `${paths.dataDir} belongs to a cluster node: back up a running node of the cluster instead`
    );
  }
  await mkdir(paths.natsDir, { recursive: true, mode: 0o700 });
  await acquireLock(paths);
  let tmp: string;
  try {
    tmp = await mkdtemp(join(tmpdir(), 'sealbus-offline-'));
  } catch (err) {
    await releaseLock(paths);
    throw err;
  }
  let server: NatsServerProcess | undefined;
  const open: NatsConnection[] = [];
  try {
    const user = createUser();
    const appUser = createUser();
    const legacy = options.layout === 'legacy';
    const port = await freeLoopbackPort();
    const configFile = join(tmp, 'nats-server.conf');
    await writeFile(
      configFile,
      renderNatsConfig({
        server_name: 'sealbus-offline',
        host: '127.0.0.1',
        port,
        max_payload: 1024 * 1024,
        jetstream: jetstreamBlock(options.storeDir ?? paths.jetstreamDir, options.key !== null),
        accounts: legacy
          ? { APP: { jetstream: 'enabled', users: [{ nkey: user.getPublicKey() }] } }
          : accountsBlock(
              { internal: user.getPublicKey(), app: appUser.getPublicKey() },
              DEFAULT_APP_MAX_BYTES
            ),
      }),
      { mode: 0o600 }
    );
    server = await NatsServerProcess.start({
      configFile,
      ...(options.key ? { env: options.key.childEnv() } : {}),
      ...(options.natsServerBin ? { bin: options.natsServerBin } : {}),
    });
    const as = async (u: typeof user) => {
      const nc = await connect({
        servers: `nats://127.0.0.1:${port}`,
        name: 'membershipd-offline',
        authenticator: nkeyAuthenticator(u.getSeed()),
        maxReconnectAttempts: 0,
        timeout: 5_000,
      });
      open.push(nc);
      return nc;
    };
    const control = await as(user);
    return await body({ control, app: legacy ? control : await as(appUser) });
  } finally {
    for (const nc of open) await nc.close().catch(() => {});
    await server?.stop().catch(() => {});
    await rm(tmp, { recursive: true, force: true });
    await releaseLock(paths);
  }
}
