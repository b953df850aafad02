// Room frames, side by side in one run (`npm run bench -- frames`):
// 1. in process, no network: what one 1 KiB frame costs to seal, open and
//    verify, and a signed frame's whole path (seal + sign, verify, open) on
//    this thread alone vs with the SDK's verification threads, each beside
//    one core's node:crypto Ed25519 verifications of 1 KiB;
// 2. end to end through one daemon (publisher and subscriber: two SDK
//    clients in this process, as bench/dataplane.mjs section 1 does): a
//    signed room with signatures verified inline vs on the verification
//    threads, an unsigned encrypted room, and plain NATS of the same bytes.

import { generateKeyPairSync, randomBytes, sign as cryptoSign, verify } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { connect, nkeyAuthenticator } from 'nats';
import {
  FrameSealer,
  ReplayWindow,
  encodePublicIdentity,
  frameSignatureValid,
  generateIdentity,
  loadIdentity,
  openFramePayload,
  parseFrame,
} from '@sealbus/crypto';
import { internalNatsSeed } from '@sealbus/membershipd';
import { ControlClient, Sealbus } from '@sealbus/client';
import { OrderedFrames, VerifyPool, natsOf } from '@sealbus/client/internal';
import { startDaemon } from '@sealbus/testing';
import { median, table } from './lib.mjs';

const PAYLOAD = new Uint8Array(1024).fill(0x5a);
const ROOM = 'f00df00df00df00df00df00d';

/** node:crypto Ed25519 verifications per second of a 1 KiB message on this thread (~1 s). */
function verifiesPerSecond() {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const sig = cryptoSign(null, PAYLOAD, privateKey);
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < 1_000) {
    for (let i = 0; i < 100; i++) verify(null, PAYLOAD, publicKey, sig);
    n += 100;
  }
  return n / ((performance.now() - t0) / 1000);
}

/** Microseconds per call of `f`, for about `ms`. */
function usPer(f, ms = 500) {
  for (let i = 0; i < 2_000; i++) f();
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    for (let i = 0; i < 100; i++) f();
    n += 100;
  }
  return ((performance.now() - t0) * 1000) / n;
}

/** Signed frames through seal, OrderedFrames (with or without threads) and open, per second. */
async function signedPath(threads, n = 8_000) {
  await VerifyPool.reset();
  VerifyPool.threads = threads;
  const key = new Uint8Array(randomBytes(32));
  const sealer = new FrameSealer(ROOM, randomBytes(32));
  const window = new ReplayWindow();
  let opened = 0;
  let done;
  const finished = new Promise((r) => (done = r));
  const q = new OrderedFrames(VerifyPool.shared(), (bytes, _reply, sig) => {
    const f = parseFrame(bytes);
    if (!(sig ?? frameSignatureValid(f))) throw new Error('a genuine frame did not verify');
    openFramePayload(f, key);
    window.check(f.header.sender, f.header.session, f.header.seq);
    if (++opened === n) done();
  });
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    q.push(sealer.seal(PAYLOAD, { epoch: 1, key, sign: true }), undefined);
    // A socket's worth at a time, as frames arrive.
    if (i % 50 === 49) await new Promise((r) => setImmediate(r));
  }
  await finished;
  return n / ((performance.now() - t0) / 1000);
}

async function throughput(n, setup) {
  const { publish, onMessage, flush, close } = await setup();
  let received = 0;
  let done;
  const finished = new Promise((r) => (done = r));
  onMessage(() => {
    if (++received === n) done();
  });
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    await publish();
    if (i % 500 === 499) await flush();
  }
  await flush();
  const timeout = new Promise((r) => setTimeout(() => r('timeout'), 120_000));
  const outcome = await Promise.race([finished, timeout]);
  const secs = (performance.now() - t0) / 1000;
  await close();
  if (outcome === 'timeout') throw new Error(`only ${received}/${n} received`);
  return n / secs;
}

