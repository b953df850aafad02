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
 */
export class ReplayWindow {
  #streams = new Map<string, { highest: number; seen: Uint32Array }>();
  readonly #maxStreams: number;

  constructor(maxStreams = 100_000) {
    this.#maxStreams = maxStreams;
  }

  check(sender: string, session: string, seq: number): SeqVerdict {
    const id = `${sender}:${session}`;
    let s = this.#streams.get(id);
    if (!s) {
      if (this.#streams.size >= this.#maxStreams)
        this.#streams.delete(this.#streams.keys().next().value!);
      s = { highest: 0, seen: new Uint32Array(WINDOW / 32) };
      this.#streams.set(id, s);
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
