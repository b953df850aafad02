import { randomBytes } from 'node:crypto';
import { loadIdentity, Sealbus, type RoomMessage } from '@sealbus/client';

export interface CheckOptions {
  identityFile: string;
  natsSeeds: string[];
  ctrlSeeds: string[];
  ca?: Buffer;
  /** Accept plaintext URLs to hosts that are not loopback. */
  allowInsecure?: boolean;
  mode: 'golden' | 'loop';
  messages: number;
  durationMs: number;
  intervalMs: number;
  persist: boolean;
  keepRoom: boolean;
  /** How long to wait for stragglers after the last publish. */
  graceMs: number;
  log: (line: string) => void;
  /** Loop mode: stop publishing when this aborts (then wait for stragglers and report). */
  stop?: AbortSignal;
}

export interface CheckResult {
  mode: 'golden' | 'loop';
  room: string;
  subject: string;
  persist: boolean;
  sent: number;
  received: number;
  lost: number[];
  duplicates: number;
  rejected: number;
  failovers: Array<{ at_ms: number; to: string | null }>;
  longest_gap_ms: number;
  /**
   * Every pause in receipts longer than max(1 s, 5 intervals): when it
   * ended (ms since the start) and how long it was. A failover shows here.
   */
  gaps: Array<{ at_ms: number; ms: number }>;
  ok: boolean;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * Creates a fresh room, publishes counters through the SDK and checks that
 * every one comes back decrypted and verified. `golden` publishes N and
 * waits for N; `loop` publishes one per interval for a duration, reporting
 * every tick and every failover, and is meant to run while nodes die.
 */
export async function runCheck(o: CheckOptions): Promise<CheckResult> {
  const identity = await loadIdentity(o.identityFile);
  const bus = await Sealbus.connect({
    natsServers: o.natsSeeds,
    controlUrls: o.ctrlSeeds,
    identity,
    name: 'clientcheck',
    ...(o.ca ? { ca: o.ca } : {}),
    ...(o.allowInsecure ? { allowInsecure: true } : {}),
  });
  const t0 = Date.now();
  const failovers: CheckResult['failovers'] = [];
  let rejected = 0;
  bus.on('reconnect', () => {
    failovers.push({ at_ms: Date.now() - t0, to: bus.attachedServer });
    o.log(`failover: reconnected to ${bus.attachedServer ?? '?'} at +${Date.now() - t0} ms`);
  });
  bus.on('disconnect', (s) => o.log(`disconnected from ${s} at +${Date.now() - t0} ms`));
  bus.on('rejected', (r) => {
    rejected++;
    o.log(`rejected frame: ${r.code} ${r.reason}`);
  });
  bus.on('error', (e) => o.log(`error: ${e.message}`));

  const subject = `clientcheck.${randomBytes(6).toString('hex')}`;
  const room = await bus.createRoom({
    subject,
    policy: { encrypt: true, persist: o.persist, sign: true },
  });
  o.log(
    `room ${room.id} on ${subject} (persist=${o.persist}), attached to ${bus.attachedServer ?? '?'}`
  );

  const received = new Set<number>();
  let duplicates = 0;
  let lastReceipt = 0;
  let longestGap = 0;
  const gaps: CheckResult['gaps'] = [];
  const gapFloor = Math.max(1_000, 5 * o.intervalMs);
  let waiter: (() => void) | undefined;
  const onMessage = (m: RoomMessage) => {
    let n: number;
    try {
      n = (JSON.parse(dec.decode(m.data)) as { n: number }).n;
    } catch {
      return;
    }
    const now = Date.now();
    if (lastReceipt) {
      longestGap = Math.max(longestGap, now - lastReceipt);
      if (now - lastReceipt > gapFloor) {
        gaps.push({ at_ms: now - t0, ms: now - lastReceipt });
        o.log(`gap: ${now - lastReceipt} ms without a message, ended at +${now - t0} ms`);
      }
    }
    lastReceipt = now;
    if (received.has(n)) duplicates++;
    else received.add(n);
    waiter?.();
  };
  const sub = await bus.subscribe(room.id, onMessage, o.persist ? { from: 'start' } : {});

  let sent = 0;
  const publish = async (n: number, deadline: number): Promise<boolean> => {
    const payload = enc.encode(JSON.stringify({ n, t: Date.now() }));
    for (;;) {
      try {
        await bus.publish(room.id, payload);
        return true;
      } catch (err) {
        // Persisted rooms: no ack means not stored yet; retry the same counter.
        if (!o.persist || Date.now() > deadline || o.stop?.aborted) {
          o.log(`publish ${n} failed: ${(err as Error).message}`);
          return false;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };

  try {
    if (o.mode === 'golden') {
      for (let n = 1; n <= o.messages; n++) if (await publish(n, Date.now() + 30_000)) sent++;
    } else {
      const end = t0 + o.durationMs;
      let n = 0;
      let lastTick = 0;
      while (Date.now() < end && !o.stop?.aborted) {
        const next = Date.now() + o.intervalMs;
        n++;
        if (await publish(n, end + 10_000)) sent++;
        if (Date.now() - lastTick >= 1_000) {
          lastTick = Date.now();
          o.log(`tick sent=${sent} received=${received.size} node=${bus.attachedServer ?? '-'}`);
        }
        await new Promise((r) => setTimeout(r, Math.max(0, next - Date.now())));
      }
    }
    // Wait for the stragglers (bounded).
    const deadline = Date.now() + o.graceMs;
    while (received.size < sent && Date.now() < deadline) {
      await new Promise<void>((r) => {
        waiter = r;
        setTimeout(r, 200);
      });
    }
  } finally {
    await sub.stop().catch(() => {});
  }
  const lost: number[] = [];
  for (let n = 1; n <= sent; n++) if (!received.has(n)) lost.push(n);
  const result: CheckResult = {
    mode: o.mode,
    room: room.id,
    subject,
    persist: o.persist,
    sent,
    received: received.size,
    lost,
    duplicates,
    rejected,
    failovers,
    longest_gap_ms: longestGap,
    gaps,
    ok:
      received.size > 0 &&
      (o.mode === 'golden'
        ? lost.length === 0 && sent === o.messages
        : !o.persist || lost.length === 0),
  };
  if (!o.keepRoom) {
    await bus
      .deleteRoom(room.id)
      .catch((e: unknown) => o.log(`could not delete room: ${(e as Error).message}`));
  }
  await bus.close();
  return result;
}
