// Cold review 16: today's changes, attacked cold.
//
//   - certs.sh: the private work directory (mktemp -d in OUT_DIR) and the
//     renames into OUT_DIR, against someone who can write OUT_DIR (the
//     service user owning /etc/sealbus/tls) while root runs the script;
//   - tlscheck.ts (SIGHUP TLS reload): renewed pairs the check accepts but
//     a TLS client that trusts the configured CA refuses;
//   - natsd: a reload verdict a client talks nats-server into logging;
//   - the CONNZ helper the revoke-storm test now judges by.
//
// Every test asserts the SECURE behaviour: an attack that worked is marked
// `todo: 'broken: …'` so the suite stays green while it is open.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { connect, nkeyAuthenticator, type NatsConnection } from 'nats';
import { ControlClient } from '@sealbus/client';
import { natsUserKey } from '@sealbus/crypto';
import { NatsServerProcess, NatsdError, renderNatsConfig } from '@sealbus/natsd';
import { freePort, startDaemon, tempDir } from '@sealbus/testing';
import {
  CLIENT_AUTH,
  SERVER_AUTH,
  checkRenewedPair,
  verifyRenewedPair,
  pemCertificates,
} from '../../src/daemon/tlscheck.js';
import { adminOf, enrol, serverConnectionsOf } from '../helpers.js';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../../../..');
const certsSh = join(repo, 'deploy/cluster/certs.sh');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const isRoot = process.getuid?.() === 0;
/** The unprivileged uid playing the service user that owns OUT_DIR. */
const NOBODY = 65534;

