#!/usr/bin/env node
// A local Sealbus cluster on loopback: three membershipd nodes, each
// supervising its own nats-server with routes to the other two, buckets and
// persisted-room streams at replicas 3.
//
//   npm run cluster:up   -- --dir DIR [--tls] [--nodes 3]
//   npm run cluster:down -- --dir DIR
//   node scripts/cluster.mjs status     --dir DIR
//   node scripts/cluster.mjs kill-node  --dir DIR --node n2 [--signal SIGKILL]
//   node scripts/cluster.mjs start-node --dir DIR --node n2
//
// `up` returns once every node answers /healthz with 200 and writes
// DIR/cluster.json: {"nodes":[{"name","nats_url","http_url","data_dir","pid",
// ...}],"admin_identity","ca"}. The nodes keep running after `up` exits.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import https from 'node:https';
import http from 'node:http';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const MEMBERSHIPD = join(ROOT, 'apps', 'membershipd', 'bin', 'membershipd.js');
const CERTS = join(ROOT, 'deploy', 'cluster', 'certs.sh');

const { values: opt, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    dir: { type: 'string' },
    tls: { type: 'boolean', default: false },
    nodes: { type: 'string', default: '3' },
    node: { type: 'string' },
    signal: { type: 'string', default: 'SIGKILL' },
    timeout: { type: 'string', default: '120' },
  },
});
const command = positionals[0];
const fail = (msg, code = 1) => {
  process.stderr.write(`cluster: ${msg}\n`);
  process.exit(code);
};
if (!command || !opt.dir) {
  fail('usage: cluster.mjs up|down|status|kill-node|start-node --dir DIR [--tls] [--node NAME]', 2);
}
const DIR = resolve(opt.dir);
const STATE = join(DIR, 'cluster.json');

