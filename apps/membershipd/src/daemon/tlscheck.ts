import { X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
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

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Every certificate of a PEM file, in order (a chain: the leaf first). */
export function pemCertificates(pem: Buffer | string, file: string): X509Certificate[] {
  const blocks = String(pem).match(PEM_CERT) ?? [];
  if (blocks.length === 0) throw new Error(`${file}: no PEM certificate`);
  return blocks.map((b) => {
    try {
      return new X509Certificate(b);
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
