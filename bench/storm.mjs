// Reconnect storm (issue 14): 1,000 raw NATS clients of 100 users attached
// to one node of a 3-node cluster; that node (its nats-server and its
// membershipd) is SIGKILLed and every client re-authenticates through the
// auth callout of the surviving daemons at once. Measured: the time from the
// SIGKILL until every client has reconnected AND passed a permission check
// on its new server (its own room subject round-trips; another user's room
// subject is refused for subscribe and for publish), the refusals clients
// saw (auth errors, auth timeouts), and how the callout's queue group spread
// the decisions over the surviving daemons (from their debug logs).
//
// The cluster is its own, started here with @sealbus/testing's startDaemon
// (the same flags scripts/cluster.mjs gives its nodes) rather than with
// startCluster: the decision log lines this counts are debug lines, and the
// daemons startCluster starts log at info to files.

import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, nkeyAuthenticator } from 'nats';
import { encodePublicIdentity, generateIdentity, loadIdentity, natsUserKey } from '@sealbus/crypto';
import { internalNatsSeed } from '@sealbus/membershipd';
import { ControlClient } from '@sealbus/client';
import { StatementChain, authorStatement } from '@sealbus/client/internal';
import { freePorts, runMembershipd, startDaemon, tempDir } from '@sealbus/testing';
import { percentile, table } from './lib.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const enc = new TextEncoder();
const dec = new TextDecoder();
// The streams a callout decision reads (nats key index, user, memberships).
const CALLOUT_STREAMS = ['KV_sealbus_nats_keys', 'KV_sealbus_users', 'KV_sealbus_members'];
const AUTH_ERRORS = new Set([
  'AUTHORIZATION_VIOLATION',
  'AUTHENTICATION_TIMEOUT',
  'AUTHENTICATION_EXPIRED',
]);

/** `fn` over `items`, at most `conc` at a time. */
async function pool(items, conc, fn) {
  let next = 0;
  let failed = false;
  await Promise.all(
    Array.from({ length: Math.min(conc, items.length) }, async () => {
      while (!failed && next < items.length) {
        const i = next++;
        await fn(items[i], i).catch((err) => {
          failed = true;
          throw err;
        });
      }
    })
  );
}

/** A promise that settles with `value` after `ms` unless it settles first. */
const within = (p, ms, value) => {
  let t;
  return Promise.race([p, new Promise((r) => (t = setTimeout(() => r(value), ms)))]).finally(() =>
    clearTimeout(t)
  );
};

