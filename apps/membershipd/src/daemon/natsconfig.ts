import type { NatsConfigValue } from '@sealbus/natsd';
import type { DataPaths } from './paths.js';

export interface EmbeddedNatsOptions {
  paths: DataPaths;
  /** Client port; the listener is loopback only. */
  port: number;
  /** `U...` nkey of the daemon's internal identity. */
  internalNkey: string;
  serverName: string;
}

/**
 * The nats-server config of the embedded single node. Account APP holds
 * JetStream (every bucket) and the internal identity, a static nkey user with
 * full permissions; the data-plane issue adds the auth callout for everyone
 * else. No secret is written here: an nkey user is known by its public key.
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
      APP: {
        jetstream: 'enabled',
        users: [{ nkey: o.internalNkey }],
      },
    },
  };
}
