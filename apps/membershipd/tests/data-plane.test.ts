import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createConnection } from 'node:net';
import type { NatsConnection } from 'nats';
import {
  FrameSealer,
  generateIdentity,
  openFramePayload,
  parseFrame,
  encodePublicIdentity,
  natsUserKey,
  type Identity,
} from '@sealbus/crypto';
import { ControlClient, Sealbus, type RejectedFrame, type RoomMessage } from '@sealbus/client';
import { openRoomKey, natsOf } from '@sealbus/client/internal';
import type { MembershipStore } from '@sealbus/store';
import { startDaemon, waitFor, type TestDaemon } from '@sealbus/testing';
import { adminOf, natsAs, nextPermissionError, nodeStore, publishRefused } from './helpers.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const ENC_SIGNED = { encrypt: true, persist: false, sign: true };

describe('data plane: auth callout, E2E rooms, live revocation', { timeout: 300_000 }, () => {
  let d: TestDaemon;
  let admin: ControlClient;
  let store: MembershipStore;
  let storeNc: NatsConnection;
  let appNc: NatsConnection;
  const clients: Sealbus[] = [];
  const conns: NatsConnection[] = [];

  const user = async (handle: string): Promise<Identity> => {
    const id = generateIdentity();
    await admin.addUser({ public: encodePublicIdentity(id), handle, role: 'member' });
    return id;
  };
  const bus = async (id: Identity): Promise<Sealbus> => {
    const b = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [d.httpUrl],
      identity: id,
    });
    clients.push(b);
    return b;
  };
  const collect = () => {
    const got: RoomMessage[] = [];
    return { got, handler: (m: RoomMessage) => void got.push(m) };
  };

  before(async () => {
    d = await startDaemon();
    admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    ({ store, nc: storeNc, app: appNc } = await nodeStore(d));
  });
  after(async () => {
    for (const c of clients) await c.close().catch(() => {});
    for (const c of conns) await c.close().catch(() => {});
    admin?.close();
    await storeNc?.close();
    await appNc?.close();
    await d?.dispose();
  });

  test('two members round-trip; an allowlisted outsider is refused the subject and cannot decrypt the bytes', async () => {
    const [a, b, c] = [await user('alice'), await user('bob'), await user('carol')];
    const [A, B] = [await bus(a), await bus(b)];
    const room = await A.createRoom({ subject: 'chat.team', policy: ENC_SIGNED });
    await A.invite(room.id, b.signPubHex, 'writer');
    const fromA = collect();
    const fromB = collect();
    await A.subscribe(room.id, fromB.handler);
    await B.subscribe(room.id, fromA.handler);
    await A.publish(room.id, enc('hello bob'));
    await B.publish(room.id, enc('hello alice'));
    await waitFor(() => fromA.got.length >= 2 && fromB.got.length >= 2, {
      timeoutMs: 5_000,
      what: 'messages',
    });
    const seen = fromA.got
      .map((m) => `${dec(m.data)}/${m.sender === a.signPubHex ? 'a' : 'b'}`)
      .sort();
    assert.deepEqual(seen, ['hello alice/b', 'hello bob/a']);
    assert.equal(fromB.got[0]!.epoch, 0);

    // carol: allowlisted, not a member
    const raw: Uint8Array[] = [];
    const spy = await natsAs(d, a);
    conns.push(spy);
    spy.subscribe('chat.team', { callback: (_e, m) => raw.push(m.data) });
    const ncC = await natsAs(d, c);
    conns.push(ncC);
    const refused = new Promise<string>((resolve) => {
      ncC.subscribe('chat.team', { callback: (err) => err && resolve(String(err)) });
    });
    assert.match(await refused, /permissions violation/i);
    await A.publish(room.id, enc('secret'));
    await waitFor(() => raw.length > 0, { what: 'raw frame' });
    const frame = parseFrame(raw[0]!);
    assert.ok(!Buffer.from(raw[0]!).includes(Buffer.from('secret')));
    const carolsGuess = new Uint8Array(32);
    assert.throws(() => openFramePayload(frame, carolsGuess), { code: 'DECRYPT_FAILED' });
    const ctlC = new ControlClient({ urls: [d.httpUrl], identity: c });
    await assert.rejects(ctlC.myKeys(room.id), { status: 403 });
    ctlC.close();
  });

  test('an unknown key is refused at connect; a proof for another nkey is refused; a reader cannot publish', async () => {
    const stranger = generateIdentity();
    await assert.rejects(natsAs(d, stranger), /Authorization Violation/);
    await waitFor(
      () => d.logs.some((l) => l.msg === 'callout: denied' && l.reason === 'unknown key'),
      {
        what: 'the denial and its reason in the log',
      }
    );

    // Claim a registered user's nkey without its private key: raw CONNECT with a bogus signature.
    const victim = await user('victim');
    const port = Number(new URL(d.natsUrl).port);
    const answer = await new Promise<string>((resolve, reject) => {
      const sock = createConnection({ host: '127.0.0.1', port });
      let buf = '';
      sock.on('data', (chunk) => {
        buf += chunk.toString();
        if (buf.startsWith('INFO') && buf.includes('\r\n') && !buf.includes('CONNECT_SENT')) {
          buf += 'CONNECT_SENT';
          const connect = {
            verbose: false,
            pedantic: false,
            nkey: natsUserKey(victim).publicKey,
            sig: Buffer.alloc(64, 1).toString('base64url'),
            protocol: 1,
          };
          sock.write(`CONNECT ${JSON.stringify(connect)}\r\nPING\r\n`);
        } else if (/-ERR|PONG/.test(buf)) {
          sock.destroy();
          resolve(buf);
        }
      });
      sock.on('error', reject);
      setTimeout(() => reject(new Error('no answer')), 5_000);
    });
    assert.match(answer, /-ERR 'Authorization Violation'/);
    await waitFor(
      () =>
        d.logs.some((l) => l.msg === 'callout: denied' && /does not verify/.test(String(l.reason))),
      {
        what: 'denial logged',
      }
    );

    const [o, r] = [await user('owner-r'), await user('reader-r')];
    const O = await bus(o);
    const room = await O.createRoom({ subject: 'news.readonly', policy: ENC_SIGNED });
    await O.invite(room.id, r.signPubHex, 'reader');
    const ncR = await natsAs(d, r);
    conns.push(ncR);
    const violation = nextPermissionError(ncR);
    ncR.publish('news.readonly', enc('not allowed'));
    await violation;
    await publishRefused(d, 'news.readonly');
  });

  test('member of no room: the JWT is not "allow everything"; inboxes are private', async () => {
    const [lonely, other] = [await user('lonely'), await user('other')];
    const nc = await natsAs(d, lonely);
    conns.push(nc);
    const pubViolation = nextPermissionError(nc);
    nc.publish('anything.at.all', enc('x'));
    await pubViolation;
    await publishRefused(d, 'anything.at.all');
    for (const subject of [
      '>',
      'chat.team',
      `_INBOX_${other.signPubHex.slice(0, 32)}.>`,
      '_INBOX.>',
      '$JS.API.>',
      'sealbus.ctl.change',
    ]) {
      const err = await new Promise<string>((resolve) =>
        nc.subscribe(subject, { callback: (e) => e && resolve(String(e)) })
      );
      assert.match(err, /permissions violation/i, subject);
    }
  });

  test('revoke during an open subscription: disconnected within 1 s, reconnect denied', async () => {
    const v = await user('to-revoke');
    const ncV = await natsAs(d, v, { maxReconnectAttempts: 5, reconnectTimeWait: 100 });
    const disconnected = new Promise<number>((resolve) => {
      void (async () => {
        for await (const s of ncV.status()) if (s.type === 'disconnect') return resolve(Date.now());
      })();
    });
    ncV.subscribe(`_INBOX_${v.signPubHex.slice(0, 32)}.r.x`);
    await ncV.flush();
    const t0 = Date.now();
    await admin.revokeUser(v.signPubHex);
    const took = (await disconnected) - t0;
    assert.ok(took < 1_000, `disconnected after ${took} ms`);
    const closedWith = await Promise.race([
      ncV.closed(),
      new Promise((r) => setTimeout(() => r('still open'), 10_000)),
    ]);
    assert.match(
      String(closedWith),
      /Authorization Violation/i,
      'reconnects are denied until the client gives up'
    );
    await assert.rejects(natsAs(d, v), /Authorization Violation/);
  });

  test('the SDK keeps reconnecting through refusals but closes itself once its identity is revoked', async () => {
    const v = await user('sdk-revoked');
    const B = await bus(v);
    const revoked = new Promise<string>((r) => B.once('revoked', r));
    const closed = new Promise<void>((r) => B.once('closed', r));
    const t0 = Date.now();
    await admin.revokeUser(v.signPubHex);
    const code = await Promise.race([
      revoked,
      new Promise<string>((r) => setTimeout(() => r('no revoked event'), 15_000)),
    ]);
    assert.equal(code, 'REVOKED_KEY');
    await closed;
    assert.equal(natsOf(B).isClosed(), true);
    assert.ok(Date.now() - t0 < 15_000);
  });

  test('remove member + rekey: the removed member is cut off and its old keys open nothing new', async () => {
    const [o, m, x] = [await user('owner-rk'), await user('member-rk'), await user('stays-rk')];
    const [O, M, X] = [await bus(o), await bus(m), await bus(x)];
    const room = await O.createRoom({ subject: 'team.rekey', policy: ENC_SIGNED });
    await O.invite(room.id, m.signPubHex);
    await O.invite(room.id, x.signPubHex, 'reader');
    const xs = collect();
    await X.subscribe(room.id, xs.handler);
    await M.subscribe(room.id, () => {});
    const oldKeys = (await M.control.myKeys(room.id)).keys.map((k) => openRoomKey(k.sealed_key, m));
    assert.equal(oldKeys.length, 1);
    const removed = new Promise<void>((r) => M.once('removed', () => r()));
    const kicked = new Promise<number>((r) => M.once('disconnect', () => r(Date.now())));
    const t0 = Date.now();
    const { epoch } = await O.removeMember(room.id, m.signPubHex);
    assert.equal(epoch, 1);
    await Promise.race([removed, new Promise((r) => setTimeout(r, 3_000))]);
    const kickedAfter =
      (await Promise.race([
        kicked,
        new Promise<number>((r) => setTimeout(() => r(Infinity), 3_000)),
      ])) - t0;
    assert.ok(
      kickedAfter < 1_500,
      `the removed member's connection was cut after ${kickedAfter} ms`
    );
    const raw: Uint8Array[] = [];
    const spy = await natsAs(d, o);
    conns.push(spy);
    spy.subscribe('team.rekey', { callback: (_e, msg) => raw.push(msg.data) });
    await spy.flush();
    await waitFor(async () => (await X.control.getRoom(room.id)).epoch === 1, { what: 'epoch 1' });
    await O.publish(room.id, enc('after removal'));
    await waitFor(() => raw.length > 0 && xs.got.some((g) => dec(g.data) === 'after removal'), {
      what: 'new message',
    });
    const f = parseFrame(raw[0]!);
    assert.equal(f.header.epoch, 1);
    for (const k of oldKeys)
      assert.throws(() => openFramePayload(f, k), { code: 'DECRYPT_FAILED' });
    await assert.rejects(M.control.myKeys(room.id), { status: 403 });
    // the removed member's connection lost the room subject
    const ncM = await natsAs(d, m);
    conns.push(ncM);
    const err = await new Promise<string>((resolve) =>
      ncM.subscribe('team.rekey', { callback: (e) => e && resolve(String(e)) })
    );
    assert.match(err, /permissions violation/i);
  });

  test('tampered, replayed, unsigned, malformed and non-member frames are rejected with their reason', async () => {
    const [o, r, outsider] = [
      await user('owner-t'),
      await user('reader-t'),
      await user('outsider-t'),
    ];
    const [O, R] = [await bus(o), await bus(r)];
    const signed = await O.createRoom({ subject: 'tamper.signed', policy: ENC_SIGNED });
    const unsigned = await O.createRoom({
      subject: 'tamper.unsigned',
      policy: { encrypt: true, persist: false, sign: false },
    });
    for (const room of [signed, unsigned]) await O.invite(room.id, r.signPubHex, 'reader');
    const rejected: RejectedFrame[] = [];
    R.on('rejected', (x) => rejected.push(x));
    const good: RoomMessage[] = [];
    for (const room of [signed, unsigned]) await R.subscribe(room.id, (m) => void good.push(m));
    const key0 = openRoomKey((await O.control.myKeys(signed.id)).keys[0]!.sealed_key, o);
    const keyU = openRoomKey((await O.control.myKeys(unsigned.id)).keys[0]!.sealed_key, o);
    const ncO = await natsAs(d, o);
    conns.push(ncO);
    const sealer = new FrameSealer(signed.id, o.signSeed);
    const flip = (b: Uint8Array, i: number) => Uint8Array.from(b, (v, j) => (j === i ? v ^ 1 : v));
    const frame1 = sealer.seal(enc('one'), { epoch: 0, key: key0, sign: true });
    const cases: Array<[string, string, Uint8Array]> = [
      [
        'tamper.signed',
        'BAD_SIGNATURE',
        flip(sealer.seal(enc('x'), { epoch: 0, key: key0, sign: true }), 80),
      ],
      [
        'tamper.signed',
        'BAD_SIGNATURE',
        flip(sealer.seal(enc('x'), { epoch: 0, key: key0, sign: true }), 72),
      ],
      [
        'tamper.signed',
        'BAD_SIGNATURE',
        (() => {
          const f = sealer.seal(enc('x'), { epoch: 0, key: key0, sign: true });
          return flip(f, f.length - 5);
        })(),
      ],
      [
        'tamper.signed',
        'POLICY_MISMATCH',
        sealer.seal(enc('x'), { epoch: 0, key: key0, sign: false }),
      ],
      ['tamper.signed', 'MALFORMED', enc('not a frame at all')],
      [
        'tamper.signed',
        'NOT_A_MEMBER',
        new FrameSealer(signed.id, outsider.signSeed).seal(enc('x'), {
          epoch: 0,
          key: key0,
          sign: true,
        }),
      ],
      [
        'tamper.signed',
        'UNKNOWN_EPOCH',
        sealer.seal(enc('x'), { epoch: 7, key: key0, sign: true }),
      ],
      [
        'tamper.unsigned',
        'DECRYPT_FAILED',
        flip(
          new FrameSealer(unsigned.id, o.signSeed).seal(enc('x'), {
            epoch: 0,
            key: keyU,
            sign: false,
          }),
          80
        ),
      ],
      [
        'tamper.unsigned',
        'WRONG_ROOM',
        sealer.seal(enc('x'), { epoch: 0, key: key0, sign: false }),
      ],
    ];
    ncO.publish('tamper.signed', frame1);
    await waitFor(() => good.length === 1, { what: 'the genuine frame' });
    ncO.publish('tamper.signed', frame1); // replay
    for (const [subject, , bytes] of cases) ncO.publish(subject, bytes);
    await ncO.flush();
    await waitFor(() => rejected.length >= cases.length + 1, {
      timeoutMs: 10_000,
      what: 'all rejections',
    });
    assert.deepEqual(
      rejected.map((x) => x.code).sort(),
      ['REPLAYED', ...cases.map(([, code]) => code)].sort()
    );
    assert.equal(good.length, 1, 'only the genuine frame was delivered');
    assert.equal(dec(good[0]!.data), 'one');
  });

  test('an unencrypted room still carries the header and the signature', async () => {
    const [o, r] = [await user('owner-plain'), await user('reader-plain')];
    const [O, R] = [await bus(o), await bus(r)];
    const room = await O.createRoom({
      subject: 'plain.signed',
      policy: { encrypt: false, persist: false, sign: true },
    });
    await O.invite(room.id, r.signPubHex, 'reader');
    const got = collect();
    await R.subscribe(room.id, got.handler);
    const raw: Uint8Array[] = [];
    const spy = await natsAs(d, o);
    conns.push(spy);
    spy.subscribe('plain.signed', { callback: (_e, m) => raw.push(m.data) });
    await spy.flush();
    await O.publish(room.id, enc('in the clear, but signed'));
    await waitFor(() => got.got.length === 1 && raw.length === 1, { what: 'delivery' });
    const f = parseFrame(raw[0]!);
    assert.deepEqual(
      [f.header.encrypted, f.header.signed, f.header.sender],
      [false, true, o.signPubHex]
    );
    assert.equal(dec(got.got[0]!.data), 'in the clear, but signed');
  });

  test('the buckets hold sealed boxes only: no plaintext room key anywhere', async () => {
    const o = await user('owner-kv');
    const O = await bus(o);
    const room = await O.createRoom({ subject: 'kv.check', policy: ENC_SIGNED });
    await O.invite(room.id, (await user('invitee-kv')).signPubHex);
    await O.rekey(room.id);
    const keys = (await O.control.myKeys(room.id)).keys.map((k) =>
      Buffer.from(openRoomKey(k.sealed_key, o))
    );
    assert.equal(keys.length, 2);
    const jsm = await storeNc.jetstreamManager();
    const needles = keys.flatMap((k) => [
      k,
      Buffer.from(k.toString('hex')),
      Buffer.from(k.toString('base64')),
    ]);
    let scanned = 0;
    for await (const si of jsm.streams.list()) {
      for (let seq = si.state.first_seq; seq <= si.state.last_seq && si.state.messages > 0; seq++) {
        const m = await jsm.streams.getMessage(si.config.name, { seq }).catch(() => null);
        if (!m) continue;
        scanned++;
        const data = Buffer.from(m.data);
        for (const n of needles)
          assert.ok(!data.includes(n), `plaintext key in ${si.config.name}#${seq}`);
      }
    }
    assert.ok(scanned > 10, `scanned ${scanned} stored messages`);
    const sealedRows = await store.rooms.keysOf(room.id, o.signPubHex);
    for (const row of sealedRows) assert.equal(Buffer.from(row.sealed_key, 'base64').length, 80);
  });

  test('persisted room: history before joining is read; a member has no JetStream grant and cannot write its subject', async () => {
    const [o, r] = [await user('owner-p'), await user('reader-p')];
    const [O, R] = [await bus(o), await bus(r)];
    const room = await O.createRoom({
      subject: 'log.persisted',
      policy: { encrypt: true, persist: true, sign: true },
    });
    for (let i = 1; i <= 3; i++) await O.publish(room.id, enc(`before ${i}`));
    await O.invite(room.id, r.signPubHex, 'reader');
    const got = collect();
    const sub = await R.subscribe(room.id, got.handler, { from: 'start' });
    await O.publish(room.id, enc('after'));
    await waitFor(() => got.got.length === 4, { timeoutMs: 10_000, what: 'history + new' });
    assert.deepEqual(
      got.got.map((m) => dec(m.data)),
      ['before 1', 'before 2', 'before 3', 'after']
    );
    assert.deepEqual(
      got.got.map((m) => m.streamSeq),
      [1, 2, 3, 4]
    );
    await sub.stop();

    // 'new' skips history; resuming continues where the durable stopped
    await O.publish(room.id, enc('while away'));
    const fresh = collect();
    const sub2 = await R.subscribe(room.id, fresh.handler, { from: 'new' });
    await O.publish(room.id, enc('newest'));
    await waitFor(() => fresh.got.length === 1, { what: 'new only' });
    assert.equal(dec(fresh.got[0]!.data), 'newest');
    await sub2.stop();

    const ncR = await natsAs(d, r);
    conns.push(ncR);
    const stream = `ROOM_${room.id}`;
    const durable = `m_${r.signPubHex.slice(0, 32)}`;
    for (const api of [
      'log.persisted',
      `$JS.API.CONSUMER.INFO.${stream}.${durable}`,
      `$JS.API.CONSUMER.MSG.NEXT.${stream}.${durable}`,
      `$JS.ACK.${stream}.${durable}.1.1.1.1.0`,
      `$JS.API.STREAM.PURGE.${stream}`,
      `$JS.API.STREAM.MSG.DELETE.${stream}`,
      `$JS.API.STREAM.DELETE.${stream}`,
      `$JS.API.CONSUMER.CREATE.${stream}.evil`,
    ]) {
      const violation = nextPermissionError(ncR);
      ncR.publish(api, enc(JSON.stringify({ seq: 1 })));
      await violation;
      await publishRefused(d, api);
    }
    const jsm = await appNc.jetstreamManager();
    await assert.rejects(jsm.streams.purge(stream), /purge/i, 'even the daemon cannot purge');
    assert.equal((await jsm.streams.info(stream)).state.messages, 6, 'history intact');
  });
});
