import type { NatsConfigValue } from '@sealbus/natsd';
import type { DataPaths } from './paths.js';

export interface EmbeddedNatsOptions {
  paths: DataPaths;
  /** Client port; the listener is loopback only. */
  port: number;
  /** `U…` nkeys of the daemon's own users. */
  users: { internal: string; service: string; system: string };
  /** Public keys of the auth callout: issuer account (`A…`) and curve key (`X…`). */
  callout: { issuer: string; xkey: string };
  serverName: string;
}

/**
 * The nats-server config of the embedded single node:
 * - account APP holds JetStream (buckets, audit, room streams), the daemon's
 *   internal user (full permissions) and, through the callout, every user;
 * - account AUTH holds only the callout service user;
 * - account SYS is the system account (CONNZ, KICK);
 * - every other connection goes through the auth callout, whose requests
 *   are encrypted to the callout's curve key.
 * No secret is written here: nkey users and keys appear by public key only.
 */
export function embeddedNatsConfig(o: EmbeddedNatsOptions): Record<string, NatsConfigValue> {
  return {
    server_name: o.serverName,
    host: '127.0.0.1',
    port: o.port,
    pid_file: o.paths.natsPidFile,
    // Client payloads are small control messages and sealed frames.
    max_payload: 1024 * 1024,
    jetstream: {
      store_dir: o.paths.jetstreamDir,
    },
    accounts: {
      AUTH: { users: [{ nkey: o.users.service }] },
      APP: { jetstream: 'enabled', users: [{ nkey: o.users.internal }] },
      SYS: { users: [{ nkey: o.users.system }] },
    },
    system_account: 'SYS',
    authorization: {
      auth_callout: {
        issuer: o.callout.issuer,
        account: 'AUTH',
        auth_users: [o.users.service, o.users.internal, o.users.system],
        xkey: o.callout.xkey,
      },
    },
  };
}
