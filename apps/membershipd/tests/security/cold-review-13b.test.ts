// Cold review 13b: room blobs in backups (archive.ts, snapshot.ts), the
// per-owner blob quota (--owner-blob-bytes, 507 OWNER_BLOB_QUOTA) and the
// per-request upload time budget (bounds.ts: blobUploadExtraMs, the timer in
// capConnections, Node's requestTimeout now 0). Every test asserts the SECURE
// behaviour: a failing test is an attack that worked; those are marked
// `todo: 'broken: …'` so the suite stays green while they are open.
//
// Real daemons on loopback, real archives on disk, bounded loops; every
// socket and process a test opens is closed in its `finally`.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import * as tar from 'tar-stream';
import type { NatsConnection } from 'nats';
import { ControlClient } from '@sealbus/client';
import { requestSigner, signRequest, type Identity } from '@sealbus/crypto';
import { runMembershipd, startDaemon, tempDir, type TestDaemon } from '@sealbus/testing';
import { sha256 } from '../../src/backup/archive.js';
import { dumpStore } from '../../src/backup/snapshot.js';
import { adminOf, busOf, enrol, nodeStore, rawRequest, type RawResult } from '../helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const ENC = { encrypt: true, persist: false, sign: true } as const;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha256hex = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A signed blob upload whose headers go out at once; `send()` writes the body later. */
function heldUpload(
  d: TestDaemon,
  id: Identity,
  room: string,
  body: Uint8Array
): { send: () => Promise<RawResult | Error>; abort: () => void } {
  const url = `${d.httpUrl}/rooms/${room}/blobs`;
  const h = signRequest(requestSigner(id), {
    method: 'POST',
    url: new URL(url),
    body,
    contentType: 'application/octet-stream',
  });
  let req: http.ClientRequest;
  const answered = new Promise<RawResult | Error>((resolve) => {
    req = http.request(url, { method: 'POST', headers: h, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (p) => parts.push(p));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString();
        let json: unknown = text;
        try {
          json = JSON.parse(text);
        } catch {
          /* not JSON */
        }
        resolve({ status: res.statusCode ?? 0, json, headers: res.headers });
      });
    });
    req.on('error', (e) => resolve(e));
    req.flushHeaders();
  });
  return {
    send: () => {
      req.end(body);
      return answered;
    },
    abort: () => req.destroy(),
  };
}

/** A raw socket to the daemon; `closed` resolves with the time the server closed it. */
function rawSocket(
  d: TestDaemon,
  localAddress: string
): Promise<{ s: net.Socket; closed: Promise<number>; data: () => string }> {
  return new Promise((resolve, reject) => {
    let text = '';
    const s = net.connect({ host: '127.0.0.1', port: d.httpPort, localAddress }, () =>
      resolve({ s, closed, data: () => text })
    );
    const closed = new Promise<number>((r) => s.once('close', () => r(Date.now())));
    s.on('data', (b) => (text += b.toString('latin1')));
    s.on('error', () => {});
    s.once('error', reject);
  });
}

/** Resolves with the first of: the socket closed (its time), or `ms` passed (null). */
function closedWithin(p: Promise<number>, ms: number): Promise<number | null> {
  return Promise.race([p, sleep(ms).then(() => null)]);
}

