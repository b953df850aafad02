import { X509Certificate } from 'node:crypto';
import tls, { createSecureContext } from 'node:tls';
import { readFileSync } from 'node:fs';
import type { TlsFiles } from './natsconfig.js';

/** Extended key usages (OIDs) a certificate must allow for its port. */
export const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
export const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

/** A certificate and key read from disk and checked, ready to be served. */
export interface CheckedPair {
  cert: Buffer;
  key: Buffer;
  leaf: X509Certificate;
}

// OpenSSL also reads `X509 CERTIFICATE` and `TRUSTED CERTIFICATE` blocks as
// certificates: they are read here too, in order, so the leaf judged is the
// one OpenSSL would serve.
const PEM_CERT =
  /-----BEGIN (?:X509 |TRUSTED )?CERTIFICATE-----[\s\S]+?-----END (?:X509 |TRUSTED )?CERTIFICATE-----/g;

/** Every certificate of a PEM file, in order (a chain: the leaf first). */
export function pemCertificates(pem: Buffer | string, file: string): X509Certificate[] {
  const blocks = String(pem).match(PEM_CERT) ?? [];
  if (blocks.length === 0) throw new Error(`${file}: no PEM certificate`);
  return blocks.map((b) => {
    try {
      return new X509Certificate(
        b.replace(/(BEGIN|END) (?:X509 |TRUSTED )CERTIFICATE/g, '$1 CERTIFICATE')
      );
    } catch (err) {
      throw new Error(`${file}: not a certificate (${(err as Error).message})`, { cause: err });
    }
  });
}

/** The subject alternative names of a certificate, as `DNS:x` / `IP Address:y`. */
export function subjectAltNames(c: X509Certificate): Set<string> {
  return new Set(
    (c.subjectAltName ?? '')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)
  );
}

/**
 * Reads a renewed certificate and key and refuses them, before anything is
 * swapped in, unless a node could serve them to the clients and peers that
 * trust it today: the key matches, the certificate is valid now, it chains
 * to the configured CA (`files.ca`; intermediates may follow the leaf in
 * the certificate file), it allows the usages its port needs, and it still
 * names everything the certificate in use named (a renewal that drops a
 * name, or another node's certificate, would turn clients away: changing
 * names is a restart, done deliberately).
 */
export function checkRenewedPair(
  what: string,
  files: TlsFiles,
  o: { usages: string[]; current?: X509Certificate; now?: Date }
): CheckedPair {
  const cert = readFileSync(files.cert);
  const key = readFileSync(files.key);
  const fail = (why: string): never => {
    throw new Error(`${what} certificate ${files.cert}: ${why}`);
  };
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    fail((err as Error).message);
  }
  const chain = pemCertificates(cert, files.cert);
  const leaf = chain[0]!;
  const now = o.now ?? new Date();
  if (new Date(leaf.validFrom) > now) fail(`not valid before ${leaf.validFrom}`);
  if (new Date(leaf.validTo) <= now) fail(`expired ${leaf.validTo}`);
  if (leaf.ca) fail('is a CA certificate, not a node certificate');
  const eku = leaf.keyUsage; // extended key usages; undefined: any
  if (eku) {
    const missing = o.usages.filter((u) => !eku.includes(u));
    if (missing.length)
      fail(
        `does not allow ${missing.map((u) => (u === SERVER_AUTH ? 'serverAuth' : u === CLIENT_AUTH ? 'clientAuth' : u)).join(', ')}`
      );
  }
  if (files.ca) {
    const anchors = pemCertificates(readFileSync(files.ca), files.ca);
    // Walk up through the intermediates the certificate file carries, at
    // most a few steps, until a configured CA signed the one in hand.
    let at = leaf;
    let trusted = false;
    for (let step = 0; step < 5 && !trusted; step++) {
      if (anchors.some((a) => at.checkIssued(a) && at.verify(a.publicKey))) {
        trusted = true;
        break;
      }
      const up = chain.slice(1).find((c) => c.ca && at.checkIssued(c) && at.verify(c.publicKey));
      if (!up) break;
      if (new Date(up.validTo) <= now) fail(`intermediate ${up.subject} expired ${up.validTo}`);
      at = up;
    }
    if (!trusted) fail(`is not signed by the configured CA ${files.ca}`);
  }
  if (o.current) {
    const names = subjectAltNames(leaf);
    const dropped = [...subjectAltNames(o.current)].filter((n) => !names.has(n));
    if (dropped.length)
      fail(
        `does not name ${dropped.join(', ')}, which the certificate in use names (restart to change names)`
      );
  }
  return { cert, key, leaf };
}

