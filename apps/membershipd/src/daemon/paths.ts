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
  };
}

export type DataPaths = ReturnType<typeof dataPaths>;
