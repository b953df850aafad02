// Room blobs over HTTP, against a real daemon: who may store, fetch and
// delete; the Content-Digest checked while the body streams in (nothing
// stored when it lies); the size limit and the room quota; idempotent
// re-upload; room deletion; the audit log (hash and size only); the other
// routes' 64 KiB body limit untouched.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHash, randomBytes } from 'node:crypto';
import { requestSigner, signRequest, type Identity } from '@sealbus/crypto';
import { ControlClient, type Sealbus } from '@sealbus/client';
import { startDaemon, type TestDaemon } from '@sealbus/testing';
import type { MembershipStore } from '@sealbus/store';
import type { NatsConnection } from 'nats';
import { blobUploadExtraMs } from '../src/http/bounds.js';
import { adminOf, busOf, enrol, nodeStore, rawRequest, type RawResult } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const ENC = { encrypt: true, persist: false, sign: true } as const;
const sha256hex = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A signed blob upload: `digestOf` lets a test sign the digest of other bytes. */
function upload(
  d: TestDaemon,
  id: Identity,
  room: string,
  body: Uint8Array,
  o: { digestOf?: Uint8Array; contentType?: string; chunked?: boolean } = {}
): Promise<RawResult> {
  const url = `${d.httpUrl}/rooms/${room}/blobs`;
  const h = signRequest(requestSigner(id), {
    method: 'POST',
    url: new URL(url),
    body: o.digestOf ?? body,
    contentType: o.contentType ?? 'application/octet-stream',
  });
  if (!o.chunked) return rawRequest(d.httpUrl, 'POST', `/rooms/${room}/blobs`, h, body);
  // Transfer-Encoding: chunked, no Content-Length: the limits apply while streaming.
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', headers: h, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (p) => parts.push(p));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          json: JSON.parse(Buffer.concat(parts).toString() || 'null'),
          headers: res.headers,
        })
      );
    });
    req.on('error', reject);
    void (async () => {
      for (let i = 0; i < body.length; i += 64 * KiB) {
        if (req.destroyed) return;
        if (!req.write(body.subarray(i, i + 64 * KiB)))
          await new Promise((r) => req.once('drain', r));
      }
      req.end();
    })();
  });
}

function signedGet(d: TestDaemon, id: Identity, method: string, path: string) {
  const h = signRequest(requestSigner(id), { method, url: new URL(path, d.httpUrl) });
  return new Promise<{ status: number; body: Buffer; headers: http.IncomingHttpHeaders }>(
    (resolve, reject) => {
      const req = http.request(
        new URL(path, d.httpUrl),
        { method, headers: h, agent: false },
        (res) => {
          const parts: Buffer[] = [];
          res.on('data', (p) => parts.push(p));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              body: Buffer.concat(parts),
              headers: res.headers,
            })
          );
        }
      );
      req.on('error', reject);
      req.end();
    }
  );
}

