// Signatures checked on other threads: every frame is opened once, in the
// order it came, with the verdict on its own bytes; a worker that dies or
// falls behind hands its frames back to be checked inline.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { FrameSealer, frameSignatureValid, generateIdentity, parseFrame } from '@sealbus/crypto';
import { OrderedFrames, VerifyPool } from './verifier.js';

const ROOM = 'a1b2c3d4e5f6a1b2c3d4e5f6';
const key = new Uint8Array(randomBytes(32));
const alice = generateIdentity();
const enc = (s: string) => new TextEncoder().encode(s);
const FRAME = new FrameSealer(ROOM, alice.signSeed).seal(enc('one'), { epoch: 0, key, sign: true });
const flip = (b: Uint8Array, i: number) => Uint8Array.from(b, (v, j) => (j === i ? v ^ 1 : v));

interface Seen {
  bytes: Uint8Array;
  sig: boolean | undefined;
}

function collector() {
  const seen: Seen[] = [];
  let wake = () => {};
  return {
    seen,
    open: (bytes: Uint8Array, _reply: string | undefined, sig: boolean | undefined) => {
      seen.push({ bytes, sig });
      wake();
    },
    until: (n: number, ms = 10_000) =>
      new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`${seen.length}/${n} opened`)), ms);
        wake = () => {
          if (seen.length >= n) {
            clearTimeout(t);
            resolve();
          }
        };
        wake();
      }),
  };
}

/** Good frames, forgeries, unsigned and malformed ones, interleaved; and what each should get. */
function mixed(n: number): Array<{ bytes: Uint8Array; expect: boolean | undefined }> {
  const s = new FrameSealer(ROOM, alice.signSeed);
  const out: Array<{ bytes: Uint8Array; expect: boolean | undefined }> = [];
  for (let i = 0; i < n; i++) {
    const good = s.seal(enc(`m${i}`), { epoch: 0, key, sign: true });
    switch (i % 7) {
      case 3: // payload byte changed
        out.push({ bytes: flip(good, 80), expect: false });
        break;
      case 4: // signature byte changed
        out.push({ bytes: flip(good, good.length - 1), expect: false });
        break;
      case 5: // unsigned: checked inline (the room's policy decides)
        out.push({ bytes: s.seal(enc('u'), { epoch: 0, key, sign: false }), expect: undefined });
        break;
      case 6: // not laid out as a frame: inline, where parseFrame refuses it
        out.push({ bytes: good.subarray(0, good.length - 1), expect: undefined });
        break;
      default:
        out.push({ bytes: good, expect: true });
    }
  }
  return out;
}

