// What a TLS reload (SIGHUP) accepts: each case is a pair a careless or
// hostile renewal could hand the node, made with openssl, and the control
// is the honest renewal from certs.sh --renew.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CLIENT_AUTH,
  SERVER_AUTH,
  verifyRenewedPair,
  pemCertificates,
} from '../src/daemon/tlscheck.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../../..');
const certsSh = join(root, 'deploy/cluster/certs.sh');

let dir: string;
const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });

/** A leaf signed by `ca` (a name in dir) with the given extensions and dates. */
function leaf(
  name: string,
  ca: string,
  o: { sans?: string; eku?: string; days?: number; ca?: boolean } = {}
): { cert: string; key: string } {
  const ext = [
    `subjectAltName=${o.sans ?? 'IP:127.0.0.1,DNS:localhost'}`,
    ...(o.eku === '' ? [] : [`extendedKeyUsage=${o.eku ?? 'serverAuth'}`]),
    o.ca ? 'basicConstraints=critical,CA:TRUE' : 'basicConstraints=CA:FALSE',
    ...(o.ca ? ['keyUsage=critical,keyCertSign'] : []),
  ].join('\n');
  writeFileSync(join(dir, `${name}.ext`), ext + '\n');
  ssl(
    'req',
    '-new',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.csr`,
    '-subj',
    `/CN=${name}`
  );
  ssl(
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}.crt`,
    '-CAkey',
    `${ca}.key`,
    '-set_serial',
    String(Math.floor(Math.random() * 1e9)),
    '-days',
    String(o.days ?? 30),
    '-extfile',
    `${name}.ext`,
    '-out',
    `${name}.crt`
  );
  return { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
}

function selfCa(name: string): void {
  ssl(
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.crt`,
    '-days',
    '30',
    '-subj',
    `/CN=${name}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign'
  );
}

/** The reason verifyRenewedPair (static checks, then handshakes) gives, or 'accepted'. */
async function verdict(
  files: { cert: string; key: string },
  o: { ca?: string; usages?: string[]; current?: string; now?: Date } = {}
): Promise<string> {
  try {
    await verifyRenewedPair(
      'HTTPS',
      { ...files, ...(o.ca ? { ca: o.ca } : {}) },
      {
        usages: o.usages ?? [SERVER_AUTH],
        ...(o.current ? { current: pemCertificates(readFileSync(o.current), o.current)[0]! } : {}),
        ...(o.now ? { now: o.now } : {}),
      }
    );
    return 'accepted';
  } catch (err) {
    return (err as Error).message;
  }
}

describe('TLS reload: what a renewed pair must be', () => {
  let tls: string;
  let inUse: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'sealbus-tlscheck-'));
    tls = join(dir, 'tls');
    const r = spawnSync('bash', [certsSh, tls, 'n1=127.0.0.1,localhost'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    inUse = join(dir, 'in-use.crt');
    writeFileSync(inUse, readFileSync(join(tls, 'n1.crt')));
    const again = spawnSync('bash', [certsSh, '--renew', tls, 'n1=127.0.0.1,localhost'], {
      encoding: 'utf8',
    });
    assert.equal(again.status, 0, again.stderr);
    // The CAs under names the helpers use.
    writeFileSync(join(dir, 'ca.crt'), readFileSync(join(tls, 'client-ca.crt')));
    writeFileSync(join(dir, 'ca.key'), readFileSync(join(tls, 'client-ca.key')));
    selfCa('foreign');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const ca = () => join(dir, 'ca.crt');

  test('the control: an honest certs.sh --renew pair is accepted (server and route)', async () => {
    const files = { cert: join(tls, 'n1.crt'), key: join(tls, 'n1.key') };
    assert.equal(await verdict(files, { ca: ca(), current: inUse }), 'accepted');
    const route = { cert: join(tls, 'n1-route.crt'), key: join(tls, 'n1-route.key') };
    assert.equal(
      await verdict(route, {
        ca: join(tls, 'route-ca.crt'),
        usages: [SERVER_AUTH, CLIENT_AUTH],
        current: inUse,
      }),
      'accepted'
    );
  });

  test('B-43: certs.sh leaves last 825 days and its CAs 10 years (3650 days)', async () => {
    const days = (file: string) => {
      const c = pemCertificates(readFileSync(file), file)[0]!;
      return Math.round((Date.parse(c.validTo) - Date.parse(c.validFrom)) / 86_400_000);
    };
    assert.equal(days(join(tls, 'n1.crt')), 825);
    assert.equal(days(join(tls, 'n1-route.crt')), 825);
    assert.equal(days(join(tls, 'client-ca.crt')), 3650);
    assert.equal(days(join(tls, 'route-ca.crt')), 3650);
  });

  test('a key that does not match the certificate is refused', async () => {
    const files = { cert: join(tls, 'n1.crt'), key: join(tls, 'n1-route.key') };
    assert.match(await verdict(files, { ca: ca() }), /key values mismatch|mismatch/i);
  });

  test('a pair from another CA (key matching) is refused', async () => {
    const other = leaf('other', 'foreign');
    assert.match(await verdict(other, { ca: ca() }), /not signed by the configured CA/);
  });

  test('an expired certificate is refused (checked at a time after its end)', async () => {
    const files = leaf('short', 'ca', { days: 1 });
    assert.equal(await verdict(files, { ca: ca() }), 'accepted');
    assert.match(
      await verdict(files, { ca: ca(), now: new Date(Date.now() + 3 * 86_400_000) }),
      /expired/
    );
  });

  test('a certificate not valid yet is refused', async () => {
    const files = leaf('short2', 'ca', { days: 30 });
    assert.match(
      await verdict(files, { ca: ca(), now: new Date(Date.now() - 3 * 86_400_000) }),
      /not valid before/
    );
  });

  test('another node’s certificate (it drops a name the one in use has) is refused', async () => {
    const files = leaf('n2', 'ca', { sans: 'IP:127.0.0.2,DNS:n2.internal' });
    assert.equal(await verdict(files, { ca: ca() }), 'accepted', 'the CA check alone lets it in');
    assert.match(
      await verdict(files, { ca: ca(), current: inUse }),
      /does not name IP Address:127\.0\.0\.1, DNS:localhost/
    );
  });

  test('a renewal adding a name is accepted', async () => {
    const files = leaf('wider', 'ca', { sans: 'IP:127.0.0.1,DNS:localhost,DNS:n1.internal' });
    assert.equal(await verdict(files, { ca: ca(), current: inUse }), 'accepted');
  });

  test('a client-only certificate on a server port and a server-only one on a route are refused', async () => {
    const clientOnly = leaf('clientonly', 'ca', { eku: 'clientAuth' });
    assert.match(await verdict(clientOnly, { ca: ca() }), /does not allow serverAuth/);
    const serverOnly = leaf('serveronly', 'ca', { eku: 'serverAuth' });
    assert.match(
      await verdict(serverOnly, { ca: ca(), usages: [SERVER_AUTH, CLIENT_AUTH] }),
      /does not allow clientAuth/
    );
  });

  test('a CA certificate is refused as a node certificate', async () => {
    const files = leaf('subca', 'ca', { ca: true, eku: '' });
    assert.match(await verdict(files, { ca: ca() }), /CA certificate/);
  });

  test('a chain through an intermediate in the certificate file is accepted; without it, refused', async () => {
    const inter = leaf('inter', 'ca', { ca: true, eku: '' });
    void inter;
    const files = leaf('viainter', 'inter');
    assert.match(await verdict(files, { ca: ca() }), /not signed by the configured CA/);
    const chained = join(dir, 'viainter-chain.crt');
    writeFileSync(
      chained,
      Buffer.concat([readFileSync(files.cert), readFileSync(join(dir, 'inter.crt'))])
    );
    assert.equal(await verdict({ cert: chained, key: files.key }, { ca: ca() }), 'accepted');
  });

  test("without a configured CA the system trust store judges: a private CA's pair is refused", async () => {
    const files = { cert: join(tls, 'n1.crt'), key: join(tls, 'n1.key') };
    assert.match(await verdict(files, { current: inUse }), /system trust store refuses it/);
  });

  test('a file that is not PEM is a clear error, not a crash', async () => {
    const junk = join(dir, 'junk.crt');
    writeFileSync(junk, 'not a certificate\n');
    assert.match(
      await verdict({ cert: junk, key: join(tls, 'n1.key') }, { ca: ca() }),
      /HTTPS certificate/
    );
  });
});