describe('room blobs over HTTP', { timeout: 180_000 }, () => {
  let d: TestDaemon;
  let admin: ControlClient;
  const closers: Array<() => Promise<unknown> | void> = [];
  let owner: { id: Identity; bus: Sealbus };
  let writer: Identity;
  let reader: Identity;
  let outsider: Identity;
  let node: { store: MembershipStore; nc: NatsConnection; app: NatsConnection };
  let room: string;

  /** Messages in the room's blob stream (0 when there is none). */
  async function storedMessages(roomId: string): Promise<number> {
    const jsm = await node.app.jetstreamManager();
    try {
      return (await jsm.streams.info(`OBJ_sealbus_blobs_${roomId}`)).state.messages;
    } catch {
      return 0;
    }
  }

  before(async () => {
    d = await startDaemon({
      args: ['--blob-max-bytes', '1MiB', '--room-blob-bytes', '3MiB', '--log-level', 'info'],
    });
    admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    const o = await enrol(admin, d, 'owner');
    owner = { id: o.id, bus: await busOf(d, o.id, closers) };
    writer = (await enrol(admin, d, 'writer')).id;
    reader = (await enrol(admin, d, 'reader')).id;
    outsider = (await enrol(admin, d, 'outsider')).id;
    room = (await owner.bus.createRoom({ subject: 'blobs.http', policy: ENC })).id;
    await owner.bus.invite(room, writer.signPubHex, 'writer');
    await owner.bus.invite(room, reader.signPubHex, 'reader');
    node = await nodeStore(d);
  });

  after(async () => {
    for (const c of closers.reverse()) await c();
    admin?.close();
    await node?.nc.close();
    await node?.app.close();
    await d?.dispose();
  });

  test('a writer stores a blob; members fetch it (GET and HEAD); a re-upload is the same blob', async () => {
    const bytes = randomBytes(300 * KiB);
    const hash = sha256hex(bytes);
    const put = await upload(d, writer, room, bytes);
    assert.equal(put.status, 201, JSON.stringify(put.json));
    assert.deepEqual(put.json, { hash, size: bytes.length });

    const got = await signedGet(d, reader, 'GET', `/rooms/${room}/blobs/${hash}`);
    assert.equal(got.status, 200);
    assert.equal(got.headers['content-type'], 'application/octet-stream');
    assert.equal(got.headers['content-length'], String(bytes.length));
    assert.ok(got.body.equals(bytes), 'the bytes come back as stored');

    const head = await signedGet(d, outsider, 'HEAD', `/rooms/${room}/blobs/${hash}`);
    assert.equal(head.status, 403, 'an outsider does not learn whether it exists');
    const head2 = await signedGet(d, reader, 'HEAD', `/rooms/${room}/blobs/${hash}`);
    assert.equal(head2.status, 200);
    assert.equal(head2.headers['content-length'], String(bytes.length));
    assert.equal(head2.body.length, 0);

    const before = await storedMessages(room);
    const again = await upload(d, owner.id, room, bytes);
    assert.ok(again.status === 200 || again.status === 201);
    assert.deepEqual(again.json, { hash, size: bytes.length });
    assert.equal(await storedMessages(room), before, 'no second copy');
    assert.equal(await node.store.blobs.usage(room), bytes.length);

    const del = await rawRequest(
      d.httpUrl,
      'DELETE',
      `/rooms/${room}/blobs/${hash}`,
      signRequest(requestSigner(owner.id), {
        method: 'DELETE',
        url: new URL(`${d.httpUrl}/rooms/${room}/blobs/${hash}`),
      })
    );
    assert.equal(del.status, 200, JSON.stringify(del.json));
    assert.deepEqual(del.json, { hash, size: bytes.length, deleted: true });
    assert.equal((await signedGet(d, reader, 'GET', `/rooms/${room}/blobs/${hash}`)).status, 404);
  });

  test('outsiders, readers, writers and removed members get what their role allows', async () => {
    const bytes = randomBytes(2 * KiB);
    const hash = sha256hex(bytes);
    const was = await storedMessages(room);
    const a = await upload(d, outsider, room, bytes);
    assert.equal(a.status, 403);
    assert.equal(a.json.error.code, 'NOT_A_MEMBER');
    const r = await upload(d, reader, room, bytes);
    assert.equal(r.status, 403);
    assert.equal(r.json.error.code, 'NOT_WRITER');
    assert.equal(await storedMessages(room), was, 'nothing stored by either');

    assert.equal((await upload(d, writer, room, bytes)).status, 201);
    const get = await signedGet(d, outsider, 'GET', `/rooms/${room}/blobs/${hash}`);
    assert.equal(get.status, 403);
    assert.equal(JSON.parse(get.body.toString()).error.code, 'NOT_A_MEMBER');

    const delUrl = `${d.httpUrl}/rooms/${room}/blobs/${hash}`;
    const del = await rawRequest(
      d.httpUrl,
      'DELETE',
      `/rooms/${room}/blobs/${hash}`,
      signRequest(requestSigner(writer), { method: 'DELETE', url: new URL(delUrl) })
    );
    assert.equal(del.status, 403);
    assert.equal(del.json.error.code, 'NOT_OWNER');

    // A member of another room asks this room for the blob.
    const other = (await owner.bus.createRoom({ subject: 'blobs.other', policy: ENC })).id;
    await owner.bus.invite(other, outsider.signPubHex, 'writer');
    assert.equal(
      (await signedGet(d, outsider, 'GET', `/rooms/${other}/blobs/${hash}`)).status,
      404,
      'blobs are per room: the hash of another room is unknown here'
    );
    assert.equal((await signedGet(d, outsider, 'GET', `/rooms/${room}/blobs/${hash}`)).status, 403);

    // Bad hashes and path tricks.
    for (const bad of [hash.toUpperCase(), hash.slice(1), `..%2F${hash}`, `${hash}%00`]) {
      const res = await signedGet(d, reader, 'GET', `/rooms/${room}/blobs/${bad}`);
      assert.ok([400, 404].includes(res.status), `${bad}: ${res.status}`);
      assert.notEqual(res.status, 200);
    }
    const badHash = await signedGet(d, reader, 'GET', `/rooms/${room}/blobs/${hash.toUpperCase()}`);
    assert.equal(badHash.status, 400);
    const unknown = await signedGet(d, reader, 'GET', `/rooms/${room}/blobs/${'0'.repeat(64)}`);
    assert.equal(unknown.status, 404);

    // Removed: the reader loses access at once.
    await owner.bus.removeMember(room, reader.signPubHex);
    assert.equal((await signedGet(d, reader, 'GET', `/rooms/${room}/blobs/${hash}`)).status, 403);
    await owner.bus.invite(room, reader.signPubHex, 'reader');
  });

  test('a Content-Digest that does not match the body is refused and nothing is stored', async () => {
    const r2 = (await owner.bus.createRoom({ subject: 'blobs.digest', policy: ENC })).id;
    const bytes = randomBytes(700 * KiB);
    for (const chunked of [false, true]) {
      const lie = await upload(d, owner.id, r2, bytes, { digestOf: randomBytes(16), chunked });
      assert.equal(lie.status, 400, JSON.stringify(lie.json));
      assert.equal(lie.json.error.code, 'DIGEST_MISMATCH');
    }
    // The claimed digest names bytes that were never sent: the name must not be taken.
    const wrongType = await upload(d, owner.id, r2, bytes, { contentType: 'application/json' });
    assert.equal(wrongType.status, 415);
    assert.equal(await storedMessages(r2), 0, 'no chunk, no metadata left behind');
    assert.equal(await node.store.blobs.usage(r2), 0);
  });

  test('over --blob-max-bytes is 413 and over --room-blob-bytes is 507 ROOM_BLOB_QUOTA, nothing half-written', async () => {
    const r3 = (await owner.bus.createRoom({ subject: 'blobs.limits', policy: ENC })).id;
    for (const chunked of [false, true]) {
      const big = await upload(d, owner.id, r3, randomBytes(MiB + 1), { chunked }).catch(
        (e: Error) => ({ status: -1, json: e.message }) as RawResult
      );
      assert.equal(big.status, 413, `chunked=${chunked}: ${JSON.stringify(big.json)}`);
      assert.equal(big.json.error.code, 'BLOB_TOO_LARGE');
    }
    assert.equal(await storedMessages(r3), 0);
    // Exactly the limit is fine; three of them fill the 3 MiB quota.
    for (let i = 0; i < 3; i++)
      assert.equal((await upload(d, owner.id, r3, randomBytes(MiB))).status, 201);
    const before = await storedMessages(r3);
    for (const chunked of [false, true]) {
      const over = await upload(d, owner.id, r3, randomBytes(1), { chunked });
      assert.equal(over.status, 507, JSON.stringify(over.json));
      assert.equal(over.json.error.code, 'ROOM_BLOB_QUOTA');
    }
    assert.equal(await storedMessages(r3), before, 'nothing written past the quota');
    assert.equal(await node.store.blobs.usage(r3), 3 * MiB);
  });

  test('deleting a room deletes its blobs; uploads and deletions are audited with hash and size only', async () => {
    const r4 = (await owner.bus.createRoom({ subject: 'blobs.gone', policy: ENC })).id;
    const bytes = randomBytes(10 * KiB);
    const hash = sha256hex(bytes);
    assert.equal((await upload(d, owner.id, r4, bytes)).status, 201);
    assert.ok((await storedMessages(r4)) > 0);
    await owner.bus.deleteRoom(r4);
    assert.equal(await storedMessages(r4), 0);
    const jsm = await node.app.jetstreamManager();
    await assert.rejects(jsm.streams.info(`OBJ_sealbus_blobs_${r4}`), 'the store itself is gone');

    const { records } = await node.store.audit.query({ action: 'blob.*' });
    const puts = records.filter((r) => r.action === 'blob.put' && r.outcome === 'ok');
    const mine = puts.find((r) => r.target === r4);
    assert.ok(mine, 'the upload is on the record');
    assert.deepEqual(mine.detail, { hash, size: bytes.length });
    for (const r of records)
      assert.deepEqual(
        Object.keys(r.detail ?? {}).filter((k) => !['hash', 'size', 'reason', 'code'].includes(k)),
        [],
        `${r.action} ${r.outcome} carries nothing but hash and size`
      );
    assert.ok(records.some((r) => r.action === 'blob.delete' && r.outcome === 'ok'));
    const del = (await node.store.audit.query({ action: 'room.delete' })).records.find(
      (r) => r.target === r4 && r.outcome === 'ok'
    );
    assert.equal(del?.detail?.blobs, 1);
  });

  test('the other routes keep their 64 KiB body limit', async () => {
    const body = JSON.stringify({ seq: 1, pad: 'x'.repeat(65 * KiB) });
    const url = `${d.httpUrl}/rooms/${room}/cursor`;
    const h = signRequest(requestSigner(owner.id), {
      method: 'POST',
      url: new URL(url),
      body: new TextEncoder().encode(body),
      contentType: 'application/json',
    });
    const res = await rawRequest(d.httpUrl, 'POST', `/rooms/${room}/cursor`, h, body);
    assert.equal(res.status, 413);
    assert.equal(res.json.error.code, 'BODY_TOO_LARGE');
  });

  test('/metrics-facing counters and the OpenAPI document know the blob routes', async () => {
    const doc = (await (await fetch(`${d.httpUrl}/openapi.json`)).json()) as any;
    const post = doc.paths['/rooms/{id}/blobs'].post;
    assert.ok(post.requestBody.content['application/octet-stream']);
    assert.ok(doc.paths['/rooms/{id}/blobs/{hash}'].get);
    assert.ok(doc.paths['/rooms/{id}/blobs/{hash}'].delete);
  });
});