/** Three daemons clustered on loopback, shared admin and callout keys, replicas 3. */
async function startStormCluster(dir) {
  const secrets = join(dir, 'secrets');
  await mkdir(secrets, { recursive: true, mode: 0o700 });
  const adminId = join(secrets, 'admin.id');
  const calloutKey = join(secrets, 'callout.key');
  const routeSecret = join(secrets, 'route.secret');
  for (const args of [
    ['identity', 'new', adminId],
    ['callout-key', 'new', calloutKey],
  ]) {
    const r = await runMembershipd(args, { timeoutMs: 30_000 });
    if (r.code !== 0) throw new Error(`membershipd ${args.join(' ')}: ${r.stderr}`);
  }
  await writeFile(routeSecret, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
  const names = ['n1', 'n2', 'n3'];
  const routePorts = await freePorts(3);
  const started = await Promise.allSettled(
    names.map((name, i) =>
      startDaemon({
        dataDir: join(dir, name),
        readyTimeoutMs: 180_000,
        args: [
          '--server-name',
          name,
          '--cluster-name',
          'sealbus-storm',
          '--cluster-port',
          String(routePorts[i]),
          '--routes',
          routePorts
            .filter((_, j) => j !== i)
            .map((p) => `nats-route://127.0.0.1:${p}`)
            .join(','),
          '--replicas',
          '3',
          '--bootstrap-budget',
          '120s',
          '--admin-id-file',
          adminId,
          '--callout-key-file',
          calloutKey,
          '--route-secret-file',
          routeSecret,
          // One owner makes the 100 rooms, quickly.
          '--max-rooms-per-user',
          '1000',
          '--changes-per-minute',
          '0',
          '--log-level',
          'debug',
        ],
      })
    )
  );
  const nodes = started.filter((s) => s.status === 'fulfilled').map((s) => s.value);
  if (nodes.length < names.length) {
    await Promise.all(nodes.map((d) => d.dispose()));
    throw started.find((s) => s.status === 'rejected').reason;
  }
  nodes.forEach((d, i) => (d.name = names[i]));
  return { nodes, adminId };
}

/** Leader of each callout stream, asked through `node`'s nats-server (null while electing). */
async function leaders(node, timeoutMs = 2_000) {
  const internal = await loadIdentity(join(node.dataDir, 'internal.id'));
  const nc = await connect({
    servers: node.natsUrl,
    authenticator: nkeyAuthenticator(internalNatsSeed(internal)),
    reconnect: false,
  });
  try {
    const jsm = await nc.jetstreamManager({ timeout: timeoutMs });
    const out = {};
    for (const s of CALLOUT_STREAMS) {
      const si = await jsm.streams.info(s).catch(() => null);
      const reps = si?.cluster?.replicas ?? [];
      out[s] = {
        leader: si?.cluster?.leader ?? null,
        current: !!si?.cluster?.leader && reps.length === 2 && reps.every((r) => r.current),
      };
    }
    return out;
  } finally {
    await nc.close();
  }
}

/** 100 users, each a writer in one ephemeral room of its own subject (made by one owner). */
async function makeUsers(nodes, adminId, users) {
  const urls = nodes.map((d) => d.httpUrl);
  const admin = new ControlClient({ urls, identity: await loadIdentity(adminId) });
  const owner = generateIdentity();
  await admin.addUser({
    public: encodePublicIdentity(owner),
    handle: 'storm-owner',
    role: 'member',
  });
  const ids = Array.from({ length: users }, () => generateIdentity());
  await pool(ids, 8, (id, u) =>
    admin.addUser({ public: encodePublicIdentity(id), handle: `storm-u${u}`, role: 'member' })
  );
  const ctl = new ControlClient({ urls, identity: owner });
  const policy = { encrypt: false, persist: false, sign: false };
  await pool(ids, 8, async (id, u) => {
    const room = randomBytes(12).toString('hex');
    const base = {
      room,
      subject: `storm.u${u}`,
      policy,
      owner: owner.signPubHex,
      epoch: 0,
      key: null,
    };
    const first = authorStatement(owner.signSeed, null, {
      ...base,
      members: [[owner.signPubHex, 'owner']],
    });
    await ctl.createRoom({ id: room, subject: base.subject, policy, statement: first });
    const chain = StatementChain.fromStatements(room, [{ seq: 0, ...first }]);
    const statement = authorStatement(owner.signSeed, chain, {
      ...base,
      members: [...chain.members(), [id.signPubHex, 'writer']],
    });
    await ctl.addMember(room, { sign_pub: id.signPubHex, role: 'writer', statement });
  });
  ctl.close();
  admin.close();
  return ids;
}

/**
 * One client's permission check on the server it is attached to now: a
 * publish to its own room subject comes back on its own subscription, and
 * both a subscribe and a publish to another user's room subject are refused.
 */
async function checkPermissions(c, timeoutMs) {
  const token = `${c.i}.${++c.seq}`;
  const echoed = new Promise((r) => c.echoWaiters.set(token, r));
  const pubRefused = new Promise((r) => c.pubViolationWaiters.push(r));
  const subRefused = new Promise((r) => {
    c.nc.subscribe(c.foreign, { callback: (err) => r(err?.code === 'PERMISSIONS_VIOLATION') });
  });
  c.nc.publish(c.own, enc.encode(token));
  c.nc.publish(c.foreign, enc.encode(token));
  const [echo, sub, pub] = await Promise.all([
    within(echoed, timeoutMs, false),
    within(subRefused, timeoutMs, false),
    within(pubRefused, timeoutMs, false),
  ]);
  c.echoWaiters.delete(token);
  return { echo, sub, pub, ok: echo && sub && pub };
}

/** Opens client `i` (of user `u`) on `first`, reconnecting to `then` in order. */
async function openClient(i, u, ids, first, then, o) {
  const c = {
    i,
    u,
    own: `storm.u${u}`,
    foreign: `storm.u${(u + 1) % ids.length}`,
    seq: 0,
    echoWaiters: new Map(),
    pubViolationWaiters: [],
    events: [],
    reconnects: [],
    checks: [],
    closedErr: undefined,
  };
  c.nc = await connect({
    servers: [first, ...then],
    noRandomize: true,
    authenticator: nkeyAuthenticator(enc.encode(natsUserKey(ids[u]).seed)),
    name: `storm-${i}`,
    reconnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: o.reconnectTimeWaitMs,
    reconnectJitter: 100,
    // As the SDK connects (packages/client/src/sealbus.ts).
    ignoreAuthErrorAbort: true,
    // nats.js 2.29 keeps its ping timer running while it reconnects: a stale
    // verdict during a dial closes that dial's socket without failing the
    // dial, which then waits out the whole connect timeout (20 s). With 2 s
    // pings every dial that waits > ~4 s for the callout was lost that way
    // (storm 23 s). 10 s x 2 still notices a hung server, after a dial
    // (nats-server's auth timeout, 12 s) has had its answer.
    pingInterval: o.pingIntervalMs,
    maxPingOut: 2,
    // Longer than nats-server's auth timeout (12 s): the server decides.
    timeout: 20_000,
  });
  c.nc.subscribe(c.own, {
    callback: (err, m) => {
      if (err) return;
      const w = c.echoWaiters.get(dec.decode(m.data));
      if (w) w(true);
    },
  });
  void (async () => {
    for await (const s of c.nc.status()) {
      const at = performance.now();
      if (s.type === 'error') {
        c.events.push({ at, code: s.data });
        if (s.permissionContext?.operation === 'publish') {
          for (const w of c.pubViolationWaiters.splice(0)) w(true);
        }
      } else if (s.type === 'reconnect') {
        const r = { at, server: String(s.data) };
        c.reconnects.push(r);
        void checkPermissions(c, o.checkTimeoutMs).then((res) =>
          c.checks.push({ ...res, at: performance.now(), reconnect: r })
        );
      } else if (s.type === 'disconnect') {
        c.events.push({ at, code: 'DISCONNECT' });
      } else if (s.type === 'reconnecting') {
        c.events.push({ at, code: 'DIAL', server: String(s.data) });
      }
    }
  })();
  void c.nc.closed().then((err) => (c.closedErr = err ?? null));
  await c.nc.flush();
  return c;
}

export async function reconnectStorm({
  users = 100,
  perUser = 10,
  boundMs = 60_000,
  reconnectTimeWaitMs = 250,
  pingIntervalMs = 10_000,
  checkTimeoutMs = 10_000,
} = {}) {
  const dir = await tempDir('sealbus-storm-');
  let nodes = [];
  const clients = [];
  try {
    const tSetup = performance.now();
    const cluster = await startStormCluster(dir.path);
    nodes = cluster.nodes;
    const ids = await makeUsers(nodes, cluster.adminId, users);

    // The victim: the node leading most of the streams a callout reads (the
    // worst case: its reads wait for a leader election), once all are current.
    let lead;
    const settle = Date.now() + 30_000;
    do {
      lead = await leaders(nodes[0]).catch(() => null);
      if (lead && Object.values(lead).every((l) => l.current)) break;
      await sleep(250);
    } while (Date.now() < settle);
    const votes = new Map();
    for (const s of CALLOUT_STREAMS) {
      const l = lead?.[s]?.leader;
      if (l) votes.set(l, (votes.get(l) ?? 0) + 1 + (s === CALLOUT_STREAMS[0] ? 0.5 : 0));
    }
    const victimName = [...votes].sort((a, b) => b[1] - a[1])[0]?.[0] ?? 'n1';
    const victim = nodes.find((d) => d.name === victimName);
    const survivors = nodes.filter((d) => d !== victim);
    const ledByVictim = CALLOUT_STREAMS.filter((s) => lead?.[s]?.leader === victimName);

    // 1,000 clients on the victim; each one's list names the survivors in a
    // random order after it (as a randomizing client would hold them).
    const tConnect = performance.now();
    const connectMark = nodes.map((d) => d.logs.length);
    const order = Array.from({ length: users * perUser }, (_, i) => i);
    await pool(order, 20, async (i) => {
      const then = survivors.map((d) => d.natsUrl);
      if (Math.random() < 0.5) then.reverse();
      const u = Math.floor(i / perUser);
      clients[i] = await openClient(i, u, ids, victim.natsUrl, then, {
        reconnectTimeWaitMs,
        pingIntervalMs,
        checkTimeoutMs,
      });
    });
    const connectS = (performance.now() - tConnect) / 1000;
    const before = await Promise.all(clients.map((c) => checkPermissions(c, checkTimeoutMs)));
    const beforeBad = before.filter((r) => !r.ok).length;
    if (beforeBad)
      throw new Error(`${beforeBad} clients fail the permission check before the kill`);
    const connectMs = nodes
      .flatMap((d, k) => d.logs.slice(connectMark[k]))
      .filter((l) => l.msg === 'callout: allowed')
      .map((l) => l.ms)
      .sort((a, b) => a - b);
    await sleep(1_000);

    // The storm.
    const mark = nodes.map((d) => d.logs.length);
    const usage0 = process.cpuUsage();
    let rssMax = process.memoryUsage().rss;
    const t0 = performance.now();
    const killEpoch = Date.now();
    try {
      process.kill(victim.natsPid, 'SIGKILL');
    } catch {
      /* already gone */
    }
    victim.proc.kill('SIGKILL');
    const electedAt = {};
    const watchLeaders = (async () => {
      // When each callout stream has a leader again (asked through a survivor).
      while (performance.now() - t0 < boundMs && Object.keys(electedAt).length < 3) {
        const l = await leaders(survivors[0], 1_000).catch(() => null);
        for (const s of CALLOUT_STREAMS) {
          const who = l?.[s]?.leader;
          if (who && who !== victimName && electedAt[s] === undefined)
            electedAt[s] = performance.now() - t0;
        }
        await sleep(100);
      }
    })();
    await victim.crash();
    const done = (c) => c.checks.some((k) => k.ok && k.at > t0);
    while (performance.now() - t0 < boundMs) {
      rssMax = Math.max(rssMax, process.memoryUsage().rss);
      if (clients.every(done) || clients.every((c) => done(c) || c.closedErr !== undefined)) break;
      await sleep(50);
    }
    const tEnd = performance.now();
    const cpu = process.cpuUsage(usage0);
    await watchLeaders;

    // Figures.
    const finished = clients.filter(done);
    const lastOk = (c) => Math.min(...c.checks.filter((k) => k.ok && k.at > t0).map((k) => k.at));
    const stormS =
      finished.length === clients.length ? (Math.max(...clients.map(lastOk)) - t0) / 1000 : NaN;
    const firstReconnect = clients
      .map((c) => c.reconnects.find((r) => r.at > t0))
      .filter(Boolean)
      .map((r) => (r.at - t0) / 1000)
      .sort((a, b) => a - b);
    const refusedEvents = clients.flatMap((c) =>
      c.events.filter((e) => e.at > t0 && AUTH_ERRORS.has(e.code))
    );
    const refusedByCode = {};
    for (const e of refusedEvents) refusedByCode[e.code] = (refusedByCode[e.code] ?? 0) + 1;
    const refusedClients = clients.filter((c) =>
      c.events.some((e) => e.at > t0 && AUTH_ERRORS.has(e.code))
    ).length;
    const failedChecks = clients.flatMap((c) => c.checks.filter((k) => k.at > t0 && !k.ok));
    const closed = clients.filter((c) => c.closedErr !== undefined).length;
    const landed = {};
    for (const c of clients) {
      const r = c.reconnects.findLast((x) => x.at > t0);
      const name = nodes.find((d) => r && r.server.endsWith(`:${d.natsPort}`))?.name ?? 'none';
      landed[name] = (landed[name] ?? 0) + 1;
    }
    const perDaemon = survivors.map((d) => {
      const k = nodes.indexOf(d);
      const logs = d.logs.slice(mark[k]);
      const allowed = logs.filter((l) => l.msg === 'callout: allowed');
      const ms = allowed.map((l) => l.ms).sort((a, b) => a - b);
      return {
        name: d.name,
        allowed: allowed.length,
        denied: logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('callout: denied'))
          .length,
        failed: logs.filter((l) => l.msg === 'auth callout failed; denying').length,
        p50: percentile(ms, 50),
        p99: percentile(ms, 99),
        max: ms.length ? ms[ms.length - 1] : NaN,
        landed: landed[d.name] ?? 0,
        natsTimeouts: logs.filter(
          (l) => l.component === 'nats-server' && /timeout|timed out/i.test(String(l.msg))
        ),
        natsWarn: logs.filter((l) => l.component === 'nats-server' && l.level >= 40),
      };
    });
    // Decisions answered per second after the kill, per survivor (log times).
    const timeline = survivors.map((d) => {
      const k = nodes.indexOf(d);
      const secs = Math.ceil((tEnd - t0) / 1000);
      const buckets = new Array(secs).fill(0);
      for (const l of d.logs.slice(mark[k])) {
        if (l.msg !== 'callout: allowed') continue;
        const at = Math.floor((Date.parse(l.time) - killEpoch) / 1000);
        if (at >= 0 && at < secs) buckets[at]++;
      }
      return `${d.name} ${buckets.join(' ')}`;
    });
    // Each client's dial attempts after the kill, and how long each lasted.
    const dials = clients.map((c) => {
      const ev = c.events.filter((e) => e.at > t0 && e.code === 'DIAL');
      const ends = [
        ...ev.slice(1).map((e) => e.at),
        c.reconnects.find((r) => r.at > t0)?.at ?? tEnd,
      ];
      return ev.map((e, j) => ({ ms: ends[j] - e.at, server: e.server }));
    });
    const attemptsHist = {};
    for (const d of dials) attemptsHist[d.length] = (attemptsHist[d.length] ?? 0) + 1;
    const longDials = dials.flat().filter((d) => d.ms > 10_000).length;
    const firstDialMs = dials
      .map((d) => d.find((x) => !x.server.endsWith(`:${victim.natsPort}`))?.ms)
      .filter((x) => x !== undefined)
      .sort((a, b) => a - b);
    const codes = {};
    for (const c of clients)
      for (const e of c.events)
        if (e.at > t0 && e.code !== 'DIAL') codes[e.code] = (codes[e.code] ?? 0) + 1;
    const answered = perDaemon.reduce((a, r) => a + r.allowed + r.denied, 0);
    const maxShare = answered
      ? Math.max(...perDaemon.map((r) => r.allowed + r.denied)) / answered
      : NaN;
    const denied = perDaemon.reduce((a, r) => a + r.denied, 0);

    const n = clients.length;
    console.log(
      `\nreconnect storm: ${n} clients of ${users} users on ${victimName} (leading ${ledByVictim.join(', ') || 'none of the callout streams'}), SIGKILL of its nats-server + membershipd; clients reconnect after ${reconnectTimeWaitMs} ms, ping every ${pingIntervalMs / 1000} s`
    );
    console.log(
      `(set-up ${((tConnect - tSetup) / 1000).toFixed(1)} s; ${n} connects through ${victimName}'s callout in ${connectS.toFixed(1)} s, decision p50 ${percentile(connectMs, 50)?.toFixed(1)} ms p99 ${percentile(connectMs, 99)?.toFixed(1)} ms)`
    );
    console.log(
      `all ${finished.length}/${n} reconnected with correct permissions in ${Number.isFinite(stormS) ? stormS.toFixed(2) + ' s' : `- (bound ${boundMs / 1000} s)`}; reconnect event p50 ${percentile(firstReconnect, 50)?.toFixed(2)} s, p90 ${percentile(firstReconnect, 90)?.toFixed(2)} s, last ${firstReconnect.at(-1)?.toFixed(2)} s`
    );
    console.log(
      `refused attempts: ${refusedEvents.length} (${JSON.stringify(refusedByCode)}) on ${refusedClients} clients; denied in daemons: ${denied}; failed checks: ${failedChecks.length}; clients closed: ${closed}`
    );
    console.log(
      `the victim's callout streams led again after (s, polled through ${survivors[0].name}): ${ledByVictim.map((s) => `${s.replace('KV_sealbus_', '')} ${electedAt[s] !== undefined ? (electedAt[s] / 1000).toFixed(2) : '-'}`).join(', ') || '-'}`
    );
    console.log(
      table(perDaemon, [
        ['daemon', (r) => r.name],
        ['clients landed', (r) => r.landed],
        ['allowed', (r) => r.allowed],
        ['denied', (r) => r.denied],
        ['share', (r) => (answered ? ((r.allowed + r.denied) / answered).toFixed(3) : '-')],
        ['p50 ms', (r) => r.p50?.toFixed(1) ?? '-'],
        ['p99 ms', (r) => r.p99?.toFixed(1) ?? '-'],
        ['max ms', (r) => (Number.isFinite(r.max) ? r.max.toFixed(1) : '-')],
        ['nats timeouts', (r) => r.natsTimeouts.length],
      ])
    );
    console.log(`callout decisions per second after the kill:\n  ${timeline.join('\n  ')}`);
    console.log(
      `client dials after the kill: attempts per client ${JSON.stringify(attemptsHist)}, dials lasting > 10 s: ${longDials}; first dial to a survivor lasted p50 ${(percentile(firstDialMs, 50) / 1000).toFixed(2)} s, max ${(firstDialMs.at(-1) / 1000).toFixed(2)} s; client status events ${JSON.stringify(codes)}`
    );
    // nats-server warnings on the survivors, by kind (digits folded), the
    // victim's route being down aside.
    const kinds = new Map();
    for (const r of perDaemon)
      for (const l of r.natsWarn) {
        const kind = `${r.name}: ${String(l.msg).replace(/\d+/g, '#')}`;
        if (!/connect to route/.test(kind)) kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      }
    if (kinds.size)
      console.log(
        `nats-server warnings on survivors:\n  ${[...kinds]
          .sort((a, b) => b[1] - a[1])
          .slice(0, 8)
          .map(([k, v]) => `${v}x ${k.slice(0, 160)}`)
          .join('\n  ')}`
      );
    console.log(
      `this process (${n} connections): cpu ${((cpu.user + cpu.system) / 1000 / (tEnd - t0)).toFixed(2)} cores over the storm, rss max ${(rssMax / 2 ** 20).toFixed(0)} MiB`
    );
    return {
      figures: {
        'cluster.reconnect_storm_s': stormS,
        'cluster.reconnect_storm_refused': refusedEvents.length,
        'cluster.reconnect_storm_max_share': maxShare,
        'cluster.reconnect_storm_unfinished': n - finished.length,
      },
    };
  } finally {
    await within(
      Promise.all(clients.filter(Boolean).map((c) => c.nc.close().catch(() => {}))),
      10_000
    );
    await Promise.all(nodes.map((d) => d.dispose().catch(() => {})));
    await dir.remove();
  }
}