describe('owner blob quota (--owner-blob-bytes 1MiB)', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let admin: ControlClient;
  const closers: Array<() => Promise<unknown> | void> = [];
  let owner: Identity;
  let room: string;

  before(async () => {
    d = await startDaemon({
      args: [
        '--blob-max-bytes',
        '1MiB',
        '--room-blob-bytes',
        '64MiB',
        '--owner-blob-bytes',
        '1MiB',
        '--log-level',
        'warn',
      ],
    });
    admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    owner = (await enrol(admin, d, 'quota-owner')).id;
    const bus = await busOf(d, owner, closers);
    room = (await bus.createRoom({ subject: 'cr13b.quota', policy: ENC })).id;
  });
  after(async () => {
    for (const c of closers.reverse()) await c();
    admin?.close();
    await d?.dispose();
  });

  test(
    'uploads whose headers all arrived before any body cannot together store more than the owner quota (declared lengths, bodies sent one after another)',
    {},
    async () => {
      const held = Array.from({ length: 4 }, () => {
        const body = randomBytes(800 * KiB);
        return { body, up: heldUpload(d, owner, room, body) };
      });
      try {
        // Every handler is past the quota check (nothing is stored or in flight yet).
        await sleep(1_500);
        const statuses: number[] = [];
        for (const h of held) {
          const r = await h.up.send();
          statuses.push(r instanceof Error ? -1 : r.status);
        }
        // What the room really holds now, asked blob by blob.
        let stored = 0;
        for (const h of held) {
          const hh = signRequest(requestSigner(owner), {
            method: 'HEAD',
            url: new URL(`${d.httpUrl}/rooms/${room}/blobs/${sha256hex(h.body)}`),
          });
          const r = await rawRequest(
            d.httpUrl,
            'HEAD',
            `/rooms/${room}/blobs/${sha256hex(h.body)}`,
            hh
          );
          if (r.status === 200) stored += Number(r.headers['content-length']);
        }
        console.log(
          `# held uploads: ${statuses.join(', ')}; ${stored} bytes stored under a ${MiB}-byte owner quota`
        );
        assert.ok(stored <= MiB, `${stored} bytes stored for one owner, quota ${MiB}`);
      } finally {
        for (const h of held) h.up.abort();
      }
    }
  );
});

describe(
  'upload time budget: sockets are held no longer than before',
  { timeout: 120_000, concurrency: true },
  () => {
    let d: TestDaemon;
    before(async () => {
      d = await startDaemon({ args: ['--log-level', 'warn'] });
    });
    after(async () => {
      await d?.dispose();
    });

    // The probes below run side by side (each from its own address).
    const t0 = Date.now();
    const room = randomBytes(12).toString('hex');

    test(
      'a request whose headers arrive slowly still has to be whole within requestTimeoutMs of its first byte (30 s, as /healthz says)',
      {},
      async () => {
        const a = await rawSocket(d, '127.0.0.24');
        const start = Date.now();
        let drip: NodeJS.Timeout | undefined;
        try {
          a.s.write('PUT /me/keys HTTP/1.1\r\nHost: x\r\n');
          // Headers a line every 1.5 s, done well inside the 10 s headers timeout.
          for (let i = 0; i < 4 && !a.s.destroyed; i++) {
            await sleep(1_500);
            a.s.write(`X-Slow-${i}: y\r\n`);
          }
          await sleep(1_000);
          const headersDone = Date.now() - start;
          a.s.write('Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{');
          drip = setInterval(() => a.s.write(' '), 500);
          const closed = await closedWithin(a.closed, 45_000);
          const held = closed === null ? Infinity : closed - start;
          console.log(
            `# headers done after ${headersDone} ms, then a trickled body: socket held ${held} ms from its first byte`
          );
          assert.ok(headersDone >= 6_500, 'the headers were not slow');
          assert.ok(held <= 32_000, `a socket held ${held} ms (request timeout 30 s)`);
        } finally {
          clearInterval(drip);
          a.s.destroy();
        }
      }
    );

    test('URL spellings that get the blob budget reach no other route that reads a body: answered and closed at once', async () => {
      const targets = [
        // unsigned upload: 401 before a byte of the body is read
        `/rooms/${room}/blobs`,
        `/rooms/${room}/blobs?x=1`,
        `http://x/rooms/${room}/blobs`,
        // dot segments and fragments the budget's pattern matches, routed elsewhere
        '/rooms/../blobs',
        '/rooms/%2e%2e/blobs',
        '/rooms/./blobs',
        `/rooms/${room}#/blobs`,
      ];
      const socks = await Promise.all(targets.map((_, i) => rawSocket(d, `127.0.0.${40 + i}`)));
      try {
        socks.forEach((x, i) =>
          x.s.write(
            `POST ${targets[i]} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n`
          )
        );
        const drip = setInterval(() => socks.forEach((x) => x.s.write('1\r\na\r\n')), 500);
        let closed: Array<number | null>;
        try {
          closed = await Promise.all(socks.map((x) => closedWithin(x.closed, 8_000)));
        } finally {
          clearInterval(drip);
        }
        const report = targets.map(
          (t, i) =>
            `${t} -> ${socks[i]!.data().split('\r\n')[0] || '(nothing)'} ${closed[i] === null ? 'OPEN' : `closed ${closed[i]! - t0} ms`}`
        );
        console.log(`# ${report.join('; ')}`);
        assert.ok(
          closed.every((c) => c !== null),
          report.join('\n')
        );
      } finally {
        for (const x of socks) x.s.destroy();
      }
    });
  }
);

