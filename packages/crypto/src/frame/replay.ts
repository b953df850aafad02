/** What a receiver learns from one (sender, session, seq). */
export type SeqVerdict =
  | { ok: true; gap: { from: number; to: number } | null }
  | { ok: false; reason: 'REPLAYED' | 'TOO_OLD' };

const WINDOW = 1024;

/**
 * Sliding-window replay protection per (sender, session), as IPsec does:
 * the highest seq seen plus a bitmap of the WINDOW seqs below it. A seq
 * above the highest is new (a jump reports the skipped range as possible
 * loss); inside the window it is new once; below the window it is too old.
 *
 * Bounded per sender, not globally: a sender keeps at most
 * `maxSessionsPerSender` sessions, and one that opens more evicts only its
 * own oldest; no sender can flush another's entries. (Only authentic frames
 * of members reach a window, so the number of senders is the room's.)
 */
export class ReplayWindow {
  #senders = new Map<string, Map<string, { highest: number; seen: Uint32Array }>>();
  readonly #maxSessions: number;
  readonly #maxSenders: number;

  constructor(o: { maxSessionsPerSender?: number; maxSenders?: number } = {}) {
    this.#maxSessions = o.maxSessionsPerSender ?? 64;
    this.#maxSenders = o.maxSenders ?? 100_000;
  }

  check(sender: string, session: string, seq: number): SeqVerdict {
    let sessions = this.#senders.get(sender);
    if (!sessions) {
      if (this.#senders.size >= this.#maxSenders)
        this.#senders.delete(this.#senders.keys().next().value!);
      sessions = new Map();
      this.#senders.set(sender, sessions);
    }
    let s = sessions.get(session);
    if (!s) {
      if (sessions.size >= this.#maxSessions) sessions.delete(sessions.keys().next().value!);
      s = { highest: 0, seen: new Uint32Array(WINDOW / 32) };
      sessions.set(session, s);
      // Joining a session late is not loss: the first seq seen sets the base.
      this.#mark(s, seq);
      s.highest = seq;
      return { ok: true, gap: null };
    }
    if (seq > s.highest) {
      const gap = seq > s.highest + 1 ? { from: s.highest + 1, to: seq - 1 } : null;
      // Seqs that slide into the window unseen must read as unseen.
      if (seq - s.highest >= WINDOW) s.seen.fill(0);
      else for (let q = s.highest + 1; q < seq; q++) this.#unmark(s, q);
      s.highest = seq;
      this.#mark(s, seq);
      return { ok: true, gap };
    }
    if (seq <= s.highest - WINDOW) return { ok: false, reason: 'TOO_OLD' };
    if (this.#isMarked(s, seq)) return { ok: false, reason: 'REPLAYED' };
    this.#mark(s, seq);
    return { ok: true, gap: null };
  }

  #bit(seq: number): [number, number] {
    const i = seq % WINDOW;
    return [i >>> 5, 1 << (i & 31)];
  }
  #mark(s: { seen: Uint32Array }, seq: number) {
    const [w, m] = this.#bit(seq);
    s.seen[w]! |= m;
  }
  #unmark(s: { seen: Uint32Array }, seq: number) {
    const [w, m] = this.#bit(seq);
    s.seen[w]! &= ~m;
  }
  #isMarked(s: { seen: Uint32Array }, seq: number): boolean {
    const [w, m] = this.#bit(seq);
    return (s.seen[w]! & m) !== 0;
  }
}