function runCerts(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync('bash', [certsSh, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

// ---------------------------------------------------------------------------
// certs.sh
// ---------------------------------------------------------------------------
describe('cold review 16: certs.sh against whoever can write OUT_DIR', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'cold16-certs-'));
    chmodSync(dir, 0o755);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test(
    'a link to a directory planted at a key or certificate name does not make --renew put files outside OUT_DIR',
    {},
    () => {
      const out = join(dir, 'dirlink');
      assert.equal(runCerts([out, 'n1=127.0.0.1,localhost']).code, 0);
      const elsewhere = join(dir, 'elsewhere');
      mkdirSync(elsewhere);
      for (const f of ['n1.key', 'n1.crt', 'n1-route.key']) {
        rmSync(join(out, f));
        symlinkSync(elsewhere, join(out, f));
      }
      const r = runCerts(['--renew', out, 'n1=127.0.0.1,localhost']);
      const landed = readdirSync(elsewhere);
      console.log(`# --renew exit ${r.code}; files root put in ${elsewhere}: ${landed.join(', ')}`);
      assert.deepEqual(landed, [], `certs.sh wrote ${landed.join(', ')} outside OUT_DIR`);
    }
  );

  test(
    'links planted at the CA names do not make --renew read and sign with a CA key outside OUT_DIR',
    {},
    () => {
      const out = join(dir, 'calink');
      assert.equal(runCerts([out, 'n1=127.0.0.1,localhost']).code, 0);
      // A CA elsewhere on the host, readable by root only.
      const other = join(dir, 'other-ca');
      mkdirSync(other, { mode: 0o700 });
      execFileSync('openssl', [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        join(other, 'ca.key'),
        '-out',
        join(other, 'ca.crt'),
        '-days',
        '30',
        '-subj',
        '/CN=Some other CA on this host',
        '-addext',
        'basicConstraints=critical,CA:TRUE',
        '-addext',
        'keyUsage=critical,keyCertSign',
      ]);
      for (const f of ['crt', 'key']) {
        rmSync(join(out, `client-ca.${f}`));
        symlinkSync(join(other, `ca.${f}`), join(out, `client-ca.${f}`));
      }
      const r = runCerts(['--renew', out, 'n1=127.0.0.1,localhost']);
      const issuer = new X509Certificate(readFileSync(join(out, 'n1.crt'))).issuer;
      console.log(`# --renew exit ${r.code}; n1.crt issuer now: ${issuer}`);
      assert.ok(
        r.code !== 0 || !/other CA/.test(issuer),
        `--renew signed n1.crt with a CA key outside OUT_DIR (${issuer})`
      );
    }
  );

  test(
    'the service user cannot swap the private work directory while root runs certs.sh (and so read a CA key)',
    {
      skip: isRoot ? false : 'needs root (the attacker runs as uid 65534)',
      timeout: 120_000,
    },
    async () => {
      // The attacker: watches OUT_DIR (inotify); when the work directory
      // appears it renames it away and makes its own under the same name,
      // with empty world-readable files where the keys will be written.
      const attackerJs = join(dir, 'attacker.mjs');
      writeFileSync(
        attackerJs,
        `import fs from 'node:fs';
import { join } from 'node:path';
const out = process.argv[2];
const mine = new Set();
fs.watch(out, (_ev, name) => {
  if (!name || !/^\\.certs\\.[A-Za-z0-9]{6}$/.test(name) || mine.has(name)) return;
  const p = join(out, name);
  try {
    fs.renameSync(p, p + '.away');
    fs.mkdirSync(p, { mode: 0o777 });
    mine.add(name);
    for (const k of ['client-ca.key', 'route-ca.key', 'n1.key', 'n1-route.key'])
      fs.writeFileSync(join(p, k), '', { mode: 0o644 });
    console.log('swapped ' + name);
  } catch (e) { console.log('missed ' + name + ' ' + e.code); }
});
console.log('ready');
`,
        { mode: 0o644 }
      );
      let won = '';
      const tries: string[] = [];
      for (let attempt = 0; attempt < 10 && !won; attempt++) {
        const out = join(dir, `race${attempt}`);
        mkdirSync(out, { mode: 0o700 });
        chownSync(out, NOBODY, NOBODY);
        const attacker = spawn(process.execPath, [attackerJs, out], {
          uid: NOBODY,
          gid: NOBODY,
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        let said = '';
        attacker.stdout.on('data', (b: Buffer) => (said += b.toString()));
        for (let i = 0; i < 100 && !said.includes('ready'); i++) await sleep(20);
        const r = runCerts([out, 'n1=127.0.0.1,localhost']);
        attacker.kill();
        await new Promise((done) => attacker.once('exit', done));
        // What the service user can read now, as itself.
        const readable = ['client-ca.key', 'route-ca.key'].filter(
          (k) =>
            spawnSync('cat', [join(out, k)], {
              uid: NOBODY,
              gid: NOBODY,
              encoding: 'utf8',
            }).stdout?.includes('PRIVATE KEY') ?? false
        );
        tries.push(`#${attempt}: exit ${r.code}, ${said.trim().replace(/\n/g, '; ')}`);
        if (readable.length) {
          const st = lstatSync(join(out, readable[0]!));
          won = `${readable.join(', ')} in ${out} readable by uid ${NOBODY} (owner uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)})`;
        }
      }
      console.log(`# ${tries.join('\n# ')}`);
      if (won) console.log(`# ${won}`);
      assert.equal(won, '', `the service user read a CA key: ${won}`);
    }
  );
});

// ---------------------------------------------------------------------------
// tlscheck.ts: pairs the check accepts that a TLS client trusting the CA refuses
// ---------------------------------------------------------------------------
describe('cold review 16: TLS reload check vs a real TLS client', { timeout: 120_000 }, () => {
  let dir: string;
  let tlsDir: string;
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });

  /** A key and CSR for CN=name. */
  function csr(name: string): void {
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
  }

  /**
   * Issues name.crt from name.csr with `openssl ca` (dates and digest under
   * control), signed by `signer` (a name in dir) or self-signed.
   */
  function issue(
    name: string,
    signer: string | 'self',
    ext: string[],
    o: { start?: string; end?: string; md?: string } = {}
  ): string {
    const conf = join(dir, 'ca.cnf');
    writeFileSync(
      conf,
      [
        '[ca]',
        'default_ca = d',
        '[d]',
        `database = ${join(dir, 'index.txt')}`,
        `new_certs_dir = ${join(dir, 'newcerts')}`,
        `serial = ${join(dir, 'serial')}`,
        'default_md = sha256',
        'policy = p',
        'unique_subject = no',
        'copy_extensions = none',
        'default_days = 30',
        '[p]',
        'commonName = supplied',
        '',
      ].join('\n')
    );
    writeFileSync(join(dir, `${name}.ext`), ext.join('\n') + '\n');
    ssl(
      'ca',
      '-batch',
      '-notext',
      '-config',
      conf,
      '-in',
      `${name}.csr`,
      '-out',
      `${name}.crt`,
      '-extfile',
      `${name}.ext`,
      ...(signer === 'self'
        ? ['-selfsign', '-keyfile', `${name}.key`]
        : ['-cert', `${signer}.crt`, '-keyfile', `${signer}.key`]),
      ...(o.start ? ['-startdate', o.start] : []),
      ...(o.end ? ['-enddate', o.end] : []),
      ...(o.md ? ['-md', o.md] : [])
    );
    return join(dir, `${name}.crt`);
  }

  const LEAF = [
    'subjectAltName=IP:127.0.0.1,DNS:localhost',
    'extendedKeyUsage=serverAuth',
    'keyUsage=critical,digitalSignature',
    'basicConstraints=CA:FALSE',
  ];
  const INTER = ['basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign'];

  /** A leaf for name, signed by signer, with LEAF's extensions unless replaced. */
  function leaf(name: string, signer: string, ext = LEAF, o: { md?: string } = {}): string {
    csr(name);
    return issue(name, signer, ext, o);
  }
  function intermediate(name: string, signer: string, ext = INTER, o = {}): string {
    csr(name);
    return issue(name, signer, ext, o);
  }

  /** verifyRenewedPair's verdict for cert (+ chain) and key: 'accepted' or why not. */
  async function verdict(certPem: string, keyFile: string, caFile?: string): Promise<string> {
    const cert = join(dir, `pair-${Math.random().toString(36).slice(2)}.crt`);
    writeFileSync(cert, certPem);
    try {
      await verifyRenewedPair(
        'HTTPS',
        { cert, key: keyFile, ...(caFile ? { ca: caFile } : {}) },
        {
          usages: [SERVER_AUTH],
          current: pemCertificates(readFileSync(join(tlsDir, 'n1.crt')), 'n1.crt')[0]!,
        }
      );
      return 'accepted';
    } catch (err) {
      return (err as Error).message;
    }
  }

  /** Whether a Node TLS client trusting caFile connects to 127.0.0.1 served this pair. */
  async function clientTrusts(certPem: string, keyFile: string, caFile: string): Promise<string> {
    let server: tls.Server;
    try {
      server = tls.createServer({ cert: certPem, key: readFileSync(keyFile) }, (s) => s.end());
    } catch (err) {
      return `refused: OpenSSL will not even serve it (${(err as Error).message})`;
    }
    const port = await freePort();
    await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
    try {
      return await new Promise<string>((done) => {
        const s = tls.connect({ host: '127.0.0.1', port, ca: readFileSync(caFile) }, () => {
          s.destroy();
          done('trusted');
        });
        s.on('error', (e) => done(`refused: ${(e as NodeJS.ErrnoException).code ?? e.message}`));
      });
    } finally {
      server.close();
    }
  }

  /** Asserts: whatever the check accepts, the client trusts. */
  async function judge(what: string, certPem: string, keyFile: string, caFile: string) {
    const v = await verdict(certPem, keyFile, caFile);
    const c = await clientTrusts(certPem, keyFile, caFile);
    console.log(`# ${what}: check ${v === 'accepted' ? 'accepted' : 'refused'}; client ${c}`);
    assert.ok(
      v !== 'accepted' || c === 'trusted',
      `${what}: the reload check accepted a pair a client trusting the CA refuses (${c})`
    );
  }

  const read = (f: string) => readFileSync(f, 'utf8');
  let clientCa: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'cold16-tls-'));
    mkdirSync(join(dir, 'newcerts'));
    writeFileSync(join(dir, 'index.txt'), '');
    writeFileSync(join(dir, 'serial'), '1000\n');
    tlsDir = join(dir, 'tls');
    const r = runCerts([tlsDir, 'n1=127.0.0.1,localhost']);
    assert.equal(r.code, 0, r.stderr);
    writeFileSync(join(dir, 'root.crt'), readFileSync(join(tlsDir, 'client-ca.crt')));
    writeFileSync(join(dir, 'root.key'), readFileSync(join(tlsDir, 'client-ca.key')));
    clientCa = join(dir, 'root.crt');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('control: an honest renewal is accepted and trusted, a foreign one refused', async () => {
    const good = leaf('honest', 'root');
    assert.equal(await verdict(read(good), join(dir, 'honest.key'), clientCa), 'accepted');
    assert.equal(await clientTrusts(read(good), join(dir, 'honest.key'), clientCa), 'trusted');
    const viaI = intermediate('goodint', 'root');
    const l2 = leaf('viaint', 'goodint');
    await judge(
      'leaf + good intermediate',
      read(l2) + read(viaI),
      join(dir, 'viaint.key'),
      clientCa
    );
    assert.equal(
      await verdict(read(l2) + read(viaI), join(dir, 'viaint.key'), clientCa),
      'accepted'
    );
  });

  test('a leaf whose keyUsage does not allow digitalSignature is refused', {}, async () => {
    const c = leaf('kucertsign', 'root', [
      ...LEAF.filter((e) => !e.startsWith('keyUsage')),
      'keyUsage=critical,keyCertSign',
    ]);
    await judge('keyUsage=keyCertSign only', read(c), join(dir, 'kucertsign.key'), clientCa);
  });

  test('a leaf signed with SHA-1 is refused (createSecureContext refuses it: regression)', async () => {
    const c = leaf('sha1', 'root', LEAF, { md: 'sha1' });
    await judge('SHA-1 signed leaf', read(c), join(dir, 'sha1.key'), clientCa);
  });

  test('a leaf with an unknown critical extension is refused', {}, async () => {
    const c = leaf('critext', 'root', [...LEAF, '1.3.6.1.4.1.99999.1=critical,ASN1:NULL']);
    await judge('unknown critical extension', read(c), join(dir, 'critext.key'), clientCa);
  });

  test('an intermediate that is not yet valid is refused', async () => {
    const i = intermediate('futureint', 'root', INTER, {
      start: '20400101000000Z',
      end: '20410101000000Z',
    });
    const l = leaf('underfuture', 'futureint');
    await judge(
      'intermediate valid from 2040',
      read(l) + read(i),
      join(dir, 'underfuture.key'),
      clientCa
    );
  });

  test("an intermediate's path length constraint is honoured", {}, async () => {
    const i1 = intermediate('plen0', 'root', [
      'basicConstraints=critical,CA:TRUE,pathlen:0',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    const i2 = intermediate('plen-under', 'plen0');
    const l = leaf('plen-leaf', 'plen-under');
    await judge(
      'pathlen:0 exceeded',
      read(l) + read(i2) + read(i1),
      join(dir, 'plen-leaf.key'),
      clientCa
    );
  });

  test("an intermediate's extended key usage must allow serverAuth", {}, async () => {
    const i = intermediate('ekuint', 'root', [...INTER, 'extendedKeyUsage=clientAuth']);
    const l = leaf('ekuleaf', 'ekuint');
    await judge(
      'intermediate EKU clientAuth only',
      read(l) + read(i),
      join(dir, 'ekuleaf.key'),
      clientCa
    );
  });

  test("an intermediate's name constraints are honoured", {}, async () => {
    const i = intermediate('ncint', 'root', [
      ...INTER,
      'nameConstraints=critical,permitted;DNS:other.example,permitted;IP:10.0.0.0/255.0.0.0',
    ]);
    const l = leaf('ncleaf', 'ncint');
    await judge(
      'name constraints exclude the leaf',
      read(l) + read(i),
      join(dir, 'ncleaf.key'),
      clientCa
    );
  });

  test(
    'a leaf signed by an expired CA of a several-certificate CA file is refused',
    {},
    async () => {
      csr('oldroot');
      issue('oldroot', 'self', INTER, { start: '20200101000000Z', end: '20210101000000Z' });
      const bundle = join(dir, 'bundle.crt');
      writeFileSync(bundle, read(clientCa) + read(join(dir, 'oldroot.crt')));
      const l = leaf('byold', 'oldroot');
      await judge(
        'signed by an expired CA in the CA file',
        read(l),
        join(dir, 'byold.key'),
        bundle
      );
    }
  );

  test('a renewal cannot keep a name by smuggling it inside another SAN (Node escapes the commas: regression)', async () => {
    const c = leaf('smuggle', 'root', [
      'subjectAltName=@alt',
      'extendedKeyUsage=serverAuth',
      'keyUsage=critical,digitalSignature',
      'basicConstraints=CA:FALSE',
      '[alt]',
      'DNS.1 = a, IP Address:127.0.0.1, DNS:localhost, b',
    ]);
    console.log(`# smuggled SAN as Node shows it: ${new X509Certificate(read(c)).subjectAltName}`);
    await judge('names smuggled in one DNS SAN', read(c), join(dir, 'smuggle.key'), clientCa);
  });

  test(
    'the certificate checked is the certificate served (a first PEM block labelled X509 CERTIFICATE)',
    {},
    async () => {
      // A self-signed leaf with its own key, under the old PEM label, then
      // the (public) certificate in use.
      ssl(
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        'rogue.key',
        '-out',
        'rogue.crt',
        '-days',
        '30',
        '-subj',
        '/CN=rogue',
        '-addext',
        'subjectAltName=IP:127.0.0.1'
      );
      const rogue = read(join(dir, 'rogue.crt')).replace(
        /(BEGIN|END) CERTIFICATE/g,
        '$1 X509 CERTIFICATE'
      );
      const pem = rogue + read(join(tlsDir, 'n1.crt'));
      await judge('X509 CERTIFICATE label first', pem, join(dir, 'rogue.key'), clientCa);
    }
  );

  test('the route usages: a route pair without clientAuth is refused (regression)', () => {
    const c = leaf('routeonly', 'root', LEAF);
    const cert = join(dir, 'routeonly.crt');
    assert.throws(
      () =>
        checkRenewedPair(
          'route',
          { cert, key: join(dir, 'routeonly.key'), ca: clientCa },
          { usages: [SERVER_AUTH, CLIENT_AUTH] }
        ),
      /clientAuth/
    );
    assert.ok(c);
  });
});

