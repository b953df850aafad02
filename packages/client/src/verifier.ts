import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/**
 * Signature checks of signed room frames on other cores.
 *
 * An Ed25519 verification costs more than everything else a received frame
 * costs together; on a machine with cores to spare, a pool of worker
 * threads (verify-worker.ts) checks the signatures while the client's thread
 * goes on. Only the verdict comes back: every other check of the frame
 * (room, policy, sender, epoch, key, replay window) and every event stays
 * where it was, and frames are opened strictly in the order they arrived
 * (OrderedFrames), whichever thread verified them.
 *
 * When the workers fall behind (more than `VerifyPool.maxInFlight` frames
 * or MAX_IN_FLIGHT_BYTES out), the next frames are verified on the client's
 * thread instead: both threads verify, and what is waiting stays bounded.
 * A worker that fails hands its frames back to be verified inline.
 */

/** Verdicts: not back yet; bad; good; verify on this thread (not sent, or not decided there). */
export const SIG_PENDING = -1;
export const SIG_BAD = 0;
export const SIG_OK = 1;
export const SIG_INLINE = 2;

const MAX_IN_FLIGHT_BYTES = 8 * 1024 * 1024;
const HEADER = 78;
const SIGNATURE = 64;

interface Entry {
  bytes: Uint8Array;
  reply: string | undefined;
  verdict: number;
  owner: OrderedFrames;
}

/** Whether a frame is laid out as a signed one (what a worker can check); the rest is parseFrame's. */
function signedLayout(b: Uint8Array): boolean {
  if (b.length < HEADER + SIGNATURE || (b[1]! & 2) === 0) return false;
  const bodyLen = ((b[74]! << 24) | (b[75]! << 16) | (b[76]! << 8) | b[77]!) >>> 0;
  return HEADER + bodyLen + SIGNATURE === b.length;
}

interface PoolWorker {
  w: Worker;
  /** Batches sent and not answered. */
  batches: Set<number>;
  frames: number;
}

export class VerifyPool {
  readonly #workers: PoolWorker[] = [];
  #batch: Entry[] = [];
  #batchBytes = 0;
  #nextId = 1;
  readonly #sent = new Map<number, { entries: Entry[]; bytes: number; worker: PoolWorker }>();
  #inFlight = 0;
  #inFlightBytes = 0;

  private constructor(threads: number) {
    const url = VerifyPool.workerUrl;
    for (let i = 0; i < threads; i++) {
      // Its own flags only: the process's (--input-type, loaders) are not its.
      const w = new Worker(url, { execArgv: [] });
      const pw: PoolWorker = { w, batches: new Set(), frames: 0 };
      w.on('message', (m: { id: number; verdicts: Uint8Array }) =>
        this.#answered(m.id, m.verdicts)
      );
      const lost = () => this.#lost(pw);
      w.on('error', lost);
      w.on('exit', lost);
      // Idle, never what keeps a process alive; busy, like any pending
      // callback (see #flush). After the listeners: adding one refs it again.
      w.unref();
      this.#workers.push(pw);
    }
  }

  /** The worker's script (tests point it elsewhere). */
  static workerUrl = new URL('./verify-worker.js', import.meta.url);
  /** Verifying threads: set (0 to verify every frame inline) before the first signed frame. */
  static threads = Math.min(Math.max(availableParallelism() - 1, 0), 4);
  /** Frames out to the workers at most; the next ones are verified inline. */
  static maxInFlight = 1024;
  /** A batch not answered within this is verified inline and its worker ended. */
  static answerTimeoutMs = 5_000;
  static #shared: VerifyPool | null | undefined;

  /** The process's pool; null when there is no core to spare or no worker could start. */
  static shared(): VerifyPool | null {
    if (VerifyPool.#shared === undefined) {
      try {
        VerifyPool.#shared = VerifyPool.threads > 0 ? new VerifyPool(VerifyPool.threads) : null;
      } catch {
        VerifyPool.#shared = null;
      }
    }
    return VerifyPool.#shared;
  }

