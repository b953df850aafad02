// Failover worst case (issue 14): the node SIGKILLed leads BOTH the
// persisted room's stream and the subscribing member's consumer, and the
// subscriber is attached to it (the case `cluster.failover_gap_ms_*` only
// meets by chance: it kills the subscriber's node whatever it leads, and
// the first delivery after it starts counting, ~100 ms before the kill
// script's SIGKILL lands, usually ends its "gap": 29-51 ms measured with a
// victim leading both). The
// publisher is attached to a survivor and sends a persisted message every
// 20 ms; the gap is the longest time between two consecutive new deliveries
// around the kill; lost = messages acknowledged to the publisher that the
// subscriber never got (must be 0).
//
// Each round: every replica current, leadership moved with stepdown
// requests until one node leads both (bounded), fresh clients (subscriber
// on that node, publisher on the others only), the kill, then what bounds
// the gap: when the stream and the consumer got new leaders (the
// survivors' nats-server log lines, and the JetStream API polled every 50 ms
// through a survivor), when the subscriber reconnected, how long the
// longest publish waited, when the flow came back; and which control-plane
// streams the victim led too, with the daemons' warnings. Then the node is
// restarted and everything is current again (a replica left behind for
// 20 s is nudged by a stepdown, counted).
//
// Suite `failover` runs it on a cluster of its own; `cluster` runs it too,
// also on a cluster of its own.
// Compare nats-server versions by running it once per binary:
//   NATS_SERVER_BIN=/path/to/nats-server npm run bench -- --json failover

import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { connect, nkeyAuthenticator } from 'nats';
import {
  deriveSeed,
  encodePublicIdentity,
  generateIdentity,
  loadIdentity,
  nkeySeedFromRaw,
} from '@sealbus/crypto';
import { internalNatsSeed } from '@sealbus/membershipd';
import { ControlClient, Sealbus } from '@sealbus/client';
import { memberDurableName, roomStreamName } from '@sealbus/protocol';
import { resolveNatsServerBinary } from '@sealbus/natsd';
import { startCluster } from '@sealbus/testing';
import { median, table } from './lib.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const enc = new TextEncoder();
const dec = new TextDecoder();

/** A promise that settles with `value` after `ms` unless it settles first. */
const within = (p, ms, value) => {
  let t;
  return Promise.race([p, new Promise((r) => (t = setTimeout(() => r(value), ms)))]).finally(() =>
    clearTimeout(t)
  );
};

/** A plain connection to `node`'s nats-server as the node's own user of `account` (app | internal). */
async function nodeConn(node, account, timeout = 2_000) {
  const internal = await loadIdentity(join(node.data_dir, 'internal.id'));
  const seed =
    account === 'app'
      ? enc.encode(nkeySeedFromRaw('user', deriveSeed(internal.signSeed, 'node-app')))
      : internalNatsSeed(internal);
  return connect({
    servers: node.nats_url,
    authenticator: nkeyAuthenticator(seed),
    reconnect: false,
    timeout,
  });
}

/** `fn(nc)` over a connection to the first node in `nodes` that answers. */
async function onAnyNode(nodes, account, fn) {
  let last;
  for (const node of nodes) {
    let nc;
    try {
      nc = await nodeConn(node, account);
    } catch (err) {
      last = err;
      continue;
    }
    try {
      return await fn(nc, node);
    } finally {
      await within(nc.close(), 2_000);
    }
  }
  throw last ?? new Error('no node answers');
}

const whole = (c) =>
  !!c?.leader && c.replicas?.length === 2 && c.replicas.every((r) => r.current && !r.offline);

/** The room stream's and the member consumer's raft state (null while unanswered). */
async function raftOf(nc, stream, durable, timeout = 1_000) {
  const jsm = await nc.jetstreamManager({ timeout, checkAPI: false });
  const [si, ci] = await Promise.all([
    jsm.streams.info(stream).catch(() => null),
    jsm.consumers.info(stream, durable).catch(() => null),
  ]);
  return { stream: si?.cluster ?? null, consumer: ci?.cluster ?? null };
}

/**
 * Who leads the room stream and the member's consumer now (through any
 * live node); for the `cluster` bench's own kill report.
 */
