import { envRef, type NatsConfigValue } from '@sealbus/natsd';
import { NATS_KEY_ENV } from './atrest.js';
import { ROUTE_SECRET_ENV, ROUTE_USER, routeUrlEnv, type RouteSecret } from './routesecret.js';
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
  /**
   * The shared route secret: required of inbound routes, presented on
   * solicited ones (the route URLs then come from the environment). A
   * cluster has this, mutual TLS, or both.
   */
  secret?: RouteSecret;
}

export interface EmbeddedNatsOptions {
  paths: DataPaths;
  /** Client listen address; loopback unless TLS protects a wider listener. */
  host: string;
  port: number;
  /** `U…` nkeys of the daemon's own users. */
  users: { internal: string; app: string; service: string; system: string };
  /** JetStream storage cap of account APP (room streams), bytes. */
  appMaxBytes?: number;
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
  /** JetStream's sync policy (default `always`). */
  jetstreamSync?: JetStreamSync;
}

/**
 * When JetStream writes reach the disk: `always` (each write fsynced before
 * it is acknowledged: an acknowledged change survives power loss) or a
 * duration in ms between flushes (nats-server's default is 2 minutes; an
 * acknowledged write can be lost with the machine's power).
 */
export type JetStreamSync = 'always' | number;

/** The default: acknowledged changes (users, revocations, audit records) survive power loss. */
export const DEFAULT_JETSTREAM_SYNC: JetStreamSync = 'always';

/** The `jetstream` block: store dir, sync policy and, encrypted, the cipher and an env reference to the key. */
export function jetstreamBlock(
  storeDir: string,
  atRest: boolean,
  sync: JetStreamSync = DEFAULT_JETSTREAM_SYNC
): Record<string, NatsConfigValue> {
  return {
    store_dir: storeDir,
    sync_interval: sync === 'always' ? 'always' : `${Math.max(1, Math.round(sync))}ms`,
    ...(atRest ? { cipher: 'chachapoly', key: envRef(NATS_KEY_ENV) } : {}),
  };
}

/**
 * The accounts of a membershipd deployment. Control state and user traffic
 * never share one: a user connection can only ever reach what its account
 * holds, and nothing in APP can address SEALBUS except the one service the
 * daemon answers there.
 */
export const ACCOUNTS = Object.freeze({
  /** Control state: buckets, audit stream, nonces, change subject; the daemon's internal user only. */
  control: 'SEALBUS',
  /** Room subjects and room streams; every callout user, and the daemon's app user. */
  app: 'APP',
  /** The callout service user only. */
  auth: 'AUTH',
  system: 'SYS',
});

/**
 * Persisted rooms are written through the daemon: a writer publishes a
 * sealed frame to `sealbus.append.<room>` in APP, which reaches the daemon
 * in SEALBUS as a service import carrying the server-set identity of the
 * publisher (`Nats-Request-Info`). No user ever publishes onto a subject a
 * stream captures, so JetStream never answers a user-chosen reply subject.
 */
export const APPEND_SERVICE = 'sealbus.append.*';

/** Default JetStream storage cap of account APP. */
export const DEFAULT_APP_MAX_BYTES = 10 * 1024 ** 3;

/**
 * The nats-server config a membershipd node generates:
 * - account SEALBUS holds the control state in JetStream (buckets, audit,
 *   nonces) and the change subject, with the daemon's internal user only;
 *   it exports the append service and nothing else;
 * - account APP holds room subjects and room streams (JetStream capped by
 *   `appMaxBytes`, so room traffic cannot starve the control state), the
 *   daemon's app user and, through the callout, every user; it imports the
 *   append service with `share`, so the daemon learns who published;
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
            routes: o.cluster.secret
              ? o.cluster.routes.map((_, i) => envRef(routeUrlEnv(i)))
              : o.cluster.routes,
            ...(o.cluster.secret
              ? {
                  authorization: {
                    user: ROUTE_USER,
                    password: envRef(ROUTE_SECRET_ENV),
                    timeout: 2,
                  },
                }
              : {}),
            pool_size: -1,
            no_advertise: true,
            ...(o.cluster.advertise ? { advertise: o.cluster.advertise } : {}),
            ...(o.cluster.tls ? { tls: tls(o.cluster.tls, true) } : {}),
          },
        }
      : {}),
    jetstream: jetstreamBlock(o.paths.jetstreamDir, o.atRest ?? false, o.jetstreamSync),
    accounts: accountsBlock(o.users, o.appMaxBytes ?? DEFAULT_APP_MAX_BYTES),
    system_account: ACCOUNTS.system,
    authorization: {
      timeout: AUTH_TIMEOUT_S,
      auth_callout: {
        issuer: o.callout.issuer,
        account: ACCOUNTS.auth,
        auth_users: [o.users.service, o.users.internal, o.users.app, o.users.system],
        xkey: o.callout.xkey,
      },
    },
  };
}

/** The `accounts` block (also used by offline tools, with their own users). */
export function accountsBlock(
  users: { internal: string; app: string; service?: string; system?: string },
  appMaxBytes: number
): Record<string, NatsConfigValue> {
  return {
    ...(users.service ? { [ACCOUNTS.auth]: { users: [{ nkey: users.service }] } } : {}),
    [ACCOUNTS.control]: {
      jetstream: 'enabled',
      users: [{ nkey: users.internal }],
      // A request with a reply subject would leave a response mapping behind
      // for the threshold; the daemon never answers on it anyway.
      exports: [{ service: APPEND_SERVICE, response_threshold: '2s' }],
    },
    [ACCOUNTS.app]: {
      jetstream: { max_file: appMaxBytes, max_mem: 64 * 1024 * 1024 },
      users: [{ nkey: users.app }],
      imports: [{ service: { account: ACCOUNTS.control, subject: APPEND_SERVICE }, share: true }],
    },
    ...(users.system ? { [ACCOUNTS.system]: { users: [{ nkey: users.system }] } } : {}),
  };
}