  /** Ends the process's pool (the next shared() makes one with `threads`). Tests. */
  static async reset(): Promise<void> {
    const p = VerifyPool.#shared;
    VerifyPool.#shared = undefined;
    if (p) await Promise.all(p.#workers.map((x) => x.w.terminate()));
  }

  /** Threads alive now. */
  get size(): number {
    return this.#workers.length;
  }

  /** Takes a frame to verify; false when full or without workers (verify it inline). */
  submit(e: Entry): boolean {
    if (
      this.#workers.length === 0 ||
      this.#inFlight >= VerifyPool.maxInFlight ||
      this.#inFlightBytes + e.bytes.length > MAX_IN_FLIGHT_BYTES
    )
      return false;
    if (this.#batch.length === 0) queueMicrotask(() => this.#flush());
    this.#batch.push(e);
    this.#batchBytes += 4 + e.bytes.length;
    this.#inFlight++;
    this.#inFlightBytes += e.bytes.length;
    return true;
  }

  /** Sends what arrived in this turn of the event loop as one batch, to the least busy worker. */
  #flush(): void {
    const entries = this.#batch;
    if (entries.length === 0) return;
    const size = this.#batchBytes;
    this.#batch = [];
    this.#batchBytes = 0;
    let pw = this.#workers[0];
    for (const x of this.#workers) if (pw && x.frames < pw.frames) pw = x;
    if (!pw) {
      this.#giveBack(entries, size - 4 * entries.length);
      return;
    }
    const buf = Buffer.allocUnsafeSlow(4 + size);
    buf.writeUInt32BE(entries.length, 0);
    let at = 4;
    for (const e of entries) {
      buf.writeUInt32BE(e.bytes.length, at);
      buf.set(e.bytes, at + 4);
      at += 4 + e.bytes.length;
    }
    const id = this.#nextId++;
    this.#sent.set(id, { entries, bytes: size - 4 * entries.length, worker: pw });
    pw.batches.add(id);
    if (pw.batches.size === 1) pw.w.ref();
    pw.frames += entries.length;
    const ab = buf.buffer as ArrayBuffer;
    pw.w.postMessage({ id, buf: ab }, [ab]);
    // A worker that neither answers nor exits must not stall its rooms: its
    // frames are verified inline, and it takes no more.
    setTimeout(() => {
      if (!this.#sent.has(id)) return;
      this.#lost(pw);
      void pw.w.terminate();
    }, VerifyPool.answerTimeoutMs).unref();
  }

  #answered(id: number, verdicts: Uint8Array): void {
    const sent = this.#sent.get(id);
    if (!sent) return;
    this.#sent.delete(id);
    sent.worker.batches.delete(id);
    if (sent.worker.batches.size === 0) sent.worker.w.unref();
    sent.worker.frames -= sent.entries.length;
    this.#inFlight -= sent.entries.length;
    this.#inFlightBytes -= sent.bytes;
    const owners = new Set<OrderedFrames>();
    sent.entries.forEach((e, i) => {
      const v = verdicts[i];
      e.verdict = v === SIG_OK || v === SIG_BAD ? v : SIG_INLINE;
      owners.add(e.owner);
    });
    for (const o of owners) o.drain();
  }

  /** A worker failed or exited: its frames are verified inline, and it takes no more. */
  #lost(pw: PoolWorker): void {
    const i = this.#workers.indexOf(pw);
    if (i < 0) return;
    this.#workers.splice(i, 1);
    for (const id of pw.batches) {
      const sent = this.#sent.get(id);
      if (!sent) continue;
      this.#sent.delete(id);
      this.#giveBack(sent.entries, sent.bytes);
    }
    pw.batches.clear();
  }

  #giveBack(entries: Entry[], bytes: number): void {
    this.#inFlight -= entries.length;
    this.#inFlightBytes -= bytes;
    const owners = new Set<OrderedFrames>();
    for (const e of entries) {
      e.verdict = SIG_INLINE;
      owners.add(e.owner);
    }
    for (const o of owners) o.drain();
  }
}

/**
 * One room's received frames, opened in arrival order. `open` gets each
 * frame with the verdict on its signature when a worker checked it (true or
 * false), or undefined when the frame is to be checked inline (unsigned, not
 * laid out as signed, no worker free). Without a pool, or with nothing
 * waiting, a frame is opened at once.
 */
export class OrderedFrames {
  readonly #pool: VerifyPool | null;
  readonly #open: (bytes: Uint8Array, reply: string | undefined, sig: boolean | undefined) => void;
  #q: Array<Entry | undefined> = [];
  #head = 0;
  #closed = false;

  constructor(
    pool: VerifyPool | null,
    open: (bytes: Uint8Array, reply: string | undefined, sig: boolean | undefined) => void
  ) {
    this.#pool = pool;
    this.#open = open;
  }

  /** Frames that may wait for the head's verdict; the next are dropped. */
  static maxWaiting = 16_384;

  /** Frames waiting (tests). */
  get waiting(): number {
    return this.#q.length - this.#head;
  }

  /** Frames dropped because too many waited (a sender flooding faster than verdicts come back). */
  dropped = 0;

  push(bytes: Uint8Array, reply: string | undefined): void {
    if (this.#closed) return;
    // Bounded: while the head waits for its verdict (at most the answer
    // timeout), at most this many frames wait behind it; the next are
    // dropped, as a slow consumer's are (and counted).
    if (this.#q.length - this.#head >= OrderedFrames.maxWaiting) {
      this.dropped++;
      return;
    }
    const toWorker = this.#pool !== null && signedLayout(bytes);
    if (!toWorker && this.#head === this.#q.length) {
      this.#open(bytes, reply, undefined);
      return;
    }
    const e: Entry = { bytes, reply, verdict: SIG_PENDING, owner: this };
    if (!toWorker || !this.#pool!.submit(e)) e.verdict = SIG_INLINE;
    this.#q.push(e);
    if (e.verdict !== SIG_PENDING) this.drain();
  }

  /** Opens every frame at the head whose verdict is in. */
  drain(): void {
    const q = this.#q;
    while (!this.#closed && this.#head < q.length && q[this.#head]!.verdict !== SIG_PENDING) {
      const e = q[this.#head]!;
      q[this.#head++] = undefined;
      this.#open(e.bytes, e.reply, e.verdict === SIG_INLINE ? undefined : e.verdict === SIG_OK);
    }
    if (this.#head === q.length) {
      q.length = 0;
      this.#head = 0;
    } else if (this.#head >= 1024) {
      this.#q = q.slice(this.#head);
      this.#head = 0;
    }
  }

  /** Stops: frames still waiting are dropped (their subscription ended). */
  close(): void {
    this.#closed = true;
    this.#q = [];
    this.#head = 0;
  }
}
