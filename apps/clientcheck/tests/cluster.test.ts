import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import net from 'node:net';
import { createRequire } from 'node:module';
import { readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { join, dirname } from 'node:path';
import tls from 'node:tls';
import {
  ControlClient,
  Sealbus,
  generateIdentity,
  loadIdentity,
  saveIdentity,
  type Identity,
} from '@sealbus/client';
import {
  deriveSeed,
  natsUserKey,
  nkeySeedFromRaw,
  requestSigner,
  signRequest,
} from '@sealbus/crypto';
import { memberDurableName, roomStreamName } from '@sealbus/protocol';
import { connect, nkeyAuthenticator, type NatsConnection } from 'nats';
import {
  clusterScript,
  pidAlive,
  runClientcheck,
  runMembershipd,
  startCluster,
  waitFor,
  type TestCluster,
} from '@sealbus/testing';

interface Raw {
  status: number;
  json: any;
}

/** An HTTPS request with exactly these headers (Host included when given). */
function raw(url: string, ca: Buffer, headers: Record<string, string>): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      { method: 'GET', headers, ca, agent: false, timeout: 20_000 },
      (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(body || 'null') })
        );
      }
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

describe(
  '3-node cluster with TLS: clientcheck, failover, quorum loss',
  { timeout: 600_000 },
  () => {
    let cl: TestCluster;
    let ca: Buffer;
    let operator: Identity;
    let admin: Identity;
    let opFile: string;
    const seeds = () => ({
      nats: cl
        .state()
        .nodes.map((n) => n.nats_url)
        .join(','),
      ctrl: cl
        .state()
        .nodes.map((n) => n.http_url)
        .join(','),
    });
    const addUser = (node: string, handle: string, id: Identity, extra: string[] = []) =>
      runMembershipd(
        [
          'user',
          'add',
          '--data',
          cl.node(node).data_dir,
          '--handle',
          handle,
          '--sign-pub',
          id.signPubHex,
          '--kex-pub',
          id.kexPubHex,
          '--role',
          'member',
          ...extra,
        ],
        { timeoutMs: 60_000 }
      );

    before(async () => {
      cl = await startCluster({ tls: true });
      const state = cl.state();
      ca = readFileSync(state.ca!);
      admin = await loadIdentity(state.admin_identity);
      operator = generateIdentity();
      opFile = join(cl.dir, 'operator.id');
      await saveIdentity(opFile, operator);
      const r = await addUser('n1', 'operator', operator);
      assert.equal(r.code, 0, r.stderr);
    });
    after(async () => {
      const pids = cl?.state().nodes.map((n) => n.pid) ?? [];
      await cl?.down();
      for (const pid of pids)
        if (pid) assert.equal(pidAlive(pid), false, `node pid ${pid} still running`);
    });

    test('cluster.json, TLS posture, R3 buckets replicated on every node', async () => {
      const state = cl.state();
      assert.equal(state.nodes.length, 3);
      for (const n of state.nodes) {
        assert.deepEqual(Object.keys(n).slice(0, 5), [
          'name',
          'nats_url',
          'http_url',
          'data_dir',
          'pid',
        ]);
        assert.match(n.nats_url, /^tls:\/\/127\.0\.0\.1:\d+$/);
        assert.match(n.http_url, /^https:\/\/127\.0\.0\.1:\d+$/);
        const h = await raw(`${n.http_url}/healthz`, ca, {});
        assert.equal(h.status, 200);
        assert.deepEqual(h.json.tls, { http: true, nats: true });
        assert.equal(h.json.store.replicas, 3);
      }
      assert.equal(state.admin_identity.endsWith('admin.id'), true);
      const ctl = new ControlClient({ urls: [state.nodes[1]!.http_url], identity: admin, ca });
      const admins = (await ctl.listUsers()).filter((u) => u.role === 'admin');
      ctl.close();
      assert.equal(admins.length, 1, 'one admin #0 for the whole cluster');
      const r = await addUser('n2', 'replicated', generateIdentity());
      assert.match(r.stdout, /users bucket: replicas 3\/3 current, leader n\d/);
    });

    test('backup of a running cluster node (over TLS) holds the replicated state', async () => {
      const out = join(cl.dir, 'cluster-backup.tgz');
      const r = await runMembershipd(['backup', '--data', cl.node('n3').data_dir, '--out', out]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /live backup/);
      const m = await runMembershipd(['backup', 'inspect', out, '-o', 'json']);
      assert.equal(m.code, 0, m.stderr);
      const manifest = JSON.parse(m.stdout) as {
        source: { nats_server: string };
        sections: Array<{ name: string; count: number }>;
      };
      assert.match(manifest.source.nats_server, /^n\d$/);
      // admin #0 and the user the first test added through n2.
      assert.ok((manifest.sections.find((s) => s.name === 'sealbus_users')?.count ?? 0) >= 2);
    });

    test('a route port refuses a client-CA certificate fit for client and server auth in the TLS handshake (unknown CA, logged), and talks to a route-CA one', async () => {
      const routeUrl = (cl.state().nodes[0] as any).route_url as string;
      const port = Number(routeUrl.split(':').pop());
      const dir = join(cl.dir, 'tls');
      // A certificate from the client CA that is otherwise a perfect route
      // certificate (clientAuth and serverAuth, the node's name and
      // address): only its CA is wrong.
      const fake = join(cl.dir, 'fake-route');
      const sh = spawnSync(
        'bash',
        [
          '-c',
          `set -e; mkdir -p "$1"; cd "$1"
           openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k.pem -out r.csr -subj /CN=n2 2>/dev/null
           printf 'subjectAltName=DNS:n2,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n' > ext
           openssl x509 -req -in r.csr -CA "$2/client-ca.crt" -CAkey "$2/client-ca.key" -CAcreateserial -out c.pem -days 2 -extfile ext 2>/dev/null`,
          'sh',
          fake,
          dir,
        ],
        { encoding: 'utf8' }
      );
      assert.equal(sh.status, 0, sh.stderr);
      /**
       * What the route port does with this certificate: sends its INFO, or
       * ends the session (with the TLS error's code, if any). `port` is the
       * client's own port, which nats-server's log line names.
       */
      const attempt = (cert: Buffer, key: Buffer) =>
        new Promise<{ outcome: string; code?: string; port?: number }>((resolve) => {
          const sock = tls.connect({
            host: '127.0.0.1',
            port,
            cert,
            key,
            ca: readFileSync(join(dir, 'route-ca.crt')),
            servername: 'n1',
          });
          let local: number | undefined;
          sock.once('connect', () => (local = sock.localPort));
          let got = '';
          const done = (outcome: string, code?: string) => {
            sock.destroy();
            resolve({ outcome, ...(code ? { code } : {}), ...(local ? { port: local } : {}) });
          };
          sock.on('data', (d) => {
            got += d;
            if (got.includes('\r\n'))
              done(got.startsWith('INFO ') ? 'INFO' : `data: ${got.slice(0, 40)}`);
          });
          sock.on('error', (e: NodeJS.ErrnoException) => done(`error: ${e.message}`, e.code));
          sock.on('close', () => done('closed without a word'));
          setTimeout(() => done('still open'), 5_000).unref();
        });
      const logFile = join(cl.dir, 'n1.log');
      const logFrom = readFileSync(logFile).length;
      const bad = await attempt(
        readFileSync(join(fake, 'c.pem')),
        readFileSync(join(fake, 'k.pem'))
      );
      // A TLS handshake failure, and for the CA: the server's 'unknown CA'
      // alert (TLS 1.3 sends it after the client's side of the handshake).
      assert.equal(bad.code, 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA', JSON.stringify(bad));
      // The control: the same connection with a route-CA certificate is a route.
      const good = await attempt(
        readFileSync(join(dir, 'n2-route.crt')),
        readFileSync(join(dir, 'n2-route.key'))
      );
      assert.equal(good.outcome, 'INFO');
      // nats-server logs this refusal: a line written since the attempt
      // began, naming the attempt's own client port.
      const ours = new RegExp(
        `127\\.0\\.0\\.1:${bad.port}\\b.*TLS route handshake error.*unknown authority`
      );
      let since = '';
      await waitFor(
        () => {
          since = readFileSync(logFile).subarray(logFrom).toString('utf8');
          return ours.test(since);
        },
        { timeoutMs: 10_000, what: 'the route refusal logged by nats-server' }
      ).catch((err: Error) => assert.fail(`${err.message}; logged since:\n${since}`));
      console.log(
        `# route port: client-CA certificate -> ${bad.code} (${since.split('\n').find((l) => ours.test(l))}); route-CA certificate -> ${good.outcome}`
      );
    });

    test('certs.sh --renew + SIGHUP: HTTPS, NATS client and route ports serve the new certificates without a restart; a bad pair changes nothing', async () => {
      const n1 = cl.node('n1');
      const dir = join(cl.dir, 'tls');
      const routePort = Number(((n1 as any).route_url as string).split(':').pop());
      const natsPort = Number(n1.nats_url.split(':').pop());
      const httpPort = Number(n1.http_url.split(':').pop());
      const routeTls = {
        cert: readFileSync(join(dir, 'n2-route.crt')),
        key: readFileSync(join(dir, 'n2-route.key')),
        ca: readFileSync(join(dir, 'route-ca.crt')),
      };
      /** The serial of the certificate a port presents (NATS client ports send INFO first). */
      const served = (port: number, kind: 'https' | 'nats' | 'route'): Promise<string> =>
        new Promise((resolve, reject) => {
          const opts = {
            host: '127.0.0.1',
            servername: 'n1',
            ...(kind === 'route' ? routeTls : { ca }),
          };
          const done = (sock: tls.TLSSocket) => {
            const serial = sock.getPeerCertificate().serialNumber;
            sock.destroy();
            resolve(serial);
          };
          const timer = setTimeout(
            () => reject(new Error(`${kind}: no certificate in 10 s`)),
            10_000
          );
          timer.unref();
          if (kind !== 'nats') {
            const sock = tls.connect({ ...opts, port }, () => done(sock));
            sock.on('error', reject);
            return;
          }
          const raw = net.connect(port, '127.0.0.1');
          raw.once('data', () => {
            const sock = tls.connect({ ...opts, socket: raw }, () => done(sock));
            sock.on('error', reject);
          });
          raw.on('error', reject);
        });
      const serials = async () => ({
        https: await served(httpPort, 'https'),
        nats: await served(natsPort, 'nats'),
        route: await served(routePort, 'route'),
      });
      const fileSerial = (f: string) =>
        new X509Certificate(readFileSync(join(dir, f))).serialNumber;
      const before = await serials();
      assert.deepEqual(before, {
        https: fileSerial('n1.crt'),
        nats: fileSerial('n1.crt'),
        route: fileSerial('n1-route.crt'),
      });
      const log = () => readFileSync(join(cl.dir, 'n1.log'), 'utf8');
      const count = (re: RegExp) =>
        log()
          .split('\n')
          .filter((l) => re.test(l)).length;

      const renew = spawnSync(
        'bash',
        [
          join(dirname(clusterScript()), '..', 'deploy', 'cluster', 'certs.sh'),
          '--renew',
          dir,
          'n1=n1,localhost,127.0.0.1',
        ],
        { encoding: 'utf8' }
      );
      assert.equal(renew.status, 0, renew.stderr);
      assert.match(renew.stdout, /renewed .*n1\.crt/);
      assert.match(renew.stdout, /renewed .*n1-route\.crt/);
      const want = {
        https: fileSerial('n1.crt'),
        nats: fileSerial('n1.crt'),
        route: fileSerial('n1-route.crt'),
      };
      assert.notEqual(want.https, before.https);
      assert.notEqual(want.route, before.route);
      // Not yet: the node serves what it loaded.
      assert.deepEqual(await serials(), before);
      const pid = n1.pid!;
      const reloads = count(/TLS certificates reloaded/);
      process.kill(pid, 'SIGHUP');
      await waitFor(() => count(/TLS certificates reloaded/) > reloads, {
        timeoutMs: 20_000,
        what: 'the reload to be logged',
      });
      assert.deepEqual(await serials(), want);
      assert.equal(cl.node('n1').pid, pid, 'same process: no restart');
      // The node still works as a member of the cluster over its routes.
      const r = await addUser('n1', `after-renewal-${Date.now()}`, generateIdentity());
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /replicas 3\/3 current/);

      // A key that does not match its certificate: refused, nothing changes.
      const goodKey = readFileSync(join(dir, 'n1.key'));
      const goodRouteKey = readFileSync(join(dir, 'n1-route.key'));
      writeFileSync(join(dir, 'n1.key'), readFileSync(join(dir, 'n2.key')));
      writeFileSync(join(dir, 'n1-route.key'), readFileSync(join(dir, 'n2-route.key')));
      const failures = count(/TLS reload failed/);
      process.kill(pid, 'SIGHUP');
      try {
        await waitFor(() => count(/TLS reload failed/) > failures, {
          timeoutMs: 20_000,
          what: 'the failed reload to be logged',
        });
        assert.deepEqual(await serials(), want, 'the previous certificates stay in use');
      } finally {
        writeFileSync(join(dir, 'n1.key'), goodKey, { mode: 0o600 });
        writeFileSync(join(dir, 'n1-route.key'), goodRouteKey, { mode: 0o600 });
      }
      console.log(
        `# TLS renewed on n1 without a restart: https/nats ${before.https} -> ${want.https}, route ${before.route} -> ${want.route}`
      );
    });

    test('clientcheck golden passes on the cluster (persisted room, TLS)', async () => {
      const { nats, ctrl } = seeds();
      const r = await runClientcheck([
        '--identity-file',
        opFile,
        '--nats-seeds',
        nats,
        '--ctrl-seeds',
        ctrl,
        '--ca',
        cl.state().ca!,
        '--mode',
        'golden',
        '--messages',
        '50',
        '--persist',
        '--json',
      ]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const result = JSON.parse(r.stdout.trim().split('\n').pop()!);
      assert.deepEqual([result.sent, result.received, result.lost], [50, 50, []]);
    });

    test('a nonce accepted by node A is refused when replayed to node B', async () => {
      const [a, b] = cl.state().nodes;
      const url = new URL('/me', a!.http_url);
      const headers = signRequest(requestSigner(admin), { method: 'GET', url });
      headers['host'] = url.host; // the signed authority, sent to the other node
      assert.equal((await raw(url.href, ca, headers)).status, 200);
      // B does not answer to A's address: A keeps that address's nonces in
      // its memory (its claim in the nonces bucket), so no peer may accept it.
      const replay = await raw(new URL('/me', b!.http_url).href, ca, headers);
      assert.equal(replay.status, 401);
      assert.equal(replay.json.error.code, 'WRONG_AUTHORITY');
      const again = await raw(url.href, ca, headers);
      assert.equal(again.status, 401);
      assert.equal(again.json.error.code, 'REPLAYED');
    });

    test('a revoke or a removal through n1 cuts the user on n2 and n3 at once (HTTP, CLI, member removal)', async () => {
      const node = (name: string) => cl.node(name);
      /** Every wait here is bounded: a hang names its step. */
      const within = <T>(p: Promise<T>, what: string, ms = 30_000): Promise<T> =>
        Promise.race([
          p,
          new Promise<T>((_, rej) =>
            setTimeout(() => rej(new Error(`${what}: no answer in ${ms} ms`)), ms).unref()
          ),
        ]);
      /** A user whose key the SDK has bound, with raw connections (no reconnect) to n2 and n3. */
      const userOnTwoNodes = async (handle: string, before?: (id: Identity) => Promise<void>) => {
        const id = generateIdentity();
        const r = await addUser('n1', handle, id);
        assert.equal(r.code, 0, r.stderr);
        const bus = await within(
          Sealbus.connect({
            natsServers: [node('n2').nats_url],
            controlUrls: [node('n2').http_url],
            identity: id,
            ca,
          }),
          `${handle}: SDK connect (binds the key)`
        );
        await within(bus.close(), `${handle}: SDK close`);
        await within(before?.(id) ?? Promise.resolve(), `${handle}: set-up`);
        const conns: NatsConnection[] = [];
        for (const n of ['n2', 'n3'])
          conns.push(
            await within(
              connect({
                servers: node(n).nats_url,
                authenticator: nkeyAuthenticator(new TextEncoder().encode(natsUserKey(id).seed)),
                tls: { ca: ca.toString() },
                // A kicked connection closes (a removed member's client would
                // reconnect, with permissions that no longer name the room).
                reconnect: false,
              }),
              `${handle}: NATS connect to ${n}`
            )
          );
        const closedAt = conns.map((nc) => nc.closed().then(() => Date.now()));
        return { id, closedAt };
      };
      const ctl = new ControlClient({ urls: [node('n1').http_url], identity: admin, ca });
      const figures: string[] = [];
      try {
        // 1. HTTP revoke through n1.
        const a = await userOnTwoNodes('cut-http');
        let t0 = Date.now();
        await within(ctl.revokeUser(a.id.signPubHex), 'HTTP revoke');
        let cut = Math.max(...(await within(Promise.all(a.closedAt), 'HTTP revoke: cut'))) - t0;
        figures.push(`HTTP revoke ${cut} ms`);
        // The claim is a second; the bound is generous for a loaded machine.
        assert.ok(cut < 3_000, `HTTP revoke: cut after ${cut} ms`);

        // 2. `membershipd user revoke` on n1's data dir.
        const b = await userOnTwoNodes('cut-cli');
        t0 = Date.now();
        const rv = await runMembershipd(
          ['user', 'revoke', '--data', node('n1').data_dir, b.id.signPubHex],
          { timeoutMs: 60_000 }
        );
        assert.equal(rv.code, 0, rv.stderr);
        cut = Math.max(...(await within(Promise.all(b.closedAt), 'CLI revoke: cut'))) - t0;
        figures.push(`CLI revoke ${cut} ms (from the command's start)`);
        assert.ok(cut < 10_000, `CLI revoke: cut after ${cut} ms`);

        // 3. A member removed from a room through n1.
        const owner = await within(
          Sealbus.connect({
            natsServers: [node('n1').nats_url],
            controlUrls: [node('n1').http_url],
            identity: operator,
            ca,
          }),
          'owner connect'
        );
        try {
          const room = await within(
            owner.createRoom({
              subject: 'cut.room',
              policy: { encrypt: true, persist: false, sign: true },
            }),
            'create room'
          );
          const c = await userOnTwoNodes('cut-member', (id) =>
            owner.invite(room.id, id.signPubHex, 'writer').then(() => {})
          );
          t0 = Date.now();
          await within(owner.removeMember(room.id, c.id.signPubHex), 'remove member');
          cut = Math.max(...(await within(Promise.all(c.closedAt), 'removal: cut'))) - t0;
          figures.push(`member removal ${cut} ms (a rekey included)`);
          assert.ok(cut < 5_000, `removal: cut after ${cut} ms`);
        } finally {
          await within(owner.close(), 'owner close');
        }
      } finally {
        ctl.close();
      }
      console.log(`# cut on n2 and n3: ${figures.join(', ')}`);
    });

    test('SIGKILL of the node a persisted clientcheck loop is attached to: zero loss, control plane keeps serving, node catches up', async () => {
      const { nats, ctrl } = seeds();
      const cc = spawn(
        process.execPath,
        [
          join(
            dirname(createRequire(import.meta.url).resolve('@sealbus/clientcheck/package.json')),
            'bin',
            'clientcheck.js'
          ),
          '--identity-file',
          opFile,
          '--nats-seeds',
          nats,
          '--ctrl-seeds',
          ctrl,
          '--ca',
          cl.state().ca!,
          '--mode',
          'loop',
          '--duration',
          '25s',
          '--interval',
          '50ms',
          '--persist',
          '--json',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] }
      );
      let out = '';
      cc.stdout.on('data', (d) => (out += d));
      cc.stderr.on('data', (d) => (out += d));
      const exited = new Promise<number | null>((r) => cc.on('close', (code) => r(code)));
      const attached = await waitFor(
        () =>
          /node=(n\d)/.exec(
            out
              .split('\n')
              .filter((l) => l.includes('tick'))
              .pop() ?? ''
          )?.[1],
        {
          timeoutMs: 30_000,
          what: 'clientcheck to report its node',
        }
      );
      await new Promise((r) => setTimeout(r, 2_000));
      const killed = await cl.kill(attached);
      assert.equal(killed.code, 0, killed.stderr);
      const survivors = cl.state().nodes.filter((n) => n.name !== attached);

      // Signed control requests keep succeeding through the remaining nodes.
      const ctl = new ControlClient({
        urls: cl.state().nodes.map((n) => n.http_url),
        identity: admin,
        ca,
        timeoutMs: 15_000,
      });
      for (let i = 0; i < 5; i++) assert.equal((await ctl.me()).role, 'admin');
      ctl.close();
      // `user add` through a survivor commits with one node down.
      const late = generateIdentity();
      const add = await addUser(survivors[0]!.name, 'added-during-outage', late);
      assert.equal(add.code, 0, add.stderr);
      assert.match(add.stdout, /replicas 2\/3 current/);
      await new Promise((r) => setTimeout(r, 3_000));
      const restarted = await cl.start(attached);
      assert.equal(restarted.code, 0, restarted.stderr);

      assert.equal(await exited, 0, out);
      const result = JSON.parse(out.trim().split('\n').pop()!);
      assert.equal(result.lost.length, 0, `lost: ${result.lost}`);
      assert.ok(
        result.sent > 100 && result.received === result.sent,
        `${result.received}/${result.sent}`
      );
      assert.ok(result.failovers.length >= 1, 'the failover was observed');
      assert.ok(
        result.failovers.some((f: { to: string }) => f.to !== attached),
        'moved to a survivor'
      );

      // The restarted node caught up: it serves the user added while it was down.
      const list = await runMembershipd([
        'user',
        'list',
        '--data',
        cl.node(attached).data_dir,
        '-o',
        'json',
      ]);
      assert.equal(list.code, 0, list.stderr);
      assert.ok(
        JSON.parse(list.stdout).some((u: { sign_pub: string }) => u.sign_pub === late.signPubHex)
      );
      let last = '';
      const caughtUpFrom = Date.now();
      await waitFor(
        async () => {
          const r = await addUser(attached, `after-${Date.now()}`, generateIdentity());
          last = `exit ${r.code}: ${r.stdout.trim()} ${r.stderr.trim()}`;
          return /replicas 3\/3 current/.test(r.stdout);
        },
        // Generous: on a loaded 2-core machine a restarted replica has
        // taken over a minute to be reported current (CI, once).
        { timeoutMs: 150_000, intervalMs: 1_000, what: 'all replicas current again' }
      ).catch((err: Error) => {
        throw new Error(`${err.message}; the last user add said: ${last}`);
      });
      console.log(`# restarted replica current after ${(Date.now() - caughtUpFrom) / 1000} s`);
    });

    test('SIGKILL of the room stream leader, and separately of the member consumer leader, 5 times each: zero loss every time', async () => {
      const KILLS = 5;
      const { nats, ctrl } = seeds();
      const cc = spawn(
        process.execPath,
        [
          join(
            dirname(createRequire(import.meta.url).resolve('@sealbus/clientcheck/package.json')),
            'bin',
            'clientcheck.js'
          ),
          ...['--identity-file', opFile, '--nats-seeds', nats, '--ctrl-seeds', ctrl],
          ...['--ca', cl.state().ca!, '--mode', 'loop', '--duration', '20m', '--interval', '50ms'],
          ...['--persist', '--json', '--grace', '20s'],
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] }
      );
      let out = '';
      cc.stdout.on('data', (d) => (out += d));
      cc.stderr.on('data', (d) => (out += d));
      const exited = new Promise<number | null>((r) => cc.on('close', (code) => r(code)));
      const kills: Array<{ kind: string; node: string; at: number }> = [];
      const apps: NatsConnection[] = [];
      let nudges = 0;
      const restarts: string[] = [];
      try {
        const roomId = await waitFor(() => / room (\S+) on clientcheck\./.exec(out)?.[1], {
          timeoutMs: 30_000,
          what: 'clientcheck to create its room',
        });
        await waitFor(() => /tick sent=\d+ received=[1-9]/.test(out), {
          timeoutMs: 30_000,
          what: 'messages flowing',
        });
        // Each node's own APP-account user (its key is the node's, known to
        // its server only) sees the room stream and the member's consumer,
        // with their raft leaders; whichever node is up answers.
        for (const n of cl.state().nodes) {
          const internal = await loadIdentity(join(n.data_dir, 'internal.id'));
          apps.push(
            await connect({
              servers: n.nats_url,
              authenticator: nkeyAuthenticator(
                new TextEncoder().encode(
                  nkeySeedFromRaw('user', deriveSeed(internal.signSeed, 'node-app'))
                )
              ),
              tls: { ca: ca.toString() },
              maxReconnectAttempts: -1,
              reconnectTimeWait: 250,
            })
          );
        }
        const stream = roomStreamName(roomId);
        const durable = memberDurableName(operator.signPubHex);
        type Raft = { leader?: string; replicas?: Array<{ current: boolean; offline?: boolean }> };
        const whole = (c?: Raft) =>
          !!c?.leader &&
          c.replicas?.length === 2 &&
          c.replicas.every((r) => r.current && !r.offline);
        /** Stream and consumer led, every replica current; the consumer led elsewhere than the stream. */
        const settle = async (): Promise<{ stream: string; consumer: string }> => {
          let last = '';
          let attempt = 0;
          let behindSince: number | undefined;
          let stuckSince: number | undefined;
          return waitFor(
            async () => {
              // Round robin: a connection to a node just killed answers nothing.
              const app = apps[attempt++ % apps.length]!;
              try {
                const jsm = await app.jetstreamManager({ timeout: 3_000 });
                const si = await jsm.streams.info(stream);
                const ci = await jsm.consumers.info(stream, durable);
                last = JSON.stringify({ s: si.cluster, c: ci.cluster });
                if (!whole(si.cluster) || !whole(ci.cluster)) {
                  // A restarted replica that stays behind (CI once: lag
                  // 3,182, not heard from for 158 s) is set going again by
                  // a leader change; every 20 s, counted and printed.
                  behindSince ??= Date.now();
                  stuckSince ??= Date.now();
                  // Still behind a minute later, through three leader
                  // changes (CI once: lag 3,505, never heard from again):
                  // restart that replica's node, as an operator would.
                  // Counted and printed; the zero-loss check is unchanged.
                  if (Date.now() - stuckSince > 60_000) {
                    stuckSince = Date.now();
                    const lagging = [
                      ...(si.cluster?.replicas ?? []),
                      ...(ci.cluster?.replicas ?? []),
                    ]
                      .filter((r) => !r.current || r.offline)
                      .map((r) => r.name)[0];
                    if (lagging) {
                      restarts.push(lagging);
                      await cl.kill(lagging, 'SIGTERM');
                      await cl.start(lagging);
                    }
                    return undefined;
                  }
                  if (Date.now() - behindSince > 20_000) {
                    behindSince = Date.now();
                    nudges++;
                    const which = whole(si.cluster) ? 'CONSUMER' : 'STREAM';
                    const subj =
                      which === 'STREAM'
                        ? `$JS.API.STREAM.LEADER.STEPDOWN.${stream}`
                        : `$JS.API.CONSUMER.LEADER.STEPDOWN.${stream}.${durable}`;
                    await app.request(subj, undefined, { timeout: 5_000 }).catch(() => {});
                  }
                  return undefined;
                }
                behindSince = undefined;
                stuckSince = undefined;
                if (ci.cluster!.leader === si.cluster!.leader) {
                  const stepdown = `$JS.API.CONSUMER.LEADER.STEPDOWN.${stream}.${durable}`;
                  await app.request(stepdown, undefined, { timeout: 5_000 });
                  return undefined;
                }
                return { stream: si.cluster!.leader!, consumer: ci.cluster!.leader! };
              } catch (err) {
                last = (err as Error).message;
                return undefined;
              }
            },
            { timeoutMs: 150_000, intervalMs: 500, what: 'stream and consumer settled' }
          ).catch((err: Error) => {
            throw new Error(`${err.message}; last seen ${last}`);
          });
        };
        for (const kind of ['stream', 'consumer'] as const) {
          for (let i = 0; i < KILLS; i++) {
            const leaders = await settle();
            const node = leaders[kind];
            kills.push({ kind, node, at: Date.now() });
            const killed = await cl.kill(node);
            assert.equal(killed.code, 0, killed.stderr);
            await new Promise((r) => setTimeout(r, 3_000));
            const started = await cl.start(node);
            assert.equal(started.code, 0, started.stderr);
          }
        }
        await settle();
      } finally {
        await Promise.all(apps.map((c) => c.close().catch(() => {})));
        cc.kill('SIGTERM');
        // It reports after its grace (20 s); never leave it behind.
        setTimeout(() => cc.kill('SIGKILL'), 90_000).unref();
      }
      assert.equal(await exited, 0, out.slice(-4_000));
      const result = JSON.parse(out.trim().split('\n').pop()!);
      assert.equal(result.lost.length, 0, `lost: ${result.lost}`);
      assert.ok(
        result.sent > 100 && result.received === result.sent,
        `${result.received}/${result.sent}`
      );
      const gaps: number[] = result.gaps
        .map((g: { ms: number }) => g.ms)
        .sort((a: number, b: number) => a - b);
      console.log(
        `# leader kills: ${kills.map((k) => `${k.kind}@${k.node}`).join(' ')}; sent ${result.sent}, ` +
          `received ${result.received}, lost 0, duplicates ${result.duplicates}; gaps over 1 s: ` +
          `${gaps.length ? gaps.join(', ') + ' ms' : 'none'} (longest ${result.longest_gap_ms} ms); ` +
          `replicas left behind and nudged by a leader change: ${nudges}; ` +
          `nodes restarted for a replica stuck over a minute: ${restarts.length ? restarts.join(', ') : 'none'}`
      );
    });

    test('a persisted room can be created while a node is stopped, and gets its third replica when the node is back', async () => {
      // A stopped node (SIGTERM: it tells its peers it is going) cannot hold
      // a replica: JetStream refuses to place three ("no suitable peers").
      const gone = 'n3';
      const stopped = await cl.kill(gone, 'SIGTERM');
      assert.equal(stopped.code, 0, stopped.stderr);
      const up = cl.state().nodes.filter((n) => n.name !== gone);
      // Right after a node leaves, the streams it led elect new leaders; a
      // connect in those seconds may be refused (fail closed: the callout
      // cannot read the store). The SDK's caller tries again, as here (CI
      // once: Authorization Violation); what is tested is the room.
      let P: Sealbus | undefined;
      for (let attempt = 1; !P; attempt++) {
        P = await Sealbus.connect({
          natsServers: up.map((n) => n.nats_url),
          controlUrls: up.map((n) => n.http_url),
          identity: operator,
          ca,
        }).catch(async (err: Error) => {
          if (attempt >= 5) throw err;
          console.log(`# connect ${attempt} right after the stop refused: ${err.message}; again`);
          await new Promise((r) => setTimeout(r, 2_000));
          return undefined;
        });
      }
      let roomId: string;
      try {
        const room = await P.createRoom({
          subject: 'outage.persisted',
          policy: { encrypt: true, persist: true, sign: true },
        });
        roomId = room.id;
        await P.publish(room.id, 'made while n3 was stopped');
        const got: string[] = [];
        const sub = await P.subscribe(room.id, (m) => void got.push(m.string()), {
          from: 'start',
        });
        await waitFor(() => got.length === 1, { timeoutMs: 15_000, what: 'read back' });
        await sub.stop();
        assert.deepEqual(got, ['made while n3 was stopped']);
      } finally {
        await P.close();
      }
      const started = await cl.start(gone);
      assert.equal(started.code, 0, started.stderr);
      const from = Date.now();
      const logs = () =>
        ['n1', 'n2', 'n3']
          .map((n) => readFileSync(join(cl.dir, `${n}.log`), 'utf8'))
          .join('\n')
          .split('\n');
      await waitFor(
        () => logs().some((l) => l.includes('room stream replicas raised') && l.includes(roomId)),
        { timeoutMs: 60_000, intervalMs: 500, what: "the room's third replica" }
      );
      console.log(
        `# room made with a node stopped raised to 3 replicas ${(Date.now() - from) / 1000} s after its restart`
      );
    });

    test('two of three nodes down: fail closed in bounded time, nothing hangs; restarting restores service', async () => {
      const [a, b, c] = cl.state().nodes;
      await cl.kill(b!.name);
      await cl.kill(c!.name);
      // A stopped cluster node's store is not read offline (its streams
      // belong to the cluster's meta group): refused, nothing started.
      const offline = await runMembershipd([
        'backup',
        '--data',
        b!.data_dir,
        '--out',
        join(cl.dir, 'never.tgz'),
      ]);
      assert.equal(offline.code, 1);
      assert.match(offline.stderr, /belongs to a cluster node/);
      // The survivor says so: not healthy, not ready (it answered 200 and
      // ready: true before, while every signed request got 503). Until it
      // has noticed (its streams' leaders see their replicas gone), a signed
      // read may still be served from memory: the user cache vouches only
      // while the users stream has a leader backed by a majority, the same
      // rule as /healthz.
      await waitFor(async () => (await raw(`${a!.http_url}/healthz`, ca, {})).status === 503, {
        timeoutMs: 30_000,
        intervalMs: 500,
        what: '/healthz 503 without quorum',
      });
      const ctl = new ControlClient({
        urls: [a!.http_url],
        identity: admin,
        ca,
        timeoutMs: 20_000,
      });
      // The user cache stops vouching once the users stream's leader has not
      // heard from a majority for 3 s (and its last proof is 250 ms old):
      // within seconds, signed reads are refused too.
      const t1 = Date.now();
      await waitFor(
        async () =>
          (await ctl.me().then(
            () => false,
            () => true
          )) || undefined,
        { timeoutMs: 15_000, intervalMs: 200, what: 'signed reads refused without quorum' }
      );
      console.log(`# signed reads refused ${Date.now() - t1} ms after /healthz said 503`);
      for (let i = 0; i < 3; i++) {
        const t0 = Date.now();
        const err = await ctl.me().then(
          () => null,
          (e: unknown) => e as { status: number; serverCode?: string }
        );
        assert.ok(err, 'no 2xx without quorum');
        // An outage, never "this key is unknown/revoked" (which makes every
        // SDK close itself for good).
        assert.deepEqual([err!.status, err!.serverCode], [503, 'STORE_UNAVAILABLE']);
        assert.ok(Date.now() - t0 < 20_000, 'answered in bounded time');
      }
      const health = await raw(`${a!.http_url}/healthz`, ca, {});
      assert.equal(health.json.status, 'unavailable');
      const ready = await raw(`${a!.http_url}/readyz`, ca, {});
      assert.equal(ready.status, 503);
      assert.equal(ready.json.ready, false);
      // Its own copy still answers (no quorum), or nothing does (unreachable).
      assert.match(ready.json.reason, /^(no store quorum|store unreachable)$/);
      const t0 = Date.now();
      const add = await addUser(a!.name, 'no-quorum', generateIdentity(), ['--timeout', '15s']);
      assert.equal(add.code, 1);
      assert.match(add.stderr, /store unavailable|timed out/);
      assert.ok(Date.now() - t0 < 30_000, `user add gave up after ${Date.now() - t0} ms`);

      const [rb, rc] = await Promise.all([cl.start(b!.name), cl.start(c!.name)]);
      assert.equal(rb.code, 0, rb.stderr);
      assert.equal(rc.code, 0, rc.stderr);
      await waitFor(async () => (await ctl.me().catch(() => null))?.role === 'admin', {
        timeoutMs: 60_000,
        intervalMs: 1_000,
        what: 'service restored',
      });
      const ok = await addUser(a!.name, 'quorum-back', generateIdentity());
      assert.equal(ok.code, 0, ok.stderr);
      await waitFor(async () => (await raw(`${a!.http_url}/readyz`, ca, {})).status === 200, {
        timeoutMs: 30_000,
        intervalMs: 500,
        what: '/readyz 200 with quorum back',
      });
      ctl.close();
    });
  }
);
