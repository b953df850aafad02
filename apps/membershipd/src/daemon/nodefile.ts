import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '@sealbus/crypto';

/** `DATA/node.json`: where a running node listens. Holds no secret. */
export interface NodeInfo {
  version: string;
  pid: number;
  nats_url: string;
  http_url: string;
  embedded: boolean;
  nats_pid: number | null;
  /** CA that verifies this node's TLS (NATS and HTTPS), when TLS is on. */
  tls_ca: string | null;
  server_name: string | null;
  started_at: string;
  /** The Prometheus listener (`serve --metrics`); null or absent when off. */
  metrics_url?: string | null;
}

export async function writeNodeInfo(path: string, info: NodeInfo): Promise<void> {
  await writeFileAtomic(path, JSON.stringify(info, null, 2) + '\n', { mode: 0o644 });
}

export async function readNodeInfo(path: string): Promise<NodeInfo | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as NodeInfo;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`${path}: unreadable node file (${(err as Error).message})`, { cause: err });
  }
}
