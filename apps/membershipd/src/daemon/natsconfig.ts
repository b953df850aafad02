import { envRef, type NatsConfigValue } from '@sealbus/natsd';
import { NATS_KEY_ENV } from './atrest.js';
import type { DataPaths } from './paths.js';

/** TLS files: certificate, its key, and the CA that verifies peers. */
export interface TlsFiles {
  cert: string;
  key: string;
  ca?: string;
}

/** Cluster membership of one node (routes to its peers). */
export interface ClusterOptions {
  name: string;
  host: string;
  port: number;
  /** `nats-route://host:port` of the other nodes. */
  routes: string[];
  /** Address peers should use for this node, if not the listen address. */
  advertise?: string;
  /** Mutual TLS on routes, with its own CA (a client certificate is never a route certificate). */
  tls?: TlsFiles & { ca: string };
}

export interface EmbeddedNatsOptions {
  paths: DataPaths;
  /** Client listen address; loopback unless TLS protects a wider listener. */
  host: string;
  port: number;
  /** `U…` nkeys of the daemon's own users. */
  users: { internal: string; service: string; system: string };
  /** Public keys of the auth callout: issuer account (`A…`) and curve key (`X…`). */
  callout: { issuer: string; xkey: string };
  serverName: string;
  /** TLS on the client port. */
  tls?: TlsFiles;
  clientAdvertise?: string;
  cluster?: ClusterOptions;
  /**
   * Encrypt the JetStream store (ChaCha20-Poly1305). The key is not in the
   * config: it is a `$SEALBUS_JS_KEY` reference the server resolves from the
   * environment the daemon gives its child.
   */
  atRest?: boolean;
}

/** The `jetstream` block: store dir and, encrypted, the cipher and an env reference to the key. */
export function jetstreamBlock(storeDir: string, atRest: boolean): Record<string, NatsConfigValue> {
  return {
    store_dir: storeDir,
    ...(atRest ? { cipher: 'chachapoly', key: envRef(NATS_KEY_ENV) } : {}),
  };
}

/**
 * The nats-server config a membershipd node generates:
 * - account APP holds JetStream (buckets, audit, room streams), the daemon's
 *   internal user (full permissions) and, through the callout, every user;
 * - account AUTH holds only the callout service user;
 * - account SYS is the system account (CONNZ, KICK);
 * - every other connection goes through the auth callout, whose requests
 *   are encrypted to the callout's curve key;
 * - in a cluster: one route per peer (no pooling) and no gossiped addresses,
 *   which keeps the JetStream meta group stable on small clusters.
 * No secret is written here: nkey users and keys appear by public key only.
 */
/**
 * nats-server's auth timeout (seconds): how long a connecting client may
 * wait for the callout. A stream leader election after a node dies takes
 * 4-9 s, and a callout that rides it out is better than a refused client.
 */
export const AUTH_TIMEOUT_S = 12;

export function embeddedNatsConfig(o: EmbeddedNatsOptions): Record<string, NatsConfigValue> {
  const tls = (t: TlsFiles, verify: boolean) => ({
    cert_file: t.cert,
    key_file: t.key,
    ...(t.ca ? { ca_file: t.ca } : {}),
    verify,
    timeout: 5,
  });
  return {
    server_name: o.serverName,
    host: o.host,
    port: o.port,
    pid_file: o.paths.natsPidFile,
    // Client payloads are small control messages and sealed frames.
    max_payload: 1024 * 1024,
    ...(o.tls ? { tls: tls(o.tls, false) } : {}),
    ...(o.clientAdvertise ? { client_advertise: o.clientAdvertise } : {}),
    ...(o.cluster
      ? {
          cluster: {
            name: o.cluster.name,
            host: o.cluster.host,
            port: o.cluster.port,
            routes: o.cluster.routes,
            pool_size: -1,
            no_advertise: true,
            ...(o.cluster.advertise ? { advertise: o.cluster.advertise } : {}),
            ...(o.cluster.tls ? { tls: tls(o.cluster.tls, true) } : {}),
          },
        }
      : {}),
    jetstream: jetstreamBlock(o.paths.jetstreamDir, o.atRest ?? false),
    accounts: {
      AUTH: { users: [{ nkey: o.users.service }] },
      APP: { jetstream: 'enabled', users: [{ nkey: o.users.internal }] },
      SYS: { users: [{ nkey: o.users.system }] },
    },
    system_account: 'SYS',
    authorization: {
      timeout: AUTH_TIMEOUT_S,
      auth_callout: {
        issuer: o.callout.issuer,
        account: 'AUTH',
        auth_users: [o.users.service, o.users.internal, o.users.system],
        xkey: o.callout.xkey,
      },
    },
  };
}
