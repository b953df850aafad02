import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NatsServerProcess, renderNatsConfig, type NatsConfigValue } from '@sealbus/natsd';
import { freePort } from './ports.js';
import { tempDir, type TempDir } from './fs.js';

export interface TestNats extends AsyncDisposable {
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  readonly proc: NatsServerProcess;
  /** Stops the server, keeping its data directory. */
  stop(): Promise<void>;
  /** Starts it again on the same port and data directory. */
  restart(): Promise<void>;
  /** Stops the server and removes its directory. */
  dispose(): Promise<void>;
}

export interface StartNatsOptions {
  jetstream?: boolean;
  /** Extra top-level config entries (accounts, authorization, ...). */
  config?: Record<string, NatsConfigValue>;
}

/**
 * A real nats-server on loopback with a free port and its own temp
 * directory, for tests. Nothing here is mocked.
 */
export async function startNats(options: StartNatsOptions = {}): Promise<TestNats> {
  const dir: TempDir = await tempDir('sealbus-nats-');
  const configFile = join(dir.path, 'nats.conf');
  let port = 0;
  let proc: NatsServerProcess | undefined;

  const launch = async () => {
    for (let attempt = 0; ; attempt++) {
      if (port === 0 || attempt > 0) port = await freePort();
      const config: Record<string, NatsConfigValue> = {
        host: '127.0.0.1',
        port,
        ...(options.jetstream !== false ? { jetstream: { store_dir: join(dir.path, 'js') } } : {}),
        ...options.config,
      };
      await writeFile(configFile, renderNatsConfig(config));
      try {
        return await NatsServerProcess.start({ configFile });
      } catch (err) {
        if (attempt < 3 && /address already in use/i.test(String(err))) continue;
        throw err;
      }
    }
  };
  proc = await launch();

  const handle: TestNats = {
    get url() {
      return `nats://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    dir: dir.path,
    get proc() {
      return proc!;
    },
    async stop() {
      await proc?.stop();
    },
    async restart() {
      await proc?.stop();
      const keep = port;
      proc = await NatsServerProcess.start({ configFile });
      port = keep;
    },
    async dispose() {
      await proc?.stop();
      await dir.remove();
    },
    [Symbol.asyncDispose]() {
      return this.dispose();
    },
  };
  return handle;
}