describe('blobs cannot fill the control state', { timeout: 120_000 }, () => {
  test('blobs count against account APP (--app-max-bytes): past it uploads are refused and signed changes still succeed', async () => {
    const closers: Array<() => Promise<void>> = [];
    // Rooms' history and blobs together get 3 MiB; each room may hold 8 MiB.
    const d = await startDaemon({
      // No owner share (its default, a tenth of the account, would stop the upload first).
      args: [
        '--app-max-bytes',
        '3MiB',
        '--blob-max-bytes',
        '1MiB',
        '--room-blob-bytes',
        '8MiB',
        '--owner-blob-bytes',
        '8MiB',
      ],
    });
    const admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    try {
      const o = await enrol(admin, d, 'filler');
      const bus = await busOf(d, o.id, closers);
      const room = (await bus.createRoom({ subject: 'blobs.fill', policy: ENC })).id;
      const node = await nodeStore(d);
      closers.push(async () => {
        await node.nc.close();
        await node.app.close();
      });
      /** Objects (metadata records) in the room's store. */
      const storedObjects = async () => {
        const jsm = await node.app.jetstreamManager();
        const info = await jsm.streams.info(`OBJ_sealbus_blobs_${room}`, {
          subjects_filter: '$O.>',
        });
        return Object.keys(info.state.subjects ?? {}).filter((k) => k.includes('.M.')).length;
      };
      let stored = 0;
      let refused: RawResult | Error | undefined;
      for (let i = 0; i < 8 && !refused; i++) {
        // A refusal mid-body closes the connection: the client may see the
        // reset before the answer.
        const r = await upload(d, o.id, room, randomBytes(900 * KiB)).catch((e: Error) => e);
        if (!(r instanceof Error) && r.status === 201) stored++;
        else refused = r;
      }
      assert.ok(refused, `all ${stored} uploads stored: the account cap did not hold`);
      assert.ok(stored >= 1 && stored <= 3, `${stored} stored before the cap`);
      // The answer, when the client read it before the connection closed.
      if (!(refused instanceof Error))
        assert.deepEqual([refused.status, refused.json?.error?.code], [507, 'STORAGE_FULL']);
      assert.equal(await storedObjects(), stored, 'nothing of the refused upload kept');
      // The control state is elsewhere: a signed change still goes through.
      const id = (await enrol(admin, d, 'after-the-cap')).id;
      assert.equal(
        (await admin.listUsers()).some((u) => u.sign_pub === id.signPubHex),
        true
      );
      console.log(
        `# blobs under --app-max-bytes 3MiB: ${stored} of 900 KiB stored, then ${refused instanceof Error ? refused.message : `${refused.status} ${refused.json?.error?.code}`}`
      );
    } finally {
      for (const c of closers.reverse()) await c();
      admin.close();
      await d.dispose();
    }
  });
});

