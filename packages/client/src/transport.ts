import http from 'node:http';
import https from 'node:https';

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export interface TransportOptions {
  /** PEM CA bundle that pins the control plane's TLS certificates. */
  ca?: string | Buffer;
  timeoutMs: number;
}

/**
 * A keep-alive HTTP(S) transport on node:http. Headers go out exactly as
 * given (nothing added that a signature would have to cover), and a custom
 * CA can pin TLS, which fetch() cannot do without extra packages.
 */
export class Transport {
  readonly #http = new http.Agent({ keepAlive: true, maxSockets: 64 });
  readonly #https: https.Agent;
  readonly #timeoutMs: number;

  constructor(o: TransportOptions) {
    this.#https = new https.Agent({
      keepAlive: true,
      maxSockets: 64,
      ...(o.ca ? { ca: o.ca } : {}),
    });
    this.#timeoutMs = o.timeoutMs;
  }

  send(
    method: string,
    url: URL,
    headers: Record<string, string>,
    body?: Uint8Array
  ): Promise<RawResponse> {
    const mod = url.protocol === 'https:' ? https : http;
    return new Promise((resolve, reject) => {
      const req = mod.request(
        url,
        {
          method,
          headers: body?.length ? { ...headers, 'content-length': String(body.length) } : headers,
          agent: url.protocol === 'https:' ? this.#https : this.#http,
          timeout: this.#timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (d: Buffer) => chunks.push(d));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: Buffer.concat(chunks),
            })
          );
          res.on('error', reject);
        }
      );
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.#timeoutMs} ms`)));
      req.on('error', reject);
      req.end(body?.length ? body : undefined);
    });
  }

  close(): void {
    this.#http.destroy();
    this.#https.destroy();
  }
}