describe('verification threads', { timeout: 60_000 }, () => {
  const saved = VerifyPool.threads;
  after(async () => {
    await VerifyPool.reset();
    VerifyPool.threads = saved;
  });

  test('frames are opened in arrival order, each with the verdict on its own signature', async () => {
    await VerifyPool.reset();
    VerifyPool.threads = 1;
    const pool = VerifyPool.shared();
    assert.ok(pool, 'a pool with one thread');
    assert.equal(pool.size, 1);
    const frames = mixed(700);
    const c = collector();
    const q = new OrderedFrames(pool, c.open);
    // In bursts, as a socket delivers them, with turns of the event loop between.
    for (let i = 0; i < frames.length; i++) {
      q.push(frames[i]!.bytes, undefined);
      if (i % 50 === 49) await new Promise((r) => setImmediate(r));
    }
    await c.until(frames.length);
    assert.equal(c.seen.length, frames.length, 'each frame once');
    for (let i = 0; i < frames.length; i++) {
      assert.equal(c.seen[i]!.bytes, frames[i]!.bytes, `frame ${i} in its place`);
      const sig = c.seen[i]!.sig;
      assert.equal(sig, frames[i]!.expect, `frame ${i}: verdict`);
      if (sig !== undefined) assert.equal(sig, frameSignatureValid(parseFrame(frames[i]!.bytes)));
    }
    assert.ok(
      c.seen.some((x) => x.sig === false) && c.seen.some((x) => x.sig === true),
      'the worker judged both ways'
    );
    assert.equal(q.waiting, 0);
  });

  test('two rooms share the pool; neither waits for nor reorders the other', async () => {
    const pool = VerifyPool.shared()!;
    const [a, b] = [collector(), collector()];
    const [qa, qb] = [new OrderedFrames(pool, a.open), new OrderedFrames(pool, b.open)];
    const [fa, fb] = [mixed(200), mixed(200)];
    for (let i = 0; i < 200; i++) {
      qa.push(fa[i]!.bytes, undefined);
      qb.push(fb[i]!.bytes, undefined);
    }
    await Promise.all([a.until(200), b.until(200)]);
    assert.deepEqual(
      a.seen.map((x) => x.bytes),
      fa.map((x) => x.bytes)
    );
    assert.deepEqual(
      b.seen.map((x) => x.bytes),
      fb.map((x) => x.bytes)
    );
  });

  test('more than the workers may hold: the rest is verified inline, still in order', async () => {
    const pool = VerifyPool.shared()!;
    const s = new FrameSealer(ROOM, alice.signSeed);
    const frames = Array.from({ length: 3000 }, (_, i) =>
      s.seal(enc(`m${i}`), { epoch: 0, key, sign: true })
    );
    const c = collector();
    const q = new OrderedFrames(pool, c.open);
    // One burst, no turn of the event loop: nothing can come back meanwhile.
    for (const f of frames) q.push(f, undefined);
    await c.until(frames.length);
    assert.deepEqual(
      c.seen.map((x) => x.bytes),
      frames
    );
    const inline = c.seen.filter((x) => x.sig === undefined).length;
    assert.ok(inline > 0 && inline < frames.length, `${inline} of ${frames.length} inline`);
    assert.ok(c.seen.every((x) => x.sig !== false));
  });

  test('a worker that dies hands its frames back: all opened, in order, checked inline', async () => {
    const pool = VerifyPool.shared()!;
    const frames = mixed(300);
    const c = collector();
    const q = new OrderedFrames(pool, c.open);
    for (const f of frames) q.push(f.bytes, undefined);
    // Let the batch go out, then end the pool's thread under it.
    await new Promise((r) => setImmediate(r));
    await VerifyPool.reset();
    await c.until(frames.length);
    assert.deepEqual(
      c.seen.map((x) => x.bytes),
      frames.map((x) => x.bytes)
    );
    for (let i = 0; i < frames.length; i++)
      if (c.seen[i]!.sig !== undefined) assert.equal(c.seen[i]!.sig, frames[i]!.expect);
    assert.ok(
      c.seen.some((x, i) => x.sig === undefined && frames[i]!.expect !== undefined),
      'frames the worker held came back to be checked inline'
    );
    assert.equal(pool.size, 0);
    // A pool without threads takes nothing: frames open at once, inline.
    const d = collector();
    const q2 = new OrderedFrames(pool, d.open);
    q2.push(frames[0]!.bytes, undefined);
    assert.deepEqual(d.seen, [{ bytes: frames[0]!.bytes, sig: undefined }]);
  });

  test('no pool (no core to spare): every frame is opened at once, inline', async () => {
    await VerifyPool.reset();
    VerifyPool.threads = 0;
    assert.equal(VerifyPool.shared(), null);
    const c = collector();
    const q = new OrderedFrames(VerifyPool.shared(), c.open);
    const frames = mixed(20);
    for (const f of frames) q.push(f.bytes, undefined);
    assert.equal(c.seen.length, frames.length, 'synchronously');
    assert.ok(c.seen.every((x) => x.sig === undefined));
  });

  test('a stopped room opens nothing more', async () => {
    await VerifyPool.reset();
    VerifyPool.threads = 1;
    const c = collector();
    const q = new OrderedFrames(VerifyPool.shared(), c.open);
    for (const f of mixed(50)) q.push(f.bytes, undefined);
    q.close();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(c.seen.length, 0);
  });

  // Run as `node --input-type=module -e`: flags of the process that a
  // worker's entry file refuses must not reach it.
  test('the pool never keeps a process alive: one that verified through it exits by itself', async () => {
    const verifier = new URL('./verifier.js', import.meta.url).href;
    const script = `
      import { OrderedFrames, VerifyPool } from ${JSON.stringify(verifier)};
      VerifyPool.threads = 1;
      const frame = Uint8Array.from(${JSON.stringify([...FRAME])});
      new OrderedFrames(VerifyPool.shared(), (_b, _r, sig) => console.log('verdict', sig)).push(frame, undefined);
    `;
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--input-type=module', '-e', script],
      { timeout: 15_000 }
    );
    assert.equal(stdout.trim(), 'verdict true');
  });
});

test('a worker that neither answers nor exits: its frames are verified inline after the answer timeout, and it takes no more', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sealbus-hung-'));
  const saved = {
    url: VerifyPool.workerUrl,
    ms: VerifyPool.answerTimeoutMs,
    threads: VerifyPool.threads,
  };
  try {
    const hung = join(dir, 'hung.mjs');
    writeFileSync(
      hung,
      "import { parentPort } from 'node:worker_threads';\nparentPort.on('message', () => {});\n"
    );
    VerifyPool.workerUrl = pathToFileURL(hung);
    VerifyPool.answerTimeoutMs = 300;
    VerifyPool.threads = 1;
    await VerifyPool.reset();
    const pool = VerifyPool.shared();
    assert.ok(pool && pool.size === 1);
    const c = collector();
    const of = new OrderedFrames(pool, c.open);
    of.push(FRAME, undefined);
    of.push(flip(FRAME, FRAME.length - 1), undefined);
    assert.equal(of.waiting, 2, 'sent to the worker');
    await c.until(2, 5_000);
    // Inline: no verdict handed over, so the room checks each signature itself.
    assert.deepEqual(
      c.seen.map((x) => x.sig),
      [undefined, undefined]
    );
    assert.equal(pool.size, 0, 'the hung worker takes no more');
  } finally {
    VerifyPool.workerUrl = saved.url;
    VerifyPool.answerTimeoutMs = saved.ms;
    VerifyPool.threads = saved.threads;
    await VerifyPool.reset();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('frames waiting behind a verdict are bounded: past maxWaiting they are dropped and counted, the rest opened in order', () => {
  const saved = OrderedFrames.maxWaiting;
  OrderedFrames.maxWaiting = 10;
  try {
    // A pool that takes every frame and never answers (a stalled verdict).
    const pending: Array<{ verdict: number }> = [];
    const stalled = {
      submit: (e: { verdict: number }) => {
        pending.push(e);
        return true;
      },
    } as unknown as VerifyPool;
    const c = collector();
    const of = new OrderedFrames(stalled, c.open);
    for (let i = 0; i < 15; i++) of.push(FRAME, undefined);
    assert.equal(of.waiting, 10);
    assert.equal(of.dropped, 5);
    assert.equal(c.seen.length, 0);
  } finally {
    OrderedFrames.maxWaiting = saved;
  }
});
