// Cluster benchmarks (3 nodes on loopback, plain TCP):
// 1. publish -> receive gap when the node a subscriber is attached to is
//    SIGKILLed (median and max over several kills), and messages lost, in a
//    persisted room;
// 2. signed control requests through a stream leader kill: failed requests
//    and the slowest answer;
// 3. signed control-plane requests/s, the 3-node cluster vs a single node,
//    same load generator;
// 4. a reconnect storm: 1,000 clients re-authenticating through the callout
//    when their node is SIGKILLed (bench/storm.mjs, on a cluster of its own);
// 5. the failover worst case: the node SIGKILLed leads the room stream and
//    the member's consumer, and the subscriber is attached to it
//    (bench/failover.mjs, on a cluster of its own).

import { join } from 'node:path';
import { connect, nkeyAuthenticator } from 'nats';
import {
  encodePublicIdentity,
  generateIdentity,
  loadIdentity,
  requestSigner,
  signRequest,
} from '@sealbus/crypto';
import { internalNatsSeed } from '@sealbus/membershipd';
import { ControlClient, Sealbus } from '@sealbus/client';
import { startCluster, startDaemon } from '@sealbus/testing';
import { load, median, table } from './lib.mjs';
import { reconnectStorm } from './storm.mjs';
import { failoverBench, roomLeaders } from './failover.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Waits until every stream has all its replicas current (what an operator
 * waits for before the next maintenance step), so one kill's catch-up does
 * not bleed into the next measurement.
 */
async function allCurrent(cl, timeoutMs = 60_000) {
  const st = cl.state();
  const node = st.nodes[0];
  const internal = await loadIdentity(join(node.data_dir, 'internal.id'));
  const nc = await connect({
    servers: node.nats_url,
    authenticator: nkeyAuthenticator(internalNatsSeed(internal)),
  });
  try {
    const jsm = await nc.jetstreamManager();
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      let lagging = 0;
      try {
        for await (const si of jsm.streams.list()) {
          const reps = si.cluster?.replicas ?? [];
          if (!si.cluster?.leader || reps.some((r) => !r.current || r.offline)) lagging++;
        }
      } catch {
        lagging++;
      }
      if (lagging === 0) return;
      await sleep(250);
    }
    throw new Error('streams not all current after a restart');
  } finally {
    await nc.close();
  }
}

async function failoverGaps(cl, kills) {
  const st = cl.state();
  const admin = new ControlClient({
    urls: st.nodes.map((n) => n.http_url),
    identity: await loadIdentity(st.admin_identity),
  });
  const mk = async (handle) => {
    const id = generateIdentity();
    await admin.addUser({ public: encodePublicIdentity(id), handle, role: 'member' });
    return id;
  };
  const [pubId, subId] = [await mk('bench-pub'), await mk('bench-sub')];
  const opts = (id) => ({
    natsServers: st.nodes.map((n) => n.nats_url),
    controlUrls: st.nodes.map((n) => n.http_url),
    identity: id,
  });
  const P = await Sealbus.connect(opts(pubId));
  const S = await Sealbus.connect(opts(subId));
  const room = await P.createRoom({
    subject: 'bench.failover',
    policy: { encrypt: true, persist: true, sign: true },
  });
  await P.invite(room.id, subId.signPubHex, 'reader');
  const received = new Set();
  /** When each new message arrived (performance.now()). */
  const arrivals = [];
  const gaps = [];
  await S.subscribe(
    room.id,
    (m) => {
      const n = JSON.parse(new TextDecoder().decode(m.data)).n;
      if (!received.has(n)) arrivals.push(performance.now());
      received.add(n);
    },
    { from: 'start' }
  );
  /**
   * The gap a kill made: the longest time between two consecutive new
   * messages, from the last one before the kill was issued until the
   * restart (a delivery can still land while the kill is on its way: the
   * interval that spans the kill counts, not the first one after it).
   */
  const gapAround = (t0, t1) => {
    let from = arrivals.findLastIndex((t) => t < t0);
    if (from < 0) from = 0;
    let worst = 0;
    for (let i = from; i < arrivals.length && arrivals[i] < t1; i++)
      worst = Math.max(worst, (arrivals[i + 1] ?? t1) - arrivals[i]);
    return worst;
  };
  let sent = 0;
  let stop = false;
  const publisher = (async () => {
    for (let n = 1; !stop; n++) {
      for (;;) {
        try {
          await P.publish(room.id, new TextEncoder().encode(JSON.stringify({ n })));
          sent = n;
          break;
        } catch {
          await sleep(50);
        }
      }
      await sleep(20);
    }
  })();
  await sleep(2_000);
  const led = [];
  for (let k = 0; k < kills; k++) {
    const victim = S.attachedServer;
    // What the victim leads besides the subscriber's connection (chance).
    led.push({ victim, ...(await roomLeaders(cl, room.id, subId.signPubHex)) });
    const t0 = performance.now();
    await cl.kill(victim);
    await sleep(12_000);
    gaps.push(gapAround(t0, performance.now()));
    await cl.start(victim);
    await allCurrent(cl);
  }
  stop = true;
  await publisher;
  const deadline = Date.now() + 15_000;
  while (received.size < sent && Date.now() < deadline) await sleep(200);
  let lost = 0;
  for (let n = 1; n <= sent; n++) if (!received.has(n)) lost++;
  await P.close();
  await S.close();
  admin.close();
  return { gaps, sent, lost, led };
}

