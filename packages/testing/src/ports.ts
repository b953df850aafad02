import { createServer } from 'node:net';

/**
 * A TCP port that was free on loopback a moment ago. Another process could
 * take it before the caller binds it; tests that start servers retry on
 * "address in use" rather than trusting this blindly.
 */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() =>
        typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))
      );
    });
  });
}

/** `n` distinct free ports. */
export async function freePorts(n: number, host = '127.0.0.1'): Promise<number[]> {
  const ports = new Set<number>();
  for (let i = 0; ports.size < n && i < n * 20; i++) ports.add(await freePort(host));
  if (ports.size < n) throw new Error(`could not find ${n} free ports`);
  return [...ports];
}