export async function roomLeaders(cl, roomId, memberSignPub) {
  return onAnyNode(cl.state().nodes, 'app', async (nc) => {
    const r = await raftOf(nc, roomStreamName(roomId), memberDurableName(memberSignPub), 2_000);
    return { stream: r.stream?.leader ?? null, consumer: r.consumer?.leader ?? null };
  }).catch(() => ({ stream: null, consumer: null }));
}

/** A leader stepdown request; true when the server says it stepped down. */
async function stepdown(nc, subj) {
  const res = await nc.request(subj, undefined, { timeout: 5_000 }).catch((e) => e);
  try {
    return JSON.parse(dec.decode(res.data)).success === true;
  } catch {
    return false;
  }
}

/**
 * A replica restarted with its node sometimes stays behind for minutes
 * (seen with nats-server 2.10.27: "current": false, lag ~950, not heard
 * from for 270 s, through leader changes). As an operator would: a raft
 * group behind for NUDGE_AFTER_MS gets a leader stepdown, and one still
 * behind after RESTART_AFTER_MS has its lagging node restarted (SIGTERM,
 * start). Both counted in `stats` and printed; the measured kills are not
 * touched (this runs between them).
 */
const NUDGE_AFTER_MS = 20_000;
const RESTART_AFTER_MS = 60_000;
function nudger(cl, stats) {
  const seen = new Map();
  return {
    ok: (key) => seen.delete(key),
    async behind(key, nc, subj, raft) {
      const now = Date.now();
      const b = seen.get(key) ?? { nudgedAt: now, restartedAt: now };
      seen.set(key, b);
      const lagging = raft?.replicas?.find((r) => !r.current || r.offline)?.name;
      if (lagging && now - b.restartedAt > RESTART_AFTER_MS) {
        b.restartedAt = b.nudgedAt = now;
        stats.restarts.push(lagging);
        await cl.kill(lagging, 'SIGTERM').catch(() => {});
        await cl.start(lagging).catch(() => {});
      } else if (now - b.nudgedAt > NUDGE_AFTER_MS) {
        b.nudgedAt = now;
        stats.nudges++;
        await stepdown(nc, subj);
      }
    },
  };
}

/** Every stream of both accounts has a leader and all replicas current, within `timeoutMs`. */
async function everythingCurrent(cl, stats, timeoutMs = 180_000) {
  const deadline = Date.now() + timeoutMs;
  const nudge = nudger(cl, stats);
  let last = '';
  while (Date.now() < deadline) {
    let lagging = 0;
    for (const account of ['internal', 'app']) {
      try {
        await onAnyNode(cl.state().nodes, account, async (nc) => {
          const jsm = await nc.jetstreamManager({ timeout: 3_000, checkAPI: false });
          const behind = [];
          for await (const si of jsm.streams.list()) {
            const key = `${account}/${si.config.name}`;
            if (whole(si.cluster)) nudge.ok(key);
            else {
              lagging++;
              last = `${si.config.name}: ${JSON.stringify(si.cluster)}`;
              if (si.cluster?.leader) behind.push([key, si.config.name, si.cluster]);
            }
          }
          for (const [key, name, raft] of behind)
            await nudge.behind(key, nc, `$JS.API.STREAM.LEADER.STEPDOWN.${name}`, raft);
        });
      } catch (err) {
        lagging++;
        last = err.message;
      }
    }
    if (lagging === 0) return;
    await sleep(250);
  }
  throw new Error(`streams not all current within ${timeoutMs / 1000} s; last ${last}`);
}

/**
 * Moves leadership until one node leads both the stream and the consumer,
 * each with all replicas current; returns that node's name. Stepdowns pick
 * the next leader at random (nats-server 2.10 takes no preference), so this
 * steps the consumer down until it lands on the stream's leader, now and
 * then the stream instead; bounded in attempts and time.
 */
