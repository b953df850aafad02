import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { renderNatsConfig, type NatsConfigValue } from './config.js';
import { NatsdError } from './errors.js';
import { type NatsLogLine } from './process.js';
import {
  ConnectError,
  killQuietly,
  natsConnect,
  startNats,
  tempDir,
  waitFor,
  type MiniClient,
  type TempDir,
  type TestServer,
} from './test-support.js';

let dir: TempDir;

interface Cert {
  cert: string;
  key: string;
  fingerprint: string;
}

/** A self-signed P-256 certificate for 127.0.0.1: its own CA. */
function makeCert(name: string): Cert {
  const certFile = join(dir.path, `${name}.pem`);
  const keyFile = join(dir.path, `${name}.key`);
  // prettier-ignore
  const args = [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1',
    '-days', '2', '-keyout', keyFile, '-out', certFile,
  ];
  const r = spawnSync('openssl', args, { encoding: 'utf8', timeout: 20_000 });
  assert.equal(r.status, 0, r.stderr);
  const cert = readFileSync(certFile, 'utf8');
  return {
    cert,
    key: readFileSync(keyFile, 'utf8'),
    fingerprint: new X509Certificate(cert).fingerprint256,
  };
}

/** Replaces a file the way a renewal should: a new file renamed over the old one. */
async function replace(path: string, content: string): Promise<void> {
  await writeFile(`${path}.new`, content, { mode: 0o600 });
  await rename(`${path}.new`, path);
}

/** The TLS handshake failed because the served certificate is not from the trusted CA. */
const untrusted = (e: unknown) =>
  e instanceof ConnectError && /self-signed|certificate/i.test(e.message);
const refused = (code: string) => (e: unknown) => e instanceof NatsdError && e.code === code;

describe('NatsServerProcess.reload', { timeout: 120_000 }, () => {
  let one: Cert;
  let two: Cert;
  let certFile: string;
  let keyFile: string;
  let server: TestServer;
  let config: Record<string, NatsConfigValue>;
  const verdicts: NatsLogLine[] = [];
  const open: MiniClient[] = [];

  before(async () => {
    dir = await tempDir('natsd-reload-');
    one = makeCert('one');
    two = makeCert('two');
    certFile = join(dir.path, 'server.pem');
    keyFile = join(dir.path, 'server.key');
    await replace(certFile, one.cert);
    await replace(keyFile, one.key);
    server = await startNats(
      dir.path,
      (port) =>
        (config = {
          host: '127.0.0.1',
          port,
          tls: { cert_file: certFile, key_file: keyFile, timeout: 2 },
        }),
      {
        onLog: (l) => {
          if (/reload/i.test(l.msg) && !l.msg.startsWith('Reloaded: ')) verdicts.push(l);
        },
      }
    );
  });
  after(async () => {
    for (const c of open) c.close();
    try {
      await server?.proc.stop(5_000);
    } finally {
      killQuietly(server?.proc.running ? server.proc.pid : undefined);
      await dir.remove();
    }
  });

  const client = async (ca: string) => {
    const c = await natsConnect({ port: server.port, ca });
    open.push(c);
    return c;
  };

  test('renewed certificate files are served after reload, without a restart', async () => {
    const before = await client(one.cert);
    assert.equal(before.peerCertificate?.fingerprint256, one.fingerprint);
    await assert.rejects(client(two.cert), untrusted, 'not yet: the new CA is not served');

    await replace(certFile, two.cert);
    await replace(keyFile, two.key);
    // files alone change nothing: the server reads them on reload
    assert.equal((await client(one.cert)).peerCertificate?.fingerprint256, one.fingerprint);

    const t0 = Date.now();
    await server.proc.reload();
    assert.ok(Date.now() - t0 < 5_000);

    const after = await client(two.cert);
    assert.equal(after.peerCertificate?.fingerprint256, two.fingerprint);
    await after.ping();
    await assert.rejects(client(one.cert), untrusted, 'the old CA no longer verifies');
    // the connection opened before the reload stays up
    await before.ping();
    assert.equal(server.proc.running, true);
  });

  test('a broken config file is refused: reload rejects, the server keeps serving', async () => {
    const kept = await client(two.cert);
    await writeFile(server.configFile, renderNatsConfig(config) + 'authorization {\n');
    try {
      await assert.rejects(server.proc.reload(), refused('RELOAD_FAILED'));
    } finally {
      await writeFile(server.configFile, renderNatsConfig(config));
    }
    assert.equal(server.proc.running, true);
    assert.equal((await client(two.cert)).peerCertificate?.fingerprint256, two.fingerprint);
    await kept.ping();
  });

  test('a key that does not fit the certificate is refused; the old pair stays', async () => {
    await replace(keyFile, one.key); // certificate two, key one
    try {
      await assert.rejects(
        server.proc.reload(),
        (e) => refused('RELOAD_FAILED')(e) && /kept its previous configuration/.test(String(e))
      );
    } finally {
      await replace(keyFile, two.key);
    }
    assert.equal((await client(two.cert)).peerCertificate?.fingerprint256, two.fingerprint);
  });

  test('a change nats-server cannot reload (the port) is refused', async () => {
    await writeFile(server.configFile, renderNatsConfig({ ...config, port: server.port + 1 }));
    try {
      await assert.rejects(server.proc.reload(), refused('RELOAD_FAILED'));
    } finally {
      await writeFile(server.configFile, renderNatsConfig(config));
    }
    await client(two.cert);
  });

  test('reloads at the same time are taken one after the other, each with its verdict', async () => {
    const n = verdicts.length;
    await Promise.all([server.proc.reload(), server.proc.reload(), server.proc.reload()]);
    assert.equal(verdicts.length - n, 3, 'one signal, one verdict, per call');
    await server.proc.reload();
  });

  test('a server that does not answer: RELOAD_TIMEOUT, bounded', async () => {
    const n = verdicts.length;
    process.kill(server.proc.pid, 'SIGSTOP');
    try {
      const t0 = Date.now();
      await assert.rejects(server.proc.reload(300), refused('RELOAD_TIMEOUT'));
      assert.ok(Date.now() - t0 < 3_000);
    } finally {
      process.kill(server.proc.pid, 'SIGCONT');
    }
    // the late verdict arrives; the next reload waits for its own
    await waitFor(() => verdicts.length > n, 5_000, 'the late verdict');
    await server.proc.reload();
  });

  test('reload of a stopped server rejects at once', async () => {
    await server.proc.stop(5_000);
    await assert.rejects(server.proc.reload(), refused('RELOAD_FAILED'));
  });
});
