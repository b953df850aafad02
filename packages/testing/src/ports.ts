import { createServer } from 'node:net';

/**
 * A TCP port that was free on loopback a moment ago, chosen below the
 * kernel's ephemeral range (Linux: 32768 and up), so the outgoing
 * connections of other tests running at the same time cannot take it
 * before the caller binds it. Another listener still could; tests that
 * start servers retry on "address in use" rather than trusting this blindly.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const free = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.unref();
      srv.once('error', () => resolve(false));
      srv.listen(port, host, () => srv.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port below 32000');
}

/** `n` distinct free ports. */
export async function freePorts(n: number, host = '127.0.0.1'): Promise<number[]> {
  const ports = new Set<number>();
  for (let i = 0; ports.size < n && i < n * 20; i++) ports.add(await freePort(host));
  if (ports.size < n) throw new Error(`could not find ${n} free ports`);
  return [...ports];
}