describe('slow blob uploads: time in proportion to size', { timeout: 180_000 }, () => {
  test('a 16 MiB upload at ~500 KiB/s (32 s, past the 30 s request timeout) is stored; a stalled one is cut within its budget; unit: the budget', async () => {
    // The budget: 30 s plus the declared length at 1 MiB/s; other routes none.
    const req = (method: string, url: string, len?: string) => ({
      method,
      url,
      headers: len === undefined ? {} : { 'content-length': len },
    });
    const max = 64 * MiB;
    assert.equal(blobUploadExtraMs(req('POST', '/rooms/ab/blobs', String(10 * MiB)), max), 10_000);
    assert.equal(
      blobUploadExtraMs(req('POST', '/rooms/ab/blobs'), max),
      64_000,
      'chunked: the max'
    );
    assert.equal(blobUploadExtraMs(req('POST', '/rooms/ab/blobs', String(1e12)), max), 64_000);
    assert.equal(blobUploadExtraMs(req('PUT', '/me/keys', '100000'), max), 0);
    assert.equal(blobUploadExtraMs(req('GET', '/rooms/ab/blobs/x', '5'), max), 0);
    assert.equal(blobUploadExtraMs(req('POST', '/rooms/ab/blobs/../../me', '5'), max), 0);

    await using d = await startDaemon({ args: ['--log-level', 'warn'] });
    const admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    const closers: Array<() => Promise<unknown> | void> = [];
    try {
      const { id } = await enrol(admin, d, 'slow-uploader');
      const room = (
        await (await busOf(d, id, closers)).createRoom({ subject: 'slow.blob', policy: ENC })
      ).id;
      /** Sends `body` in 64 KiB pieces, `pause` ms apart, stopping after `stopAt` bytes. */
      const trickle = (body: Uint8Array, pause: number, stopAt = body.length) =>
        new Promise<{ status: number; ms: number }>((done) => {
          const t0 = Date.now();
          const url = `${d.httpUrl}/rooms/${room}/blobs`;
          const h = signRequest(requestSigner(id), {
            method: 'POST',
            url: new URL(url),
            body,
            contentType: 'application/octet-stream',
          });
          const headers = { ...h, 'content-length': String(body.length) };
          const r = http.request(url, { method: 'POST', headers, agent: false }, (res) => {
            res.resume();
            res.on('end', () => done({ status: res.statusCode ?? 0, ms: Date.now() - t0 }));
          });
          r.on('error', () => done({ status: 0, ms: Date.now() - t0 }));
          r.on('close', () => setTimeout(() => done({ status: 0, ms: Date.now() - t0 }), 50));
          void (async () => {
            for (let i = 0; i < stopAt && !r.destroyed; i += 64 * KiB) {
              r.write(body.subarray(i, Math.min(i + 64 * KiB, stopAt)));
              await new Promise((w) => setTimeout(w, pause));
            }
            if (stopAt === body.length) r.end();
          })();
        });
      const [slow, stalled] = await Promise.all([
        // 256 pieces of 64 KiB, 123 ms apart: ~32 s for 16 MiB (budget: the
        // 20 s left of the request timeout after headers, plus 16 s).
        trickle(randomBytes(16 * MiB), 123),
        // 2 MiB declared, 64 KiB sent, then nothing: cut at 22 s (20 + 2).
        trickle(randomBytes(2 * MiB), 10, 64 * KiB),
      ]);
      console.log(
        `# slow 16 MiB upload: ${slow.status} after ${slow.ms} ms; stalled: cut after ${stalled.ms} ms`
      );
      assert.ok(
        slow.ms > 30_000,
        `the slow upload took only ${slow.ms} ms: not past the old limit`
      );
      assert.equal(slow.status, 201);
      assert.equal(stalled.status, 0, 'the stalled upload was answered');
      assert.ok(
        stalled.ms >= 21_000 && stalled.ms < 30_000,
        `stalled upload cut after ${stalled.ms} ms`
      );
    } finally {
      for (const c of closers.reverse()) await c();
      admin.close();
    }
  });
});
