import { existsSync } from 'node:fs';
import { join } from 'node:path';

/**
 * What lives in a node's data directory. The README's files table mirrors
 * this; secrets are the `*.id` files (0600).
 */
export function dataPaths(dataDir: string) {
  const natsDir = join(dataDir, 'nats');
  return {
    dataDir,
    /** The daemon's privileged identity (secret, 0600). */
    internalId: join(dataDir, 'internal.id'),
    /** Admin #0, created on first start (secret, 0600). */
    adminId: join(dataDir, 'admin.id'),
    /** Auth callout keys (issuer + xkey), the same on every node (secret, 0600). */
    calloutKey: join(dataDir, 'callout.key'),
    /** Where this node listens, for `membershipd user ...` on the same host. */
    nodeFile: join(dataDir, 'node.json'),
    natsDir,
    natsConfig: join(natsDir, 'nats-server.conf'),
    natsPidFile: join(natsDir, 'nats-server.pid'),
    jetstreamDir: join(natsDir, 'jetstream'),
    /** Written once the store is initialised: encrypted or not, and a check value of its key. */
    storeMarker: join(natsDir, 'store.json'),
    /**
     * Written by a restore: the next start refuses requests signed before
     * it (the restored nonces bucket lacks those served after the backup),
     * then removes it.
     */
    restoredMarker: join(dataDir, 'restored.json'),
  };
}

export type DataPaths = ReturnType<typeof dataPaths>;

/**
 * A Sealbus 0.1 store keeps its control state in account APP; since 0.2 it
 * lives in account SEALBUS, out of users' reach. Such a store is never
 * reinterpreted: this returns the message that names the way forward, or
 * null for a store of the current layout (or none).
 */
export function legacyStoreLayout(paths: DataPaths): string | null {
  const app = join(paths.jetstreamDir, 'jetstream', 'APP', 'streams');
  if (!existsSync(join(app, 'KV_sealbus_users'))) return null;
  return (
    `${paths.dataDir} holds a Sealbus 0.1 store (control state in account APP, where users ` +
    `connect); this version keeps it in account SEALBUS. Stop here and run ` +
    `\`membershipd migrate --data ${paths.dataDir}\` (add --at-rest-key-file if the store is ` +
    'encrypted), which rewrites it offline and keeps the old store beside it; see docs/RUNBOOK.md'
  );
}