const alive = (pid) => {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return err.code === 'EPERM';
  }
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const readState = () => {
  if (!existsSync(STATE)) fail(`no cluster at ${DIR} (cluster.json missing)`);
  return JSON.parse(readFileSync(STATE, 'utf8'));
};
// Written through a temporary file and a rename, so a concurrent reader
// (two `start-node` at once) never sees half a file.
const writeState = (s) => {
  const tmp = `${STATE}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(s, null, 2) + '\n');
  renameSync(tmp, STATE);
};

/**
 * Read-modify-write of one node's entry under a lock directory (mkdir is
 * atomic), so concurrent `start-node` runs do not lose each other's pid.
 */
async function updateNode(name, patch) {
  const lock = `${STATE}.lock`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      if (Date.now() > deadline) rmSync(lock, { recursive: true, force: true }); // a holder died
      await sleep(20);
    }
  }
  try {
    const state = readState();
    Object.assign(
      state.nodes.find((n) => n.name === name),
      patch
    );
    writeState(state);
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

/**
 * A free loopback port below the kernel's ephemeral range (32768 and up on
 * Linux), so no outgoing connection of another process can take it between
 * this check and the node's bind (with many tests connecting at once, an
 * OS-picked port was taken that way now and then).
 */
async function freePort() {
  for (let i = 0; i < 200; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const free = await new Promise((res) => {
      const srv = createServer();
      srv.once('error', () => res(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => res(true)));
    });
    if (free) return port;
  }
  throw new Error('no free port below 32000');
}

/** The last /healthz answer of each URL that was not 200 (for the message when a node never gets there). */
const lastHealth = new Map();

function healthz(url, ca) {
  return new Promise((res) => {
    const mod = url.startsWith('https') ? https : http;
    const req = mod.get(
      `${url}/healthz`,
      { timeout: 3_000, ...(ca ? { ca: readFileSync(ca) } : {}) },
      (r) => {
        let body = '';
        r.setEncoding('utf8');
        r.on('data', (d) => (body += d.length + body.length > 2_000 ? '' : d));
        r.on('end', () => {
          if (r.statusCode !== 200) lastHealth.set(url, `${r.statusCode} ${body.slice(0, 600)}`);
          res(r.statusCode === 200);
        });
        r.on('error', () => res(false));
      }
    );
    req.on('timeout', () => req.destroy());
    req.on('error', (err) => {
      lastHealth.set(url, `no answer: ${err.message}`);
      res(false);
    });
  });
}

/** The nats-server pid a node wrote to its node.json (to stop it with its parent). */
function natsPidOf(node) {
  try {
    return JSON.parse(readFileSync(join(node.data_dir, 'node.json'), 'utf8')).nats_pid ?? null;
  } catch {
    return null;
  }
}

function startNode(node) {
  const log = openSync(join(DIR, `${node.name}.log`), 'a');
  const child = spawn(process.execPath, [MEMBERSHIPD, 'serve', ...node.argv], {
    detached: true,
    stdio: ['ignore', log, log],
  });
  child.unref();
  node.pid = child.pid;
  return node;
}

async function waitHealthy(nodes, ca, seconds) {
  const deadline = Date.now() + seconds * 1000;
  const pending = new Set(nodes.map((n) => n.name));
  while (pending.size && Date.now() < deadline) {
    for (const n of nodes) {
      if (!pending.has(n.name)) continue;
      if (!alive(n.pid)) {
        // The log's last lines say why (it may be gone with a temp dir).
        let tail = '';
        try {
          tail = readFileSync(join(DIR, `${n.name}.log`), 'utf8')
            .split('\n')
            .slice(-8)
            .join('\n');
        } catch {
          /* no log */
        }
        return `${n.name} exited (see ${join(DIR, `${n.name}.log`)})\n${tail}`;
      }
      if (await healthz(n.http_url, ca)) pending.delete(n.name);
    }
    if (pending.size) await sleep(250);
  }
  if (!pending.size) return null;
  // What each node last said, and the end of its log: why it never got there.
  const why = nodes
    .filter((n) => pending.has(n.name))
    .map((n) => {
      let tail = '';
      try {
        const lines = readFileSync(join(DIR, `${n.name}.log`), 'utf8').split('\n');
        // nats-server's own complaints (routes, the JetStream meta group), then the end.
        const nats = lines.filter((l) => /nats-server/.test(l) && /"level":(40|50|60)/.test(l));
        tail = [...nats.slice(-6), ...lines.slice(-4)].join('\n');
      } catch {
        /* no log */
      }
      return `${n.name}: /healthz ${lastHealth.get(n.http_url) ?? '(never asked)'}\n${tail}`;
    });
  return `not healthy after ${seconds} s: ${[...pending].join(', ')}\n${why.join('\n')}`;
}

async function stop(pids, signal = 'SIGTERM', graceMs = 15_000) {
  for (const pid of pids) if (alive(pid)) process.kill(pid, signal);
  const deadline = Date.now() + graceMs;
  while (pids.some(alive) && Date.now() < deadline) await sleep(100);
  for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
}

async function up() {
  if (existsSync(STATE) && readState().nodes.some((n) => alive(n.pid))) {
    fail(`a cluster is already running at ${DIR} (cluster:down first)`);
  }
  const count = Number(opt.nodes);
  if (!Number.isInteger(count) || count < 3) fail('--nodes must be 3 or more');
  mkdirSync(DIR, { recursive: true, mode: 0o700 });
  const names = Array.from({ length: count }, (_, i) => `n${i + 1}`);
  const ports = new Set();
  while (ports.size < count * 3) ports.add(await freePort());
  const p = [...ports];
  const nodes = names.map((name, i) => ({
    name,
    client: p[i * 3],
    route: p[i * 3 + 1],
    http: p[i * 3 + 2],
  }));

  // Shared secrets: one admin #0 and one set of callout keys for every node.
  const secrets = join(DIR, 'secrets');
  mkdirSync(secrets, { recursive: true, mode: 0o700 });
  const adminId = join(secrets, 'admin.id');
  const calloutKey = join(secrets, 'callout.key');
  for (const [args, file] of [
    [['identity', 'new', adminId], adminId],
    [['callout-key', 'new', calloutKey], calloutKey],
  ]) {
    if (existsSync(file)) continue;
    const r = spawnSync(process.execPath, [MEMBERSHIPD, ...args], { encoding: 'utf8' });
    if (r.status !== 0) fail(`${args.join(' ')}: ${r.stderr}`);
  }

  let ca = null;
  const tlsDir = join(DIR, 'tls');
  if (opt.tls) {
    const r = spawnSync(
      'bash',
      [CERTS, tlsDir, ...names.map((n) => `${n}=${n},localhost,127.0.0.1`)],
      {
        encoding: 'utf8',
      }
    );
    if (r.status !== 0) fail(`certificates: ${r.stderr || r.stdout}`);
    ca = join(tlsDir, 'client-ca.crt');
  }

  // Routes always authenticate: mutual TLS with --tls, else a shared secret
  // made here once (0600) and given to every node by file.
  const routeSecret = join(secrets, 'route.secret');
  if (!opt.tls && !existsSync(routeSecret))
    writeFileSync(routeSecret, randomBytes(32).toString('hex') + '\n', { mode: 0o600, flag: 'wx' });

  const state = {
    nodes: nodes.map((n) => {
      const dataDir = join(DIR, n.name);
      const argv = [
        '--data',
        dataDir,
        '--http',
        `127.0.0.1:${n.http}`,
        '--nats-port',
        String(n.client),
        '--server-name',
        n.name,
        '--cluster-name',
        'sealbus-local',
        '--cluster-port',
        String(n.route),
        '--routes',
        nodes
          .filter((o) => o !== n)
          .map((o) => `nats-route://127.0.0.1:${o.route}`)
          .join(','),
        // No --authority for the peers: each node's address is its own, so
        // its request nonces stay in its memory (see NonceRegistry).
        '--replicas',
        '3',
        '--bootstrap-budget',
        '120s',
        '--admin-id-file',
        adminId,
        '--callout-key-file',
        calloutKey,
        ...(opt.tls
          ? [
              '--tls-cert',
              join(tlsDir, `${n.name}.crt`),
              '--tls-key',
              join(tlsDir, `${n.name}.key`),
              '--tls-ca',
              ca,
              '--route-tls-cert',
              join(tlsDir, `${n.name}-route.crt`),
              '--route-tls-key',
              join(tlsDir, `${n.name}-route.key`),
              '--route-tls-ca',
              join(tlsDir, 'route-ca.crt'),
            ]
          : ['--route-secret-file', routeSecret]),
      ];
      return {
        name: n.name,
        nats_url: `${opt.tls ? 'tls' : 'nats'}://127.0.0.1:${n.client}`,
        http_url: `${opt.tls ? 'https' : 'http'}://127.0.0.1:${n.http}`,
        data_dir: dataDir,
        pid: null,
        route_url: `nats-route://127.0.0.1:${n.route}`,
        argv,
      };
    }),
    admin_identity: adminId,
    ca,
  };
  // Start them together: a lone node has no JetStream quorum and would wait.
  for (const n of state.nodes) startNode(n);
  writeState(state);
  const problem = await waitHealthy(state.nodes, ca, Number(opt.timeout));
  if (problem) {
    await stop(state.nodes.flatMap((n) => [n.pid, natsPidOf(n)]).filter(Boolean));
    fail(problem);
  }
  process.stdout.write(
    `cluster up: ${state.nodes.map((n) => `${n.name} ${n.http_url}`).join(', ')}\n`
  );
  process.stdout.write(`state: ${STATE}\n`);
}