export async function framesBench({ rounds = 3 } = {}) {
  const figures = {};
  const defaultThreads = VerifyPool.threads;
  const cores = availableParallelism();

  // 1. In process.
  const key = new Uint8Array(randomBytes(32));
  const sealer = new FrameSealer(ROOM, randomBytes(32));
  const unsignedFrame = sealer.seal(PAYLOAD, { epoch: 1, key, sign: false });
  const signedFrame = sealer.seal(PAYLOAD, { epoch: 1, key, sign: true });
  const costs = [
    ['seal, encrypted', usPer(() => sealer.seal(PAYLOAD, { epoch: 1, key, sign: false }))],
    ['seal, encrypted + signed', usPer(() => sealer.seal(PAYLOAD, { epoch: 1, key, sign: true }))],
    ['parse + open', usPer(() => openFramePayload(parseFrame(unsignedFrame), key))],
    ['parse + verify', usPer(() => frameSignatureValid(parseFrame(signedFrame)))],
  ];
  console.log('\none 1 KiB frame, in process (µs)');
  console.log(
    table(
      costs.map(([label, us]) => ({ label, us })),
      [
        ['step', (r) => r.label],
        ['µs', (r) => r.us.toFixed(1)],
      ]
    )
  );
  figures['frames.seal_us'] = costs[0][1];
  figures['frames.open_us'] = costs[2][1];

  const path = { inline: [], threads: [] };
  for (let round = 0; round < rounds; round++) {
    path.inline.push(await signedPath(0));
    if (defaultThreads > 0) path.threads.push(await signedPath(defaultThreads));
  }
  const verifyRate1 = verifiesPerSecond();
  const [pInline, pThreads] = [median(path.inline), median(path.threads)];
  console.log(
    `signed frames, seal + verify + open, one process, ${rounds} rounds (medians): ` +
      `inline ${pInline.toFixed(0)}/s (${(pInline / verifyRate1).toFixed(3)} of one core's verifies, ${verifyRate1.toFixed(0)}/s)` +
      (defaultThreads > 0
        ? `   ${defaultThreads} verification thread(s) ${pThreads.toFixed(0)}/s (${(pThreads / verifyRate1).toFixed(3)})`
        : `   no verification threads (${cores} core)`)
  );
  figures['frames.path_inline_over_verify'] = pInline / verifyRate1;
  if (defaultThreads > 0) figures['frames.path_threads_over_verify'] = pThreads / verifyRate1;

  // 2. End to end.
  const d = await startDaemon({ args: ['--changes-per-minute', '0'] });
  try {
    const adminId = await loadIdentity(join(d.dataDir, 'admin.id'));
    const admin = new ControlClient({ urls: [d.httpUrl], identity: adminId });
    const mk = async (handle) => {
      const id = generateIdentity();
      await admin.addUser({ public: encodePublicIdentity(id), handle, role: 'member' });
      return id;
    };
    const [pubId, subId] = [await mk('frames-pub'), await mk('frames-sub')];
    const opts = (identity) => ({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity,
    });
    const P = await Sealbus.connect(opts(pubId));
    const S = await Sealbus.connect(opts(subId));
    const rooms = {};
    for (const [name, sign] of [
      ['signed', true],
      ['unsigned', false],
    ]) {
      const r = await P.createRoom({
        subject: `bench.frames.${name}`,
        policy: { encrypt: true, persist: false, sign },
      });
      await P.invite(r.id, subId.signPubHex, 'reader');
      rooms[name] = r;
    }
    const sdkCase = (room, threads) => async () => {
      // The pool is taken when a room's feed opens: set it first.
      await VerifyPool.reset();
      VerifyPool.threads = threads;
      let cb = () => {};
      const sub = await S.subscribe(room.id, () => cb());
      await P.publish(room.id, PAYLOAD); // warm the room state; not counted
      await new Promise((r) => setTimeout(r, 200));
      return {
        publish: () => P.publish(room.id, PAYLOAD),
        onMessage: (f) => (cb = f),
        flush: () => natsOf(P).flush(),
        close: () => sub.stop(),
      };
    };
    const plainCase = async () => {
      const internal = await loadIdentity(join(d.dataDir, 'internal.id'));
      const o = {
        servers: d.natsUrl,
        authenticator: nkeyAuthenticator(internalNatsSeed(internal)),
      };
      const [pub, sub] = [await connect(o), await connect(o)];
      let cb = () => {};
      sub.subscribe('bench.frames.plain', { callback: () => cb() });
      await sub.flush();
      return {
        publish: async () => pub.publish('bench.frames.plain', PAYLOAD),
        onMessage: (f) => (cb = f),
        flush: () => pub.flush(),
        close: async () => {
          await pub.close();
          await sub.close();
        },
      };
    };
    const cases = [
      ['plain NATS pub/sub (same bytes)', 40_000, plainCase],
      ['encrypted, unsigned room', 30_000, sdkCase(rooms.unsigned, defaultThreads)],
      ['encrypted + signed, verified inline', 10_000, sdkCase(rooms.signed, 0)],
      ...(defaultThreads > 0
        ? [
            [
              `encrypted + signed, ${defaultThreads} verification thread(s)`,
              10_000,
              sdkCase(rooms.signed, defaultThreads),
            ],
          ]
        : []),
    ];
    const res = new Map(cases.map(([l]) => [l, []]));
    for (let round = 0; round < rounds; round++)
      for (const [label, n, setup] of cases) res.get(label).push(await throughput(n, setup));
    const verifyRate = verifiesPerSecond();
    const rows = cases.map(([label]) => ({ label, rate: median(res.get(label)) }));
    const plain = rows[0].rate;
    console.log(
      `\nend to end, 1 KiB messages, ${rounds} interleaved rounds (medians); ` +
        `node:crypto Ed25519 verifies/s (1 KiB, one core): ${verifyRate.toFixed(0)}; ${cores} cores`
    );
    console.log(
      table(rows, [
        ['path', (r) => r.label],
        ['msgs/s', (r) => r.rate.toFixed(0)],
        ['vs plain', (r) => (r.rate / plain).toFixed(3)],
        ['vs verify', (r) => (r.rate / verifyRate).toFixed(3)],
      ])
    );
    figures['frames.e2e_unsigned_over_plain'] = rows[1].rate / plain;
    figures['frames.e2e_signed_inline_over_verify'] = rows[2].rate / verifyRate;
    if (rows[3]) figures['frames.e2e_signed_threads_over_verify'] = rows[3].rate / verifyRate;
    await P.close();
    await S.close();
    admin.close();
  } finally {
    await VerifyPool.reset();
    VerifyPool.threads = defaultThreads;
    await d.dispose();
  }
  return { figures };
}
