import http from 'node:http';
import { requestSigner, signRequest, type Identity, type SignOptions } from '@sealbus/crypto';

export interface Answer {
  status: number;
  code: string | undefined;
  headers: http.IncomingHttpHeaders;
  json: any;
}

/**
 * Sends a request with exactly this request target (no URL parsing, so
 * `/rooms/%2e%2e/users` and `//users` go out as written), these headers
 * and body, optionally from a chosen loopback source address.
 */
export function sendRaw(
  base: string,
  method: string,
  target: string,
  headers: Record<string, string>,
  body?: string,
  localAddress?: string
): Promise<Answer> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: u.hostname,
        port: u.port,
        method,
        path: target,
        headers,
        agent: false,
        timeout: 15_000,
        ...(localAddress ? { localAddress } : {}),
      },
      (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => {
          let json: any;
          try {
            json = JSON.parse(text);
          } catch {
            json = text;
          }
          resolve({
            status: res.statusCode ?? 0,
            code: json?.error?.code,
            headers: res.headers,
            json,
          });
        });
      }
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Headers signed (validly, with the Sealbus profile) over exactly this
 * authority and raw target: the signer's view, not a URL parser's.
 */
export function signRaw(
  id: Identity,
  method: string,
  authority: string,
  target: string,
  body?: string,
  opts: SignOptions = {}
): Record<string, string> {
  const q = target.indexOf('?');
  const url = {
    host: authority,
    pathname: q < 0 ? target : target.slice(0, q),
    search: q < 0 ? '' : target.slice(q),
  } as URL;
  const bytes = body === undefined ? undefined : new TextEncoder().encode(body);
  return {
    host: authority,
    ...signRequest(
      requestSigner(id),
      { method, url, ...(bytes ? { body: bytes, contentType: 'application/json' } : {}) },
      opts
    ),
  };
}

/** The nonce a signed request carries (to show it was never consumed). */
export function nonceOf(headers: Record<string, string>): string {
  return /;nonce="([^"]+)"/.exec(headers['signature-input']!)![1]!;
}
