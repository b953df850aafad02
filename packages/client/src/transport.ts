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
  /** Whole request, answer included: a server that trickles its answer is cut off. */
  timeoutMs: number;
  /** Largest answer read (default 4 MiB); a larger one is an error, not a buffer. */
  maxResponseBytes?: number;
}

export const DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

/**
 * A keep-alive HTTP(S) transport on node:http. Headers go out exactly as
 * given (nothing added that a signature would have to cover), and a custom
 * CA can pin TLS, which fetch() cannot do without extra packages.
 */
export class Transport {
  readonly #http = new http.Agent({ keepAlive: true, maxSockets: 64 });
  readonly #https: https.Agent;
  readonly #timeoutMs: number;
  readonly #maxBytes: number;

  constructor(o: TransportOptions) {
    this.#maxBytes = o.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    this.#https = new https.Agent({
      keepAlive: true,
      maxSockets: 64,
      ...(o.ca ? { ca: o.ca } : {}),
    });
    this.#timeoutMs = o.timeoutMs;
  }

  /**
   * One exchange. A kept-alive socket that the server closed just as it was
   * reused (its idle timeout racing our request) fails before any answer;
   * that exchange is sent once more on a fresh socket, with the same
   * headers: a request the server did process the first time is then
   * refused as a replay (same nonce), never executed twice.
   */
  async send(
    method: string,
    url: URL,
    headers: Record<string, string>,
    body?: Uint8Array
  ): Promise<RawResponse> {
    try {
      return await this.#send(method, url, headers, body);
    } catch (err) {
      if (!(err instanceof ReusedSocketClosed)) throw err;
      return this.#send(method, url, headers, body);
    }
  }

  #send(
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
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (d: Buffer) => {
            size += d.length;
            if (size > this.#maxBytes) {
              req.destroy(new Error(`answer larger than ${this.#maxBytes} bytes`));
              return;
            }
            chunks.push(d);
          });
          res.on('end', () => {
            clearTimeout(deadline);
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: Buffer.concat(chunks),
            });
          });
          res.on('error', reject);
        }
      );
      // A deadline for the whole exchange, not an idle timeout: a server
      // that sends one byte now and then would never trip the latter.
      const deadline = setTimeout(
        () => req.destroy(new Error(`no complete answer within ${this.#timeoutMs} ms`)),
        this.#timeoutMs
      );
      let answered = false;
      req.on('response', () => (answered = true));
      req.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(deadline);
        const closedUnderUs =
          req.reusedSocket && !answered && (err.code === 'ECONNRESET' || err.code === 'EPIPE');
        reject(closedUnderUs ? new ReusedSocketClosed(err) : err);
      });
      req.end(body?.length ? body : undefined);
    });
  }

  close(): void {
    this.#http.destroy();
    this.#https.destroy();
  }
}

/** A reused keep-alive socket closed by the server before it answered. */
class ReusedSocketClosed extends Error {
  constructor(cause: Error) {
    super(cause.message, { cause });
    this.name = 'ReusedSocketClosed';
  }
}
