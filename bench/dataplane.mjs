// Data-plane benchmarks, one daemon, side by side:
// 1. end-to-end 1 KiB messages/s (publish → verified, decrypted delivery)
//    for an encrypted+signed room, an encrypted unsigned room, and plain
//    NATS publish/subscribe of the same bytes on the same server;
// 2. connections/s through the auth callout vs a static nkey user;
// 3. auth callout latency (p50/p99) for a user in 0 and in 1,000 rooms;
// 4. what owner-signed room statements cost: opening a room (fetching and
//    verifying its chain), an invite, a rekey of a 100-member room, each
//    beside the part of it that is statement work.

import { generateKeyPairSync, sign as cryptoSign, verify as cryptoVerify } from 'node:crypto';
import { join } from 'node:path';
import { connect, nkeyAuthenticator } from 'nats';
import {
  encodePublicIdentity,
  generateIdentity,
  loadIdentity,
  natsUserKey,
  verifyRoomStatement,
} from '@sealbus/crypto';
import { parseStatement } from '@sealbus/protocol';
import { internalNatsSeed } from '@sealbus/membershipd';
import { ControlClient, Sealbus } from '@sealbus/client';
import { StatementChain, authorStatement, natsOf, newRoomKey } from '@sealbus/client/internal';
import { startDaemon } from '@sealbus/testing';
import { median, percentile, table } from './lib.mjs';

const PAYLOAD = new Uint8Array(1024).fill(0x5a);
// A user's derived NATS key, never its sign key.
const seedOf = (id) => new TextEncoder().encode(natsUserKey(id).seed);

async function throughput(label, n, setup) {
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
  if (outcome === 'timeout') throw new Error(`${label}: only ${received}/${n} received`);
  return { label, n, rate: n / secs };
}

/** node:crypto Ed25519 verifications per second of a 1 KiB message on this thread (~1 s). */
function ed25519VerifiesPerSecond() {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const msg = new Uint8Array(1024).fill(7);
  const sig = cryptoSign(null, msg, privateKey);
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < 1_000) {
    for (let i = 0; i < 100; i++) cryptoVerify(null, msg, publicKey, sig);
    n += 100;
  }
  return n / ((performance.now() - t0) / 1000);
}

