import http from 'node:http';

/** What the lying control plane may do to one answer: return a new body, or undefined to pass it on. */
export type Lie = (
  req: { method: string; path: string; asker: string | undefined },
  body: any
) => any;

/**
 * A control plane that lies: an HTTP proxy in front of membershipd that
 * forwards every request as it came (the SDK's signature covers the proxy's
 * name, which the daemon is told to accept with `--authority`) and may
 * rewrite any JSON answer. `asker` is the signer's keyid, so a lie can be
 * told to one member only.
 */
export class LyingProxy {
  readonly #server: http.Server;
  readonly #target: URL;
  lie: Lie | undefined;
  /** Every path asked, in order (to see what the SDK fetched). */
  readonly asked: string[] = [];

  private constructor(target: string) {
    this.#target = new URL(target);
    this.#server = http.createServer((req, res) => this.#forward(req, res));
  }

  static async start(target: string, port: number): Promise<LyingProxy> {
    const p = new LyingProxy(target);
    await new Promise<void>((r) => p.#server.listen(port, '127.0.0.1', r));
    return p;
  }

  get url(): string {
    const a = this.#server.address() as { port: number };
    return `http://127.0.0.1:${a.port}`;
  }

  #forward(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      this.asked.push(`${req.method} ${path}`);
      const keyid = /keyid="([0-9a-f]+)"/.exec(String(req.headers['signature-input'] ?? ''))?.[1];
      const up = http.request(
        {
          host: this.#target.hostname,
          port: this.#target.port,
          method: req.method,
          path,
          headers: req.headers,
          agent: false,
        },
        (ur) => {
          const body: Buffer[] = [];
          ur.on('data', (c: Buffer) => body.push(c));
          ur.on('end', () => {
            let out = Buffer.concat(body);
            const headers = { ...ur.headers };
            if (this.lie && /json/.test(String(ur.headers['content-type']))) {
              try {
                const changed = this.lie(
                  { method: req.method ?? 'GET', path: path.split('?')[0]!, asker: keyid },
                  JSON.parse(out.toString('utf8'))
                );
                if (changed !== undefined) out = Buffer.from(JSON.stringify(changed));
              } catch {
                /* an answer the lie cannot read passes as it is */
              }
            }
            headers['content-length'] = String(out.length);
            delete headers['transfer-encoding'];
            res.writeHead(ur.statusCode ?? 502, headers);
            res.end(out);
          });
        }
      );
      up.on('error', () => {
        res.writeHead(502);
        res.end();
      });
      up.end(Buffer.concat(chunks));
    });
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise((r) => this.#server.close(r));
  }
}