// ---------------------------------------------------------------------------
// natsd: reload verdicts
// ---------------------------------------------------------------------------
describe('cold review 16: natsd reload verdict', { timeout: 120_000 }, () => {
  test('clients of a trace+debug server (payloads, headers, names, users, subjects with newlines) never make a failing reload succeed', async () => {
    await using dir = await tempDir('cold16-natsd-');
    const port = await freePort();
    const conf = join(dir.path, 'nats.conf');
    const good =
      renderNatsConfig({ host: '127.0.0.1', port, trace: true }) + 'debug: true\nlogtime: false\n';
    writeFileSync(conf, good);
    const proc = await NatsServerProcess.start({ configFile: conf, readyTimeoutMs: 10_000 });
    const FAKE = `[${proc.pid}] [INF] Reloaded server configuration`;
    const lines = [
      `CONNECT {"verbose":false,"pedantic":false,"name":"x\\n${FAKE}\\n","user":"u\\n${FAKE}\\n","pass":"p"}\r\n`,
      `CONNECT {"verbose":false,"name":"y","lang":"\\n${FAKE}\\n","version":"\\n${FAKE}"}\r\nPUB a.b 0\r\n\r\n`,
      `CONNECT {"verbose":false,"headers":true}\r\nPUB x ${FAKE.length + 2}\r\n\n${FAKE}\n\r\n`,
      `CONNECT {"verbose":false,"headers":true}\r\nHPUB x ${FAKE.length + 14} ${FAKE.length + 14}\r\nNATS/1.0\r\nk:\n${FAKE}\r\n\r\n\r\n`,
      `CONNECT {"verbose":false}\r\nSUB \n${FAKE}\n 1\r\n`,
      `\n${FAKE}\n\r\n`,
    ];
    let running = true;
    const attacker = Array.from({ length: 4 }, async (_, k) => {
      for (let n = 0; running && n < 100_000; n++)
        await new Promise<void>((done) => {
          const s = net.connect(port, '127.0.0.1');
          const end = () => (s.destroy(), done());
          s.on('error', end);
          s.once('data', () => {
            s.write(lines[(n + k) % lines.length]!);
            setTimeout(end, 5);
          });
        });
    });
    let falseOk = 0;
    let failed = 0;
    try {
      await sleep(300);
      writeFileSync(conf, good + 'this is { not valid\n');
      for (let i = 0; i < 15; i++) {
        try {
          await proc.reload(3_000);
          falseOk++;
        } catch (err) {
          if (err instanceof NatsdError && err.code === 'RELOAD_FAILED') failed++;
        }
      }
    } finally {
      running = false;
      await Promise.all(attacker);
      await proc.stop();
    }
    console.log(
      `# 15 failing reloads under injection attempts: ${falseOk} succeeded, ${failed} failed`
    );
    assert.equal(falseOk, 0);
    assert.equal(failed, 15);
  });
});