async function leaderKill(cl, which) {
  const st = cl.state();
  const internal = await loadIdentity(join(st.nodes[0].data_dir, 'internal.id'));
  const nc = await connect({
    servers: st.nodes[0].nats_url,
    authenticator: nkeyAuthenticator(internalNatsSeed(internal)),
  });
  const jsm = await nc.jetstreamManager();
  const victim = (await jsm.streams.info(which)).cluster.leader;
  await nc.close();
  const others = st.nodes.filter((n) => n.name !== victim).map((n) => n.http_url);
  const ctl = new ControlClient({
    urls: others,
    identity: await loadIdentity(st.admin_identity),
    timeoutMs: 15_000,
  });
  const events = [];
  const writes = [];
  let stop = false;
  const loop = (async () => {
    while (!stop) {
      const s = performance.now();
      const ok = await ctl.me().then(
        () => true,
        () => false
      );
      events.push({ at: s, ms: performance.now() - s, ok });
      await sleep(20);
    }
  })();
  // Signed writes beside the reads: a user added every 100 ms.
  let w = 0;
  const writeLoop = (async () => {
    while (!stop) {
      const s = performance.now();
      const ok = await ctl
        .addUser({
          public: encodePublicIdentity(generateIdentity()),
          handle: `stall-${which.toLowerCase()}-${w++}`,
          role: 'member',
        })
        .then(
          () => true,
          () => false
        );
      writes.push({ at: s, ms: performance.now() - s, ok });
      await sleep(100);
    }
  })();
  await sleep(1_000);
  const t = performance.now();
  await cl.kill(victim);
  await sleep(10_000);
  stop = true;
  await loop;
  await writeLoop;
  ctl.close();
  await cl.start(victim);
  await allCurrent(cl);
  const after = events.filter((e) => e.at >= t - 50);
  return {
    stream: which,
    victim,
    requests: after.length,
    failed: after.filter((e) => !e.ok).length,
    slowest: Math.max(...after.map((e) => e.ms)),
    slowestWrite: Math.max(...writes.filter((e) => e.at >= t - 100).map((e) => e.ms)),
    failedWrites: writes.filter((e) => e.at >= t - 100 && !e.ok).length,
  };
}

async function signedRps(origin, adminFile) {
  const signer = requestSigner(await loadIdentity(adminFile));
  const url = new URL('/me', origin);
  const hs = Array.from({ length: 20_000 }, () =>
    signRequest(signer, { method: 'GET', url }, { lifetimeSec: 300 })
  );
  await load({
    origin,
    path: '/me',
    headersFor: (i) => hs[i + 19_000] ?? {},
    durationMs: 300,
    concurrency: 32,
  });
  const r = await load({
    origin,
    path: '/me',
    headersFor: (i) => hs[i],
    durationMs: 3_000,
    concurrency: 32,
  });
  if (r.failed) throw new Error(`${r.failed} failed: ${JSON.stringify(r.statuses)}`);
  return r;
}