export async function dataplaneBench({ rounds = 3 } = {}) {
  const figures = {};
  // The set-up puts one user in 1,000 rooms it owns: past the default room quota.
  const d = await startDaemon({
    args: ['--log-level', 'debug', '--max-rooms-per-user', '2000', '--changes-per-minute', '0'],
  });
  try {
    const adminId = await loadIdentity(join(d.dataDir, 'admin.id'));
    const admin = new ControlClient({ urls: [d.httpUrl], identity: adminId });
    const mk = async (handle) => {
      const id = generateIdentity();
      await admin.addUser({ public: encodePublicIdentity(id), handle, role: 'member' });
      return id;
    };
    const [pubId, subId] = [await mk('bench-pub'), await mk('bench-sub')];
    const P = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity: pubId,
    });
    const S = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity: subId,
    });
    const rooms = {};
    for (const [name, sign] of [
      ['signed', true],
      ['unsigned', false],
    ]) {
      const r = await P.createRoom({
        subject: `bench.${name}`,
        policy: { encrypt: true, persist: false, sign },
      });
      await P.invite(r.id, subId.signPubHex, 'reader');
      rooms[name] = r;
    }
    const sdkCase = (room) => async () => {
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
      // Same server, same bytes, no Sealbus: the internal (static nkey) user on both ends.
      const internal = await loadIdentity(join(d.dataDir, 'internal.id'));
      const opts = {
        servers: d.natsUrl,
        authenticator: nkeyAuthenticator(internalNatsSeed(internal)),
      };
      const [pub, sub] = [await connect(opts), await connect(opts)];
      let cb = () => {};
      sub.subscribe('bench.plain', { callback: () => cb() });
      await sub.flush();
      return {
        publish: async () => pub.publish('bench.plain', PAYLOAD),
        onMessage: (f) => (cb = f),
        flush: () => pub.flush(),
        close: async () => {
          await pub.close();
          await sub.close();
        },
      };
    };
    const cases = [
      ['plain NATS pub/sub (same bytes)', 60_000, plainCase],
      ['encrypted, unsigned room', 40_000, sdkCase(rooms.unsigned)],
      ['encrypted + signed room', 15_000, sdkCase(rooms.signed)],
    ];
    const res = new Map(cases.map(([l]) => [l, []]));
    for (let round = 0; round < rounds; round++) {
      for (const [label, n, setup] of cases)
        res.get(label).push((await throughput(label, n, setup)).rate);
    }
    const rows = cases.map(([label]) => ({ label, rate: median(res.get(label)) }));
    const plain = rows[0].rate;
    console.log(`\nend to end, 1 KiB messages, ${rounds} interleaved rounds (medians)`);
    console.log(
      table(rows, [
        ['path', (r) => r.label],
        ['msgs/s', (r) => r.rate.toFixed(0)],
        ['vs plain', (r) => (r.rate / plain).toFixed(3)],
      ])
    );
    // One core's Ed25519 verifications of a 1 KiB message (node:crypto), in
    // this run: what a signed room's receive path is measured against.
    const verifyRate = ed25519VerifiesPerSecond();
    console.log(
      `ratio signed/unsigned: ${(rows[2].rate / rows[1].rate).toFixed(3)}   node:crypto Ed25519 verifies/s (1 KiB, one core): ${verifyRate.toFixed(0)}   signed/verify: ${(rows[2].rate / verifyRate).toFixed(3)}`
    );
    figures['dataplane.e2e_unsigned_over_plain'] = rows[1].rate / plain;
    figures['dataplane.e2e_signed_over_verify'] = rows[2].rate / verifyRate;
    figures['dataplane.e2e_signed_msgs_per_s'] = rows[2].rate;
    await P.close();
    await S.close();

    // 2. connections/s
    const internal = await loadIdentity(join(d.dataDir, 'internal.id'));
    const connRate = async (authenticator, ms = 3_000, conc = 4) => {
      let n = 0;
      const end = performance.now() + ms;
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: conc }, async () => {
          while (performance.now() < end) {
            const nc = await connect({ servers: d.natsUrl, authenticator, reconnect: false });
            await nc.close();
            n++;
          }
        })
      );
      return n / ((performance.now() - t0) / 1000);
    };
    const cr = { callout: [], static: [] };
    for (let round = 0; round < rounds; round++) {
      cr.static.push(await connRate(nkeyAuthenticator(internalNatsSeed(internal))));
      cr.callout.push(await connRate(nkeyAuthenticator(seedOf(pubId))));
    }
    const [cs, cc] = [median(cr.static), median(cr.callout)];
    console.log(`\nconnections/s (connect + close, concurrency 4, ${rounds} rounds, medians)`);
    console.log(
      `static nkey user: ${cs.toFixed(0)}   through the auth callout: ${cc.toFixed(0)}   ratio callout/static: ${(cc / cs).toFixed(3)}`
    );
    figures['dataplane.callout_over_static'] = cc / cs;

    // 3. callout latency, user in 0 vs 1,000 rooms
    const many = await mk('bench-many');
    const owner = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity: pubId,
    });
    const t0 = performance.now();
    const policy = { encrypt: false, persist: false, sign: true };
    for (let i = 0; i < 1000; i++) {
      // Raw calls, with the statements the SDK would sign.
      const id = Buffer.from(crypto.getRandomValues(new Uint8Array(12))).toString('hex');
      const base = {
        room: id,
        subject: `many.r${i}`,
        policy,
        owner: pubId.signPubHex,
        epoch: 0,
        key: null,
      };
      const first = authorStatement(pubId.signSeed, null, {
        ...base,
        members: [[pubId.signPubHex, 'owner']],
      });
      await owner.control.createRoom({ id, subject: base.subject, policy, statement: first });
      const chain = StatementChain.fromStatements(id, [{ seq: 0, ...first }]);
      const statement = authorStatement(pubId.signSeed, chain, {
        ...base,
        members: [...chain.members(), [many.signPubHex, 'reader']],
      });
      await owner.control.addMember(id, { sign_pub: many.signPubHex, role: 'reader', statement });
    }
    console.log(
      `\n(set-up: 1,000 rooms with the user as member in ${((performance.now() - t0) / 1000).toFixed(1)} s)`
    );
    await owner.close();
    const latencies = async (id, n = 200) => {
      const nkey = natsUserKey(id).publicKey;
      const before = d.logs.length;
      for (let i = 0; i < n; i++) {
        const nc = await connect({
          servers: d.natsUrl,
          authenticator: nkeyAuthenticator(seedOf(id)),
          reconnect: false,
        });
        await nc.close();
      }
      await new Promise((r) => setTimeout(r, 200));
      const ms = d.logs
        .slice(before)
        .filter((l) => l.msg === 'callout: allowed' && l.nkey === nkey)
        .map((l) => l.ms)
        .sort((a, b) => a - b);
      return {
        n: ms.length,
        p50: percentile(ms, 50),
        p99: percentile(ms, 99),
        rooms: id === many ? 1000 : 0,
      };
    };
    const lonely = await mk('bench-lonely');
    const lat = [
      await latencies(lonely),
      await latencies(many),
      await latencies(lonely),
      await latencies(many),
    ];
    const agg = (rooms) => {
      const xs = lat.filter((l) => l.rooms === rooms);
      return {
        rooms,
        p50: median(xs.map((x) => x.p50)),
        p99: median(xs.map((x) => x.p99)),
        n: xs.reduce((a, x) => a + x.n, 0),
      };
    };
    const rowsL = [agg(0), agg(1000)];
    figures['dataplane.callout_p99_ms_0_rooms'] = rowsL[0].p99;
    figures['dataplane.callout_p99_ms_1000_rooms'] = rowsL[1].p99;
    console.log('auth callout decision latency (measured in the daemon, per connect)');
    console.log(
      table(rowsL, [
        ['rooms', (r) => r.rooms],
        ['decisions', (r) => r.n],
        ['p50 ms', (r) => r.p50.toFixed(2)],
        ['p99 ms', (r) => r.p99.toFixed(2)],
      ])
    );

    // 4. statements: room open, invite, rekey with 100 members
    const hundred = [];
    for (let i = 0; i < 100; i++) hundred.push(await mk(`bench-m${i}`));
    const O = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity: pubId,
    });
    const big = await O.createRoom({
      subject: 'bench.hundred',
      policy: { encrypt: true, persist: false, sign: true },
    });
    const inviteMs = [];
    for (const m of hundred) {
      const t = performance.now();
      await O.invite(big.id, m.signPubHex, 'writer');
      inviteMs.push(performance.now() - t);
    }
    const rekeyMs = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      await O.rekey(big.id);
      rekeyMs.push(performance.now() - t);
    }
    // Room open as a member sees it: the detail it always read, and now the chain too.
    const M = new ControlClient({ urls: [d.httpUrl], identity: hundred[0] });
    const openDetail = [];
    const openChain = [];
    const verifyOnly = [];
    for (let i = 0; i < 10; i++) {
      let t = performance.now();
      await M.getRoom(big.id);
      await M.myKeys(big.id);
      openDetail.push(performance.now() - t);
      t = performance.now();
      const served = await M.statements(big.id);
      const v0 = performance.now();
      StatementChain.fromStatements(big.id, served.statements);
      verifyOnly.push(performance.now() - v0);
      openChain.push(performance.now() - t);
    }
    // The statement work alone: the owner signing a 100-member statement, the daemon checking it.
    const chainNow = StatementChain.fromStatements(big.id, (await M.statements(big.id)).statements);
    const signMs = [];
    const checkMs = [];
    for (let i = 0; i < 50; i++) {
      let t = performance.now();
      const st = authorStatement(pubId.signSeed, chainNow, {
        room: big.id,
        subject: chainNow.subject,
        policy: chainNow.policy,
        owner: chainNow.owner,
        epoch: chainNow.epoch + 1,
        key: newRoomKey(),
        members: chainNow.members(),
      });
      signMs.push(performance.now() - t);
      t = performance.now();
      parseStatement(st.statement);
      verifyRoomStatement(pubId.signPubHex, st.statement, st.sig);
      checkMs.push(performance.now() - t);
    }
    const chainLen = chainNow.seq + 1;
    console.log(
      `\nroom statements (room of ${chainNow.members().length} members, chain of ${chainLen} statements; medians)`
    );
    console.log(
      table(
        [
          { what: 'open: GET room + keys (before statements)', ms: median(openDetail) },
          { what: `open: GET statements + verify ${chainLen}`, ms: median(openChain) },
          { what: `  of which verifying the chain`, ms: median(verifyOnly) },
          { what: 'invite (whole call)', ms: median(inviteMs) },
          { what: 'rekey, 100 members (whole call)', ms: median(rekeyMs) },
          { what: '  sign a 100-member statement', ms: median(signMs) },
          { what: '  daemon check of it (parse + verify)', ms: median(checkMs) },
        ],
        [
          ['what', (r) => r.what],
          ['ms', (r) => r.ms.toFixed(2)],
        ]
      )
    );
    console.log(
      `ratio chain open / detail open: ${(median(openChain) / median(openDetail)).toFixed(3)}   statement share of a rekey: ${((median(signMs) + median(checkMs)) / median(rekeyMs)).toFixed(3)}`
    );
    figures['dataplane.statement_chain_open_over_detail_open'] =
      median(openChain) / median(openDetail);
    figures['dataplane.rekey_100_members_ms'] = median(rekeyMs);
    M.close();
    await O.close();
    admin.close();
    return { figures };
  } finally {
    await d.dispose();
  }
}