/** One signed upload, body sent with the headers. */
function put(d: TestDaemon, id: Identity, room: string, body: Uint8Array) {
  return heldUpload(d, id, room, body).send();
}

/**
 * `nc` with one hook: the first read of a blob chunk (STREAM.MSG.GET by
 * subject on an object store's chunks) waits for `before()` first. It widens
 * a window a real backup has anyway: between reading a blob's metadata and
 * reading its chunks.
 */
function onFirstChunkRead(nc: NatsConnection, before: () => Promise<void>): NatsConnection {
  let fired = false;
  const bind = (t: object, p: string | symbol) => {
    const v = Reflect.get(t, p, t) as unknown;
    return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(t) : v;
  };
  return new Proxy(nc, {
    get(target, prop) {
      if (prop !== 'jetstreamManager') return bind(target, prop);
      return async (...args: Parameters<NatsConnection['jetstreamManager']>) => {
        const jsm = await target.jetstreamManager(...args);
        const streams = new Proxy(jsm.streams, {
          get(t, p) {
            if (p !== 'getMessage') return bind(t, p);
            return async (stream: string, q: { next_by_subj?: string }) => {
              if (!fired && /\.C\./.test(q?.next_by_subj ?? '')) {
                fired = true;
                await before();
              }
              return t.getMessage(stream, q as never);
            };
          },
        });
        return new Proxy(jsm, { get: (t, p) => (p === 'streams' ? streams : bind(t, p)) });
      };
    },
  });
}