export async function clusterBench({ kills = 3 } = {}) {
  const figures = {};
  const cl = await startCluster();
  try {
    const f = await failoverGaps(cl, kills);
    console.log(
      `\nfailover of the subscriber's node (persisted room, publish every 20 ms, ${kills} SIGKILLs)`
    );
    console.log(
      `publish->receive gap: median ${median(f.gaps).toFixed(0)} ms, max ${Math.max(...f.gaps).toFixed(0)} ms; sent ${f.sent}, lost ${f.lost}`
    );
    console.log(
      `the killed node (gap ms; leader of the room stream / the member's consumer): ${f.led.map((l, k) => `${l.victim} (${f.gaps[k]?.toFixed(0) ?? '-'}; ${l.stream === l.victim ? 'yes' : 'no'} / ${l.consumer === l.victim ? 'yes' : 'no'})`).join(', ')}`
    );
    Object.assign(figures, {
      'cluster.failover_gap_ms_median': median(f.gaps),
      'cluster.failover_gap_ms_max': Math.max(...f.gaps),
      'cluster.failover_lost': f.lost,
    });

    const lk = [
      await leaderKill(cl, 'KV_sealbus_nonces'),
      await leaderKill(cl, 'KV_sealbus_users'),
    ];
    console.log(
      '\nsigned control requests (every 20 ms, all surviving URLs) through a stream leader SIGKILL'
    );
    figures['cluster.signed_read_stall_ms_max'] = Math.max(...lk.map((r) => r.slowest));
    figures['cluster.signed_write_stall_ms_max'] = Math.max(...lk.map((r) => r.slowestWrite));
    console.log(
      table(lk, [
        ['stream', (r) => r.stream],
        ['leader', (r) => r.victim],
        ['requests', (r) => r.requests],
        ['failed', (r) => r.failed],
        ['slowest ms', (r) => r.slowest.toFixed(0)],
        ['slowest write ms', (r) => r.slowestWrite.toFixed(0)],
        ['failed writes', (r) => r.failedWrites],
      ])
    );

    const single = await startDaemon({ args: ['--log-level', 'warn'] });
    try {
      const rows = [];
      for (let round = 0; round < 2; round++) {
        rows.push({
          where: 'single node',
          ...(await signedRps(single.httpUrl, join(single.dataDir, 'admin.id'))),
        });
        rows.push({
          where: '3-node cluster (R3)',
          ...(await signedRps(cl.state().nodes[0].http_url, cl.state().admin_identity)),
        });
      }
      const agg = (w) => ({
        where: w,
        rps: median(rows.filter((r) => r.where === w).map((r) => r.rps)),
        p99: median(rows.filter((r) => r.where === w).map((r) => r.p99)),
      });
      const out = [agg('single node'), agg('3-node cluster (R3)')];
      console.log(
        '\nsigned GET /me, full middleware, concurrency 32, 2 interleaved rounds (medians)'
      );
      console.log(
        table(out, [
          ['where', (r) => r.where],
          ['req/s', (r) => r.rps.toFixed(0)],
          ['p99 ms', (r) => r.p99.toFixed(1)],
        ])
      );
      console.log(`ratio cluster/single: ${(out[1].rps / out[0].rps).toFixed(3)}`);
      figures['cluster.signed_cluster_over_single'] = out[1].rps / out[0].rps;
    } finally {
      await single.dispose();
    }
  } finally {
    await cl.down();
  }
  // On a cluster of its own too: after the kills above a restarted node's
  // replica of a room stream can stay behind for minutes.
  try {
    Object.assign(figures, (await failoverBench()).figures);
  } catch (err) {
    console.error(`\nfailover worst case failed: ${err.stack ?? err}`);
    for (const k of ['gap_ms_median', 'gap_ms_max', 'lost'])
      figures[`cluster.failover_worst_${k}`] = NaN;
  }
  // After the first cluster is down: two at once would share the two cores.
  try {
    Object.assign(figures, (await reconnectStorm()).figures);
  } catch (err) {
    console.error(`\nreconnect storm failed: ${err.stack ?? err}`);
    figures['cluster.reconnect_storm_s'] = NaN;
  }
  return { figures };
}