async function colocate(cl, stream, durable, stats, { attempts = 16, timeoutMs = 180_000 } = {}) {
  const deadline = Date.now() + timeoutMs;
  const nudge = nudger(cl, stats);
  const subjects = {
    stream: `$JS.API.STREAM.LEADER.STEPDOWN.${stream}`,
    consumer: `$JS.API.CONSUMER.LEADER.STEPDOWN.${stream}.${durable}`,
  };
  let stepdowns = 0;
  let last = '';
  while (Date.now() < deadline) {
    const r = await onAnyNode(cl.state().nodes, 'app', async (nc) => {
      const raft = await raftOf(nc, stream, durable, 3_000);
      last = JSON.stringify(raft);
      let waiting = false;
      for (const k of ['stream', 'consumer']) {
        if (whole(raft[k])) nudge.ok(k);
        else {
          waiting = true;
          if (raft[k]?.leader) await nudge.behind(k, nc, subjects[k], raft[k]);
        }
      }
      if (waiting) return { wait: true };
      if (raft.stream.leader === raft.consumer.leader) return { leader: raft.stream.leader };
      if (stepdowns >= attempts) throw new Error(`not co-located after ${stepdowns} stepdowns`);
      stepdowns++;
      if (!(await stepdown(nc, subjects[stepdowns % 4 === 0 ? 'stream' : 'consumer'])))
        last = `stepdown refused; ${last}`;
      return { wait: true };
    }).catch((err) => {
      if (/not co-located/.test(err.message)) throw err;
      last = err.message;
      return { wait: true };
    });
    if (r.leader) return { leader: r.leader, stepdowns };
    await sleep(300);
  }
  throw new Error(`stream and consumer not co-located within ${timeoutMs / 1000} s; last ${last}`);
}

/** A node's log lines (JSON) written to `file` after byte `from`. */
function logLinesSince(file, from) {
  let text;
  try {
    text = readFileSync(file).subarray(from).toString('utf8');
  } catch {
    return [];
  }
  const out = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      const l = JSON.parse(line);
      out.push(l);
    } catch {
      /* partial line */
    }
  }
  return out;
}

const sizeOf = (file) => {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
};

/** Longest interval between consecutive times in `ts` (sorted) that ends after `t0`, and its end. */
function longestGap(ts, t0) {
  let gap = 0;
  let end = NaN;
  for (let i = 1; i < ts.length; i++)
    if (ts[i] > t0 && ts[i] - ts[i - 1] > gap) {
      gap = ts[i] - ts[i - 1];
      end = ts[i];
    }
  return { gap, end };
}