async function down() {
  if (!existsSync(STATE)) return;
  const state = readState();
  await stop(state.nodes.flatMap((n) => [n.pid]).filter(Boolean));
  // A node killed earlier may have left its nats-server behind.
  await stop(state.nodes.map(natsPidOf).filter(Boolean), 'SIGINT', 5_000);
  for (const n of state.nodes) n.pid = null;
  writeState(state);
  process.stdout.write('cluster down\n');
}

function nodeOf(state) {
  const node = state.nodes.find((n) => n.name === opt.node);
  if (!node) fail(`no node ${opt.node} (have ${state.nodes.map((n) => n.name).join(', ')})`);
  return node;
}

async function killNode() {
  const state = readState();
  const node = nodeOf(state);
  const nats = natsPidOf(node);
  // A crash takes the daemon and its nats-server down together.
  for (const pid of [node.pid, nats]) if (alive(pid)) process.kill(pid, opt.signal);
  const deadline = Date.now() + 10_000;
  while ([node.pid, nats].some(alive) && Date.now() < deadline) await sleep(50);
  process.stdout.write(`killed ${node.name} (${opt.signal})\n`);
}

async function startNodeCmd() {
  const state = readState();
  const node = nodeOf(state);
  if (alive(node.pid)) fail(`${node.name} is already running (pid ${node.pid})`);
  startNode(node);
  await updateNode(node.name, { pid: node.pid });
  const problem = await waitHealthy([node], state.ca, Number(opt.timeout));
  if (problem) fail(problem);
  process.stdout.write(`started ${node.name}\n`);
}

async function status() {
  const state = readState();
  for (const n of state.nodes) {
    const healthy = alive(n.pid) && (await healthz(n.http_url, state.ca));
    process.stdout.write(
      `${n.name}  pid ${n.pid ?? '-'}  ${alive(n.pid) ? 'running' : 'stopped'}  ${healthy ? 'healthy' : 'not healthy'}  ${n.http_url}\n`
    );
  }
}

const commands = { up, down, status, 'kill-node': killNode, 'start-node': startNodeCmd };
if (!commands[command]) fail(`unknown command ${command}`, 2);
await commands[command]();