describe('backups with blobs', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let admin: ControlClient;
  const closers: Array<() => Promise<unknown> | void> = [];
  let owner: Identity;
  let room: string;
  const bodies = [randomBytes(300 * KiB), randomBytes(300 * KiB), randomBytes(300 * KiB)];

  before(async () => {
    d = await startDaemon({ args: ['--log-level', 'warn'] });
    admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    owner = (await enrol(admin, d, 'backup-owner')).id;
    const bus = await busOf(d, owner, closers);
    room = (await bus.createRoom({ subject: 'cr13b.backup', policy: ENC })).id;
    for (const b of bodies) {
      const r = await put(d, owner, room, b);
      assert.ok(
        !(r instanceof Error) && r.status === 201,
        String(r instanceof Error ? r : r.status)
      );
    }
  });
  after(async () => {
    for (const c of closers.reverse()) await c();
    admin?.close();
    await d?.dispose();
  });

  test(
    'a live backup survives a room owner deleting a blob while the backup reads it (it is left out, as one deleted since the listing is)',
    {},
    async () => {
      const node = await nodeStore(d);
      try {
        const first = bodies.map((b) => sha256hex(b)).sort()[0]!;
        let deleted = 0;
        const app = onFirstChunkRead(node.app, async () => {
          const path = `/rooms/${room}/blobs/${first}`;
          const h = signRequest(requestSigner(owner), {
            method: 'DELETE',
            url: new URL(path, d.httpUrl),
          });
          deleted = (await rawRequest(d.httpUrl, 'DELETE', path, h)).status;
        });
        let error: unknown;
        const sections = await dumpStore({ control: node.nc, app }, undefined, {
          blobs: true,
        }).catch((e: unknown) => {
          error = e;
          return [];
        });
        console.log(
          `# blob deleted mid-read (DELETE ${deleted}): backup ${error ? `failed: ${(error as Error).message}` : 'completed'}`
        );
        assert.equal(deleted, 200);
        assert.equal(error, undefined, `the backup failed: ${String(error)}`);
        const blobs = sections.find((s) => s.kind === 'blobs');
        assert.equal(blobs?.records.length, 2);
      } finally {
        await node.nc.close();
        await node.app.close();
      }
    }
  );

  test(
    'a doctored plaintext archive of ~660 KB (one section of 48 MiB of short lines) is refused by `backup inspect`, not a heap exhausted',
    {},
    async () => {
      await using dir = await tempDir('sealbus-cr13b-');
      const good = join(dir.path, 'good.tar.gz');
      const bad = join(dir.path, 'bad.tar.gz');
      const r = await runMembershipd(['backup', '--data', d.dataDir, '--out', good]);
      assert.equal(r.code, 0, r.stderr);
      // The attacker's edit: one kv section replaced, checksums recomputed.
      const files = new Map<string, Buffer>();
      await new Promise<void>((resolve, reject) => {
        const x = tar.extract();
        x.on('entry', (h, s, next) => {
          const parts: Buffer[] = [];
          s.on('data', (c: unknown) => parts.push(c as Buffer));
          s.on('end', () => {
            files.set(h.name, Buffer.concat(parts));
            next();
          });
        });
        x.on('finish', resolve);
        x.on('error', reject);
        void readFile(good).then((b) => x.end(gunzipSync(b)));
      });
      const manifest = JSON.parse(files.get('manifest.json')!.toString('utf8')) as {
        sections: Array<{ file: string; kind: string; bytes: number; sha256: string }>;
      };
      const victim = manifest.sections.find((s) => s.kind === 'kv')!;
      const body = Buffer.alloc(48 * MiB, '{}\n');
      files.set(victim.file, body);
      victim.bytes = body.length;
      victim.sha256 = sha256(body);
      files.set('manifest.json', Buffer.from(JSON.stringify(manifest, null, 2) + '\n'));
      const pack = tar.pack();
      const chunks: Buffer[] = [];
      const done = (async () => {
        for await (const c of pack as unknown as AsyncIterable<Buffer>) chunks.push(c);
      })();
      for (const [name, b] of files)
        await new Promise<void>((ok, no) =>
          pack.entry({ name, size: b.length, mode: 0o600 }, b, (e) => (e ? no(e) : ok()))
        );
      pack.finalize();
      await done;
      const gz = gzipSync(Buffer.concat(chunks), { level: 9 });
      await writeFile(bad, gz, { mode: 0o600 });
      // The same heap for both: the genuine archive is inspected fine.
      const env = { NODE_OPTIONS: '--max-old-space-size=512' };
      const ok = await runMembershipd(['backup', 'inspect', good], { env });
      assert.equal(ok.code, 0, ok.stderr);
      const t = Date.now();
      const res = await runMembershipd(['backup', 'inspect', bad], { env, timeoutMs: 60_000 });
      console.log(
        `# ${gz.length}-byte archive: inspect exit ${res.code} ${res.signal ?? ''} after ${Date.now() - t} ms: ${res.stderr.split('\n').filter(Boolean).slice(0, 2).join(' | ').slice(0, 300)}`
      );
      assert.equal(res.code, 1, res.stderr.slice(0, 500));
      assert.match(res.stderr, /not a valid record|records, the manifest says/);
    }
  );
});