async function oneRound(ctx, r) {
  const { cl, room, pubId, subId, stream, durable } = ctx;
  const placed = await colocate(cl, stream, durable, ctx.stats);
  const victimName = placed.leader;
  const nodes = cl.state().nodes;
  const victim = nodes.find((n) => n.name === victimName);
  const survivors = nodes.filter((n) => n !== victim);
  const allUrls = nodes.map((n) => n.http_url);
  const clients = [];
  const poll = [];
  // The publisher stops with the round, whatever ends it.
  const pub = { stop: false, sent: 0 };
  try {
    // Subscriber attached to the victim (its list names the survivors after
    // it); publisher on the survivors only.
    const S = await Sealbus.connect({
      natsServers: [victim.nats_url, ...survivors.map((n) => n.nats_url)],
      controlUrls: allUrls,
      identity: subId,
      nats: { noRandomize: true },
    });
    clients.push(S);
    const P = await Sealbus.connect({
      natsServers: survivors.map((n) => n.nats_url),
      controlUrls: allUrls,
      identity: pubId,
      publishTimeoutMs: 20_000,
    });
    clients.push(P);
    const errors = [];
    for (const c of clients) c.on('error', (e) => errors.push(e));
    const reconnects = [];
    S.on('reconnect', (server) => reconnects.push({ at: performance.now(), server }));
    const got = new Map();
    const deliveries = [];
    await S.subscribe(room.id, (m) => {
      const { r: round, n } = JSON.parse(dec.decode(m.data));
      const now = performance.now();
      const key = `${round}.${n}`;
      if (got.has(key)) return;
      got.set(key, now);
      if (round === r) deliveries.push(now);
    });
    const publishes = [];
    const publisher = (async () => {
      for (let n = 1; !pub.stop; n++) {
        for (let tries = 0; !pub.stop && tries < 10; tries++) {
          const s = performance.now();
          try {
            await P.publish(room.id, enc.encode(JSON.stringify({ r, n })));
            publishes.push({ s, e: performance.now(), ok: true });
            pub.sent = n;
            break;
          } catch {
            publishes.push({ s, e: performance.now(), ok: false });
            await sleep(50);
          }
        }
        await sleep(20);
      }
    })();

    // Steady flow, and the leaders still where they were put.
    const warm = Date.now() + 10_000;
    while (deliveries.length < 50 && Date.now() < warm) await sleep(100);
    await sleep(500);
    const before = await onAnyNode(survivors, 'app', (nc) =>
      raftOf(nc, stream, durable, 2_000)
    ).catch(() => ({ stream: null, consumer: null }));
    const ledBoth =
      before.stream?.leader === victimName &&
      before.consumer?.leader === victimName &&
      S.attachedServer === victimName;
    // The control-plane streams the victim leads too (the append service
    // reads the writer's grant from them, at most 1 s old).
    const kvLed = await onAnyNode(survivors, 'internal', async (nc) => {
      const jsm = await nc.jetstreamManager({ timeout: 3_000, checkAPI: false });
      const led = [];
      for await (const si of jsm.streams.list())
        if (si.cluster?.leader === victimName) led.push(si.config.name);
      return led;
    }).catch(() => []);
    const survivorPoll = await nodeConn(survivors[0], 'app');
    clients.push({ close: () => survivorPoll.close() });
    const logFiles = survivors.map((n) => join(cl.dir, `${n.name}.log`));
    const logFrom = logFiles.map(sizeOf);

    // The kill: the daemon and its nats-server, as a crash.
    const natsPid = JSON.parse(readFileSync(join(victim.data_dir, 'node.json'), 'utf8')).nats_pid;
    const t0 = performance.now();
    const killEpoch = Date.now();
    for (const pid of [natsPid, victim.pid]) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    const elected = {};
    const pollOne = async (k) => {
      // When the API shows a new leader, asked through a survivor every 50 ms.
      const jsm = await survivorPoll.jetstreamManager({ timeout: 300, checkAPI: false });
      while (performance.now() - t0 < 30_000 && elected[k] === undefined) {
        const q = performance.now();
        const info = await (
          k === 'stream' ? jsm.streams.info(stream) : jsm.consumers.info(stream, durable)
        ).catch(() => null);
        const who = info?.cluster?.leader;
        if (who && who !== victimName) elected[k] = { at: performance.now() - t0, who };
        poll.push(performance.now() - q);
        await sleep(50);
      }
    };
    const polling = Promise.all([pollOne('stream'), pollOne('consumer')]).catch((err) =>
      console.error(`failover: polling leaders: ${err.message}`)
    );
    await cl.kill(victimName);
    // Observe until deliveries have flowed steadily for 4 s since the last
    // stall (> 1 s) after the kill, and at least 12 s (an election may take 9 s).
    const bound = t0 + 45_000;
    for (;;) {
      const now = performance.now();
      if (now > bound) break;
      let resumed;
      for (let i = deliveries.length - 1; i > 0 && deliveries[i] > t0; i--)
        if (deliveries[i] - deliveries[i - 1] > 1_000) {
          resumed = deliveries[i];
          break;
        }
      if (resumed && now > t0 + 12_000 && now > resumed + 4_000 && now - deliveries.at(-1) < 300)
        break;
      await sleep(100);
    }
    pub.stop = true;
    await within(publisher, 25_000);
    const catchUp = Date.now() + 20_000;
    const missing = () => {
      let k = 0;
      for (let n = 1; n <= pub.sent; n++) if (!got.has(`${r}.${n}`)) k++;
      return k;
    };
    while (missing() > 0 && Date.now() < catchUp) await sleep(200);
    await within(polling, 31_000);

    // When the survivors' nats-servers logged the new leaders (server clocks).
    const since = (l) => Date.parse(l.time) - killEpoch;
    const all = logFiles.flatMap((f, i) => logLinesSince(f, logFrom[i]));
    const lines = all.filter((l) => l.component === 'nats-server');
    // Every stream that got a new leader, and when (first line).
    const streamsElected = {};
    for (const l of lines) {
      const m = /new stream leader for '[^']*> ([^']+)'/.exec(String(l.msg));
      if (m && streamsElected[m[1]] === undefined) streamsElected[m[1]] = since(l);
    }
    // The daemons' warnings after the kill, by message: count, first, last.
    const warnings = {};
    for (const l of all) {
      if (l.component === 'nats-server' || l.level < 40) continue;
      const w = (warnings[l.msg] ??= { n: 0, first: since(l), last: since(l), err: l.err });
      w.n++;
      w.first = Math.min(w.first, since(l));
      w.last = Math.max(w.last, since(l));
    }
    const firstLine = (re) => {
      const hits = lines.filter((l) => re.test(String(l.msg))).map(since);
      return hits.length ? Math.min(...hits) : undefined;
    };
    const streamRe = new RegExp(`new stream leader for '[^']*> ${stream}'`);
    const consumerRe = new RegExp(`new consumer leader for '[^']*> ${stream} > ${durable}'`);
    const metaRe = /metadata leader/;
    const stalled = publishes
      .filter((p) => p.e > t0)
      .reduce((a, p) => (!a || p.e - p.s > a.e - a.s ? p : a), null);
    const g = longestGap(deliveries, t0);
    const row = {
      round: r + 1,
      victim: victimName,
      ledBoth,
      stepdowns: placed.stepdowns,
      gap: g.gap,
      // When the flow came back: the end of the longest gap.
      flowBack: g.end - t0,
      reconnect: (reconnects.find((x) => x.at > t0)?.at ?? NaN) - t0,
      streamLog: firstLine(streamRe),
      consumerLog: firstLine(consumerRe),
      metaLog: firstLine(metaRe),
      consumerLogCount: lines.filter((l) => consumerRe.test(String(l.msg))).length,
      streamPoll: elected.stream?.at,
      consumerPoll: elected.consumer?.at,
      // The publish that waited longest: how long, and when it was acknowledged.
      longestPublish: stalled ? stalled.e - stalled.s : NaN,
      stalledAcked: stalled ? stalled.e - t0 : NaN,
      failedPublishes: publishes.filter((p) => !p.ok && p.e > t0).length,
      sent: pub.sent,
      lost: missing(),
      errors: errors.length,
      pollMs: median(poll),
      kvLed,
      streamsElected,
      warnings,
    };
    return row;
  } finally {
    pub.stop = true;
    // The victim back, everything current, then the clients go (the
    // subscriber's stop moves its consumer, which wants all its peers).
    await cl.start(victimName).catch(() => {});
    await everythingCurrent(cl, ctx.stats).catch((err) =>
      console.error(`failover: ${err.message}`)
    );
    await within(Promise.all(clients.map((c) => c.close().catch(() => {}))), 15_000);
  }
}

/**
 * The worst-case failover measured `rounds` times on `cl` (a running
 * 3-node cluster from startCluster). Figures `cluster.failover_worst_*`.
 */
export async function failoverWorst(cl, { rounds = 5 } = {}) {
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
  const pubId = await mk('worst-pub');
  const subId = await mk('worst-sub');
  admin.close();
  const owner = await Sealbus.connect({
    natsServers: st.nodes.map((n) => n.nats_url),
    controlUrls: st.nodes.map((n) => n.http_url),
    identity: pubId,
  });
  let room;
  try {
    room = await owner.createRoom({
      subject: 'bench.failover.worst',
      policy: { encrypt: true, persist: true, sign: true },
    });
    await owner.invite(room.id, subId.signPubHex, 'reader');
  } finally {
    await owner.close();
  }
  const ctx = {
    cl,
    room,
    pubId,
    subId,
    stream: roomStreamName(room.id),
    durable: memberDurableName(subId.signPubHex),
    stats: { nudges: 0, restarts: [] },
  };
  await everythingCurrent(cl, ctx.stats);
  const rows = [];
  for (let r = 0; r < rounds; r++) {
    const row = await oneRound(ctx, r);
    rows.push(row);
    console.error(
      `failover worst case: kill ${r + 1}/${rounds} of ${row.victim}, gap ${row.gap.toFixed(0)} ms, lost ${row.lost}`
    );
  }

  const version = (() => {
    try {
      return resolveNatsServerBinary().version;
    } catch {
      return '?';
    }
  })();
  const s = (ms) => (Number.isFinite(ms) ? (ms / 1000).toFixed(2) : '-');
  console.log(
    `\nfailover worst case: SIGKILL of the node leading the room stream AND the member's consumer, the subscriber attached to it, publisher on a survivor every 20 ms (${rounds} kills, nats-server ${version}; times in s after the kill)`
  );
  console.log(
    table(rows, [
      ['kill', (x) => `${x.round} ${x.victim}`],
      ['led both', (x) => (x.ledBoth ? 'yes' : 'NO')],
      ['stepdowns', (x) => x.stepdowns],
      ['gap', (x) => s(x.gap)],
      ['flow back', (x) => s(x.flowBack)],
      ['sub reconn', (x) => s(x.reconnect)],
      ['stream ldr log', (x) => s(x.streamLog)],
      ['consumer ldr log', (x) => s(x.consumerLog)],
      ['meta ldr log', (x) => s(x.metaLog)],
      ['stream ldr api', (x) => s(x.streamPoll)],
      ['consumer ldr api', (x) => s(x.consumerPoll)],
      ['longest pub', (x) => s(x.longestPublish)],
      ['its ack', (x) => s(x.stalledAcked)],
      ['back - elections', (x) => s(x.flowBack - Math.max(x.streamLog, x.consumerLog))],
      ['lost', (x) => x.lost],
    ])
  );
  for (const x of rows) {
    const kv = x.kvLed.map((n) => `${n.replace('KV_sealbus_', '')} ${s(x.streamsElected[n])}`);
    const warn = Object.entries(x.warnings).map(
      ([m, w]) => `${w.n}x "${m}" ${s(w.first)}..${s(w.last)}${w.err ? ` (${w.err})` : ''}`
    );
    console.log(
      `  kill ${x.round}: control streams it led, new leader at: ${kv.join(', ') || '-'}; daemon warnings: ${warn.join('; ') || '-'}`
    );
  }
  const later = rows.map((x) => Math.max(x.streamLog, x.consumerLog)).filter(Number.isFinite);
  const after = rows.map((x) => x.flowBack - Math.max(x.streamLog, x.consumerLog));
  const reconn = rows.map((x) => x.reconnect).filter(Number.isFinite);
  console.log(
    `what bounds it: the later of the stream's and the consumer's elections at ${s(median(later))} s median (${s(Math.min(...later))}..${s(Math.max(...later))}); flow back ${s(median(after))} s median after it (max ${s(Math.max(...after))}); subscriber reconnected after ${s(median(reconn))} s median (max ${s(Math.max(...reconn))})`
  );
  const gaps = rows.map((x) => x.gap);
  const lost = rows.reduce((a, x) => a + x.lost, 0);
  console.log(
    `gap median ${median(gaps).toFixed(0)} ms, max ${Math.max(...gaps).toFixed(0)} ms; sent ${rows.reduce((a, x) => a + x.sent, 0)}, lost ${lost}; kills where the victim did not lead both: ${rows.filter((x) => !x.ledBoth).length}; consumer leader changes logged per kill ${rows.map((x) => x.consumerLogCount).join(' ')}; replicas left behind between kills: nudged by a stepdown ${ctx.stats.nudges}, nodes restarted ${ctx.stats.restarts.join(' ') || 'none'}; SDK errors ${rows.reduce((a, x) => a + x.errors, 0)}`
  );
  return {
    rows,
    figures: {
      'cluster.failover_worst_gap_ms_median': median(gaps),
      'cluster.failover_worst_gap_ms_max': Math.max(...gaps),
      'cluster.failover_worst_lost': lost,
    },
  };
}

/** Suite `failover`: the worst case alone, on a cluster of its own. */
export async function failoverBench() {
  const cl = await startCluster();
  try {
    const { figures } = await failoverWorst(cl);
    return { figures };
  } finally {
    await cl.down();
  }
}