/**
 * {@link checkRenewedPair}, then the authority on what clients accept:
 * OpenSSL itself. The pair is served on a loopback listener of this process
 * and a client trusting only the configured CA connects to it and checks
 * every name the certificate in use has; for a route pair (clientAuth) a
 * second handshake presents it as a client certificate to a server that
 * requires one from that CA. Path length, key usage, critical extensions,
 * name constraints and every date in the chain are judged as a peer would
 * judge them; nothing the static checks miss gets through.
 */
export async function verifyRenewedPair(
  what: string,
  files: TlsFiles,
  o: { usages: string[]; current?: X509Certificate; now?: Date }
): Promise<CheckedPair> {
  const pair = checkRenewedPair(what, files, o);
  // No CA configured: clients (and this daemon's own connections) trust the
  // system's roots, so the handshake does too.
  const ca = files.ca ? readFileSync(files.ca) : undefined;
  const trusted = files.ca ?? 'the system trust store';
  const names = o.current ? [...subjectAltNames(o.current)] : [];
  const why = await handshake(pair, ca, names, false);
  if (why)
    throw new Error(
      `${what} certificate ${files.cert}: a client trusting ${trusted} refuses it (${why})`
    );
  if (o.usages.includes(CLIENT_AUTH)) {
    const asClient = await handshake(pair, ca, [], true);
    if (asClient)
      throw new Error(
        `${what} certificate ${files.cert}: a peer trusting ${trusted} refuses it as a client certificate (${asClient})`
      );
  }
  return pair;
}

/** One loopback handshake; undefined when the peer accepts, else why not. */
function handshake(
  pair: CheckedPair,
  ca: Buffer | undefined,
  names: string[],
  asClient: boolean
): Promise<string | undefined> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (v: string | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      server.close();
      resolve(v);
    };
    const timer = setTimeout(() => done('no handshake within 5 s'), 5_000);
    let server: tls.Server;
    try {
      server = tls.createServer(
        asClient
          ? {
              cert: pair.cert,
              key: pair.key,
              requestCert: true,
              rejectUnauthorized: false,
              ...(ca ? { ca } : {}),
            }
          : { cert: pair.cert, key: pair.key },
        (s) => {
          if (asClient) {
            done(s.authorized ? undefined : String(s.authorizationError ?? 'not authorised'));
          }
          s.end();
        }
      );
    } catch (err) {
      clearTimeout(timer);
      resolve(`cannot serve it: ${(err as Error).message}`);
      return;
    }
    server.on('tlsClientError', (err) => {
      if (asClient) done(`client certificate: ${err.message}`);
    });
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      const s = tls.connect(
        asClient
          ? { host: '127.0.0.1', port, cert: pair.cert, key: pair.key, rejectUnauthorized: false }
          : {
              host: '127.0.0.1',
              port,
              ...(ca ? { ca } : {}),
              // Names are checked below, each one the certificate in use has.
              checkServerIdentity: () => undefined,
            },
        () => {
          if (!asClient) {
            const peer = s.getPeerCertificate();
            for (const n of names) {
              const [kind, value] = splitName(n);
              if (!kind) continue;
              const err = tls.checkServerIdentity(kind === 'IP' ? value : value, peer);
              if (err) {
                s.destroy();
                done(`name ${n}: ${err.message}`);
                return;
              }
            }
            s.destroy();
            done(undefined);
          }
        }
      );
      s.on('error', (err: NodeJS.ErrnoException) => {
        if (!asClient) done(err.code ?? err.message);
      });
      s.on('close', () => {
        // As a client, the server's verdict is what counts (set above).
        if (asClient) setTimeout(() => done('the server closed without a verdict'), 1_000).unref();
      });
    });
  });
}

/** `DNS:name` or `IP Address:1.2.3.4` → its kind and value. */
function splitName(n: string): [string, string] | [undefined, undefined] {
  if (n.startsWith('DNS:')) return ['DNS', n.slice(4)];
  if (n.startsWith('IP Address:')) return ['IP', n.slice('IP Address:'.length)];
  return [undefined, undefined];
}