// ---------------------------------------------------------------------------
// The CONNZ helper the revoke-storm test judges by
// ---------------------------------------------------------------------------
describe('cold review 16: serverConnectionsOf', { timeout: 120_000 }, () => {
  test('counts every live connection of an active user (it is not blind: the revoke-storm test would pass vacuously)', async () => {
    await using d = await startDaemon({ args: ['--log-level', 'info'] });
    const admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    const conns: NatsConnection[] = [];
    try {
      const { id } = await enrol(admin, d, 'counted');
      const seed = new TextEncoder().encode(natsUserKey(id).seed);
      for (let i = 0; i < 7; i++)
        conns.push(
          await connect({
            servers: d.natsUrl,
            authenticator: nkeyAuthenticator(seed),
            maxReconnectAttempts: 0,
          })
        );
      const seen = await serverConnectionsOf(d, natsUserKey(id).publicKey);
      console.log(`# 7 connections of an active user: CONNZ sees ${JSON.stringify(seen)}`);
      assert.equal(seen.authorised, 7);
      await conns.pop()!.close();
      assert.equal((await serverConnectionsOf(d, natsUserKey(id).publicKey)).authorised, 6);
    } finally {
      await Promise.all(conns.map((c) => c.close().catch(() => {})));
      admin.close();
    }
  });
});
