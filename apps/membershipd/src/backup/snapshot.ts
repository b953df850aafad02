import {
  headers,
  type JetStreamClient,
  type JetStreamManager,
  type KV,
  type NatsConnection,
} from 'nats';
import {
  auditRecordSchema,
  roomRecordSchema,
  roomStreamName,
  type RoomRecord,
} from '@sealbus/protocol';
import {
  AUDIT_STREAM,
  AUDIT_SUBJECT_PREFIX,
  MembershipStore,
  RoomBlobs,
  STORED_AT_HEADER,
  bucketSpecs,
  getLive,
  getMessages,
  isStreamNotFound,
  listKeys,
  storedAt,
  toStoreError,
} from '@sealbus/store';
import {
  ArchiveError,
  blobRecordDefect,
  type AnyRecord,
  type BlobRecord,
  type KvRecord,
  type Section,
  type SectionData,
  type SectionKind,
  type StreamRecord,
  type VerifiedArchive,
} from './archive.js';

/** Progress of one section: `done` of `total` records. */
export type Progress = (section: string, done: number, total: number) => void;

const BATCH = 64;
const OP_TIMEOUT_MS = 10_000;

/** The control-plane buckets and the audit stream, in the order they are archived. */
export function expectedSections(): Array<{ name: string; kind: 'kv' | 'stream' }> {
  return [
    ...Object.values(bucketSpecs()).map((s) => ({ name: s.name, kind: 'kv' as const })),
    { name: AUDIT_STREAM, kind: 'stream' as const },
  ];
}

async function streamExists(jsm: JetStreamManager, name: string): Promise<boolean> {
  try {
    await jsm.streams.info(name);
    return true;
  } catch (err) {
    if (isStreamNotFound(err)) return false;
    throw toStoreError(err, `read stream ${name}`);
  }
}

async function bindKv(js: JetStreamClient, name: string): Promise<KV> {
  try {
    // Reads go through the stream leader (no direct get from a lagging follower).
    return await js.views.kv(name, { bindOnly: true, allow_direct: false });
  } catch (err) {
    throw toStoreError(err, `open bucket ${name}`);
  }
}

/**
 * A store's two connections: `control` in account SEALBUS (buckets, audit)
 * and `app` in account APP (persisted rooms' streams). A 0.1 store, which
 * kept everything in APP, is read with the same connection as both.
 */
export interface StoreConns {
  control: NatsConnection;
  app: NatsConnection;
}

/**
 * Reads every bucket's live keys and every audit message over `nc` (the
 * node's internal identity). Not a point-in-time snapshot across buckets:
 * a write landing during a live backup may be in one bucket and not yet in
 * another; back up a stopped node, or a quiet one, for an exact cut.
 */
export async function dumpStore(
  conns: StoreConns,
  progress?: Progress,
  options: { legacy?: boolean; blobs?: boolean } = {}
): Promise<SectionData[]> {
  const js = conns.control.jetstream({ timeout: OP_TIMEOUT_MS, checkAPI: false });
  const jsm = await conns.control.jetstreamManager({ timeout: OP_TIMEOUT_MS, checkAPI: false });
  const appJsm = await conns.app.jetstreamManager({ timeout: OP_TIMEOUT_MS, checkAPI: false });
  const out: SectionData[] = [];
  for (const spec of Object.values(bucketSpecs())) {
    // A 0.1 store predates some buckets (the NATS key index, rebuilt on restore).
    if (options.legacy && !(await streamExists(jsm, `KV_${spec.name}`))) continue;
    const kv = await bindKv(js, spec.name);
    // A node's claims on its names (the nonces bucket's `authority.*`)
    // belong to the running node, not to the data: a restored node makes
    // its own, and another's restored would make it refuse its own address.
    const keys = (await listKeys(kv, `list ${spec.name}`))
      .filter((k) => spec.name !== bucketSpecs().nonces.name || !k.startsWith('authority.'))
      .sort();
    const records: KvRecord[] = [];
    for (let i = 0; i < keys.length; i += BATCH) {
      const batch = keys.slice(i, i + BATCH);
      const entries = await Promise.all(batch.map((k) => getLive(kv, k, `read ${spec.name}`)));
      for (const e of entries) {
        if (e) records.push({ key: e.key, value: Buffer.from(e.value).toString('base64') });
      }
      progress?.(spec.name, Math.min(i + BATCH, keys.length), keys.length);
    }
    if (keys.length === 0) progress?.(spec.name, 0, 0);
    out.push({ name: spec.name, kind: 'kv', records });
  }

  out.push({
    name: AUDIT_STREAM,
    kind: 'stream',
    records: await dumpStream(jsm, AUDIT_STREAM, progress),
  });
  // The streams of the persisted rooms this backup's rooms section holds:
  // a room created while the backup ran, or a stream a failed create left
  // behind, has no row here and would make the archive unrestorable.
  const streams = new Set<string>();
  try {
    for await (const name of appJsm.streams.names()) streams.add(name);
  } catch (err) {
    throw toStoreError(err, 'list room streams');
  }
  const rooms = persistedRoomsOf(out)
    .map((p) => roomStreamName(p.room.id))
    .filter((name) => streams.has(name))
    .sort();
  for (const name of rooms) {
    out.push({ name, kind: 'stream', records: await dumpStream(appJsm, name, progress) });
  }
  if (options.blobs) {
    const appJs = conns.app.jetstream({ timeout: OP_TIMEOUT_MS, checkAPI: false });
    const blobs = new RoomBlobs(appJs, appJsm, 1);
    // The blobs of the rooms this backup's rooms section holds (a room
    // deleted while the backup ran takes its blobs with it).
    for (const room of roomsOf(out).sort((a, b) => (a.id < b.id ? -1 : 1))) {
      const list = await blobs.list(room.id);
      if (list.length === 0) continue;
      const name = RoomBlobs.bucketOf(room.id);
      const records: BlobRecord[] = [];
      for (const [i, b] of list.entries()) {
        const bytes = await readBlob(blobs, room.id, b.hash);
        if (!bytes) continue; // deleted since the listing (before or while it was read)
        const r = { hash: b.hash, size: bytes.length, data: bytes.toString('base64') };
        // A stored blob that is not what it is named is not archived as if it were.
        const defect = blobRecordDefect(r);
        if (defect) throw new ArchiveError(`room ${room.id}: ${defect} in the store`);
        records.push(r);
        progress?.(name, i + 1, list.length);
      }
      out.push({ name, kind: 'blobs', records });
    }
  }
  return out;
}

/**
 * A blob's bytes, or null when it is gone: deleted before its metadata was
 * read, or while its chunks were (a live backup races its owner; that blob
 * is simply not in the archive, as if deleted a moment earlier). A read that
 * fails while the blob still exists is tried once more, then fails the
 * backup.
 */
async function readBlob(blobs: RoomBlobs, room: string, hash: string): Promise<Buffer | null> {
  for (let attempt = 1; ; attempt++) {
    const got = await blobs.get(room, hash);
    if (!got) return null;
    try {
      const parts: Uint8Array[] = [];
      for await (const c of got.data as unknown as AsyncIterable<Uint8Array>) parts.push(c);
      return Buffer.concat(parts);
    } catch (err) {
      if (!(await blobs.info(room, hash))) return null;
      if (attempt >= 2) throw err;
    }
  }
}

/** Every room of the rooms section (persisted or not). */
function roomsOf(sections: SectionData[]): RoomRecord[] {
  const rows = (sections.find((s) => s.kind === 'kv' && s.name === bucketSpecs().rooms.name)
    ?.records ?? []) as KvRecord[];
  const out: RoomRecord[] = [];
  for (const r of rows) {
    let raw: unknown;
    try {
      raw = JSON.parse(Buffer.from(r.value, 'base64').toString('utf8'));
    } catch {
      continue;
    }
    const parsed = roomRecordSchema.safeParse(raw);
    if (parsed.success && `room.${parsed.data.id}` === r.key) out.push(parsed.data);
  }
  return out;
}

/** Whether an archive carries room blobs. */
export function hasBlobs(archive: { sections: Array<{ section: Section }> }): boolean {
  return archive.sections.some((s) => s.section.kind === 'blobs');
}

/** Every message of a stream, oldest first, with its sequence and the time it was stored. */
async function dumpStream(
  jsm: JetStreamManager,
  stream: string,
  progress?: Progress
): Promise<StreamRecord[]> {
  let first = 0;
  let last = -1;
  try {
    const info = await jsm.streams.info(stream);
    if (info.state.messages > 0) {
      first = info.state.first_seq;
      last = info.state.last_seq;
    }
  } catch (err) {
    throw toStoreError(err, `read stream ${stream}`);
  }
  const records: StreamRecord[] = [];
  const total = last - first + 1;
  for (let s = first; s <= last; s += BATCH) {
    const msgs = await getMessages(
      jsm,
      stream,
      s,
      Math.min(last, s + BATCH - 1),
      `read stream ${stream}`
    );
    for (const m of msgs) {
      if (!m) continue;
      const headers: Array<[string, string]> = [];
      if (m.header) {
        for (const k of m.header.keys()) {
          // Publish-time controls, not content: expectations, and the
          // dedupe id (restoring with it could drop a legitimate repeat).
          if (/^nats-(expected-|msg-id$)/i.test(k)) continue;
          // A restore's note of the original time: it is the record's `time`.
          if (k.toLowerCase() === STORED_AT_HEADER.toLowerCase()) continue;
          for (const v of m.header.values(k)) headers.push([k, v]);
        }
      }
      records.push({
        subject: m.subject,
        data: Buffer.from(m.data).toString('base64'),
        ...(headers.length > 0 ? { headers } : {}),
        seq: m.seq,
        time: new Date(storedAt(m)).toISOString(),
      });
    }
    progress?.(stream, Math.min(s + BATCH - first, total), total);
  }
  if (total <= 0) progress?.(stream, 0, 0);
  return records;
}

/** The persisted rooms of an archive (from its rooms section) and their members. */
function persistedRooms(archive: VerifiedArchive): Array<{ room: RoomRecord; members: string[] }> {
  return persistedRoomsOf(sectionsOf(archive));
}

/** A verified archive's sections as the dump makes them. */
function sectionsOf(archive: VerifiedArchive): SectionData[] {
  return archive.sections.map((s) => ({
    name: s.section.name,
    kind: s.section.kind,
    records: s.records,
  }));
}

function persistedRoomsOf(sections: SectionData[]): Array<{ room: RoomRecord; members: string[] }> {
  const members = (sections.find((s) => s.kind === 'kv' && s.name === bucketSpecs().members.name)
    ?.records ?? []) as KvRecord[];
  // rooms rows are `room.<id>`, members rows `<id>.<sign_pub>`
  return roomsOf(sections)
    .filter((room) => room.policy.persist)
    .map((room) => ({
      room,
      members: members
        .filter((m) => m.key.startsWith(`${room.id}.`))
        .map((m) => m.key.slice(room.id.length + 1)),
    }));
}

/**
 * Checks that an archive holds exactly the sections this version restores
 * (every bucket, the audit log, and streams only of persisted rooms it
 * describes), with records that fit them, before anything is written.
 */
export function checkRestorable(archive: VerifiedArchive): void {
  const want = expectedSections();
  const have = archive.sections.map((s) => `${s.section.kind}:${s.section.name}`);
  for (const w of want) {
    // Archives made before the NATS key index have no section for it: it is
    // rebuilt from the users section on restore.
    if (w.name === bucketSpecs().natsKeys.name) continue;
    if (!have.includes(`${w.kind}:${w.name}`))
      throw new ArchiveError(`the archive has no ${w.kind} section ${w.name}`);
  }
  const rooms = new Map(persistedRooms(archive).map((p) => [roomStreamName(p.room.id), p.room]));
  const allRooms = new Map(roomsOf(sectionsOf(archive)).map((r) => [RoomBlobs.bucketOf(r.id), r]));
  for (const { section, records } of archive.sections) {
    if (section.kind === 'stream') checkSequences(section.name, records as StreamRecord[]);
    const key = `${section.kind}:${section.name}`;
    if (want.some((w) => `${w.kind}:${w.name}` === key)) {
      if (section.name !== AUDIT_STREAM) continue;
      for (const [i, r] of (records as StreamRecord[]).entries()) {
        if (!r.subject.startsWith(`${AUDIT_SUBJECT_PREFIX}.`))
          throw new ArchiveError(`audit record subject ${r.subject} is outside the audit stream`);
        // The audit log cannot be edited once written: only real records go in.
        let raw: unknown;
        try {
          raw = JSON.parse(Buffer.from(r.data, 'base64').toString('utf8'));
        } catch {
          throw new ArchiveError(`audit record ${i + 1} is not JSON`);
        }
        const parsed = auditRecordSchema.safeParse(raw);
        if (!parsed.success)
          throw new ArchiveError(
            `audit record ${i + 1} is not an audit record: ${parsed.error.issues[0]?.message ?? 'invalid'}`
          );
      }
      continue;
    }
    if (section.kind === 'blobs') {
      const owner = allRooms.get(section.name);
      if (!owner)
        throw new ArchiveError(`the archive has blobs of an unknown room (${section.name})`);
      let prev = '';
      for (const r of records as BlobRecord[]) {
        const defect = blobRecordDefect(r);
        if (defect) throw new ArchiveError(`${section.name}: ${defect}`);
        if (r.hash <= prev)
          throw new ArchiveError(`${section.name}: blobs out of order or repeated (${r.hash})`);
        prev = r.hash;
      }
      continue;
    }
    const room = section.kind === 'stream' ? rooms.get(section.name) : undefined;
    if (!room) throw new ArchiveError(`the archive has an unknown section ${key}`);
    for (const r of records as StreamRecord[]) {
      if (r.subject !== room.subject)
        throw new ArchiveError(`a message in ${section.name} is not on its room's subject`);
    }
  }
}

/**
 * A stream's records restore with their own sequence numbers: every record
 * has one or none does (archives made before 0.2), and they count up by one
 * from 1 (the audit log and room streams refuse deletes, purges and
 * discarding old messages, so the streams this version writes have no gaps).
 */
function checkSequences(name: string, records: StreamRecord[]): void {
  const withSeq = records.filter((r) => r.seq !== undefined).length;
  if (withSeq === 0) return;
  if (withSeq !== records.length)
    throw new ArchiveError(`stream ${name}: some records have a sequence number and some do not`);
  records.forEach((r, i) => {
    if (r.seq !== i + 1)
      throw new ArchiveError(
        `stream ${name}: record ${i + 1} has sequence ${r.seq}; a restore reproduces sequences 1, 2, 3, … only`
      );
  });
}

/**
 * The stored times a restore writes: the archive's, never going back (a
 * cluster's stream leaders may disagree by their clock skew, and a doctored
 * archive may say anything; queries by time need them in order). Undefined
 * where the archive has none (made before 0.2).
 */
export function restoredTimes(records: StreamRecord[]): Array<string | undefined> {
  let prev = -Infinity;
  return records.map((r) => {
    if (r.time === undefined) return undefined;
    const t = Math.max(prev, Date.parse(r.time));
    prev = t;
    return new Date(t).toISOString();
  });
}

/** What one section restored. */
export interface RestoredSection {
  name: string;
  kind: SectionKind;
  count: number;
  sha256: string;
}

async function publishAll(
  js: JetStreamClient,
  stream: string,
  rows: StreamRecord[],
  progress?: Progress
): Promise<void> {
  // Publishes on one connection are stored in the order they are sent, so a
  // window of them in flight keeps the original order.
  const times = restoredTimes(rows);
  for (let i = 0; i < rows.length; i += BATCH) {
    await Promise.all(
      rows.slice(i, i + BATCH).map(async (r, j) => {
        const time = times[i + j];
        const h = r.headers?.length || time ? headers() : undefined;
        for (const [k, v] of r.headers ?? []) h!.append(k, v);
        // JetStream stamps the restore's time: the original goes in a header.
        if (time) h!.set(STORED_AT_HEADER, time);
        try {
          await js.publish(r.subject, Buffer.from(r.data, 'base64'), {
            expect: { streamName: stream },
            ...(h ? { headers: h } : {}),
          });
        } catch (err) {
          throw toStoreError(err, `restore ${stream}`);
        }
      })
    );
    progress?.(stream, Math.min(i + BATCH, rows.length), rows.length);
  }
}

/**
 * Creates the store's buckets and audit stream (their real definitions) on
 * `nc`, which must be empty, and writes every record of a verified archive
 * into them: keys create-only, messages in their original order. Persisted
 * rooms get their stream back, with its history, and each member a consumer
 * reading from the start.
 */
export async function loadStore(
  conns: StoreConns,
  archive: VerifiedArchive,
  options: { replicas: number; progress?: Progress }
): Promise<RestoredSection[]> {
  checkRestorable(archive);
  const store = await MembershipStore.open(conns.control, {
    replicas: options.replicas,
    bootstrapBudgetMs: 30_000,
    app: conns.app,
  });
  const js = conns.control.jetstream({ timeout: OP_TIMEOUT_MS, checkAPI: false });
  const appJs = conns.app.jetstream({ timeout: OP_TIMEOUT_MS, checkAPI: false });
  const jsm = await conns.control.jetstreamManager({ timeout: OP_TIMEOUT_MS, checkAPI: false });
  const out: RestoredSection[] = [];
  const done = (section: Section, count: number) =>
    out.push({ name: section.name, kind: section.kind, count, sha256: section.sha256 });
  for (const { section, records } of archive.sections) {
    if (section.kind === 'kv') {
      const kv = await bindKv(js, section.name);
      if ((await listKeys(kv, `list ${section.name}`)).length > 0)
        throw new ArchiveError(`bucket ${section.name} is not empty: restore needs a fresh store`);
      const rows = records as KvRecord[];
      for (let i = 0; i < rows.length; i += BATCH) {
        await Promise.all(
          rows.slice(i, i + BATCH).map(async (r) => {
            try {
              await kv.create(r.key, Buffer.from(r.value, 'base64'));
            } catch (err) {
              throw toStoreError(err, `restore ${section.name}/${r.key}`);
            }
          })
        );
        options.progress?.(section.name, Math.min(i + BATCH, rows.length), rows.length);
      }
      done(section, rows.length);
    } else if (section.name === AUDIT_STREAM) {
      const info = await jsm.streams.info(section.name);
      if (info.state.messages > 0)
        throw new ArchiveError(`stream ${section.name} is not empty: restore needs a fresh store`);
      await publishAll(js, section.name, records as StreamRecord[], options.progress);
      done(section, records.length);
    }
  }
  if (!archive.sections.some((s) => s.section.name === bucketSpecs().natsKeys.name))
    await store.rebuildNatsKeyIndex();
  for (const { room, members } of persistedRooms(archive)) {
    await store.rooms.restorePersistence(room, members);
    const name = roomStreamName(room.id);
    const entry = archive.sections.find(
      (s) => s.section.kind === 'stream' && s.section.name === name
    );
    if (entry) {
      await publishAll(appJs, name, entry.records as StreamRecord[], options.progress);
      done(entry.section, entry.records.length);
    }
    await store.rooms.capRestoredStream(room);
  }
  // Blobs last: each put checks the bytes against their name again.
  const appJsm = await conns.app.jetstreamManager({ timeout: OP_TIMEOUT_MS, checkAPI: false });
  const blobs = new RoomBlobs(appJs, appJsm, options.replicas);
  for (const { section, records } of archive.sections) {
    if (section.kind !== 'blobs') continue;
    const room = section.name.slice('sealbus_blobs_'.length);
    if ((await blobs.list(room)).length > 0)
      throw new ArchiveError(
        `the blob store of room ${room} is not empty: restore needs a fresh store`
      );
    for (const [i, r] of (records as BlobRecord[]).entries()) {
      const bytes = Buffer.from(r.data, 'base64');
      await blobs.put(
        room,
        r.hash,
        (async function* () {
          for (let at = 0; at < bytes.length; at += 1024 * 1024)
            yield bytes.subarray(at, at + 1024 * 1024);
        })()
      );
      options.progress?.(section.name, i + 1, records.length);
    }
    done(section, records.length);
  }
  return out;
}

/** One section of a read-back: whether it matches, and where it first differs. */
export interface ReadBack {
  name: string;
  ok: boolean;
  /** The first difference (record index and what), when not ok. */
  difference?: string;
}

/**
 * Reads the store back and compares every record of every section with the
 * archive: keys and values; subjects, payloads, headers and sequence numbers
 * and stored times (kept through the restore in a header). The
 * restore is proven, not assumed.
 */
export async function verifyAgainst(
  conns: StoreConns,
  archive: VerifiedArchive
): Promise<ReadBack[]> {
  const now = await dumpStore(conns, undefined, { blobs: hasBlobs(archive) });
  return archive.sections.map(({ section, records }) => {
    const mine = now.find((s) => s.name === section.name && s.kind === section.kind);
    const difference = mine
      ? firstDifference(section.kind, records, mine.records)
      : 'missing from the store';
    return {
      name: section.name,
      ok: difference === undefined,
      ...(difference ? { difference } : {}),
    };
  });
}

/** Where two sections' records first differ (undefined when they agree). */
export function firstDifference(
  kind: SectionKind,
  want: AnyRecord[],
  got: AnyRecord[]
): string | undefined {
  const form = (r: AnyRecord, withSeq: boolean) => {
    if (kind === 'blobs') {
      const b = r as BlobRecord;
      return JSON.stringify([b.hash, b.size, b.data]);
    }
    if (kind === 'kv') {
      const k = r as KvRecord;
      return JSON.stringify([k.key, k.value]);
    }
    const m = r as StreamRecord;
    return JSON.stringify([
      m.subject,
      m.data,
      m.headers ?? [],
      withSeq ? (m.seq ?? null) : null,
      withSeq ? (m.time ?? null) : null,
    ]);
  };
  // A stream's expected times are the ones its restore wrote (kept in order).
  const times = kind === 'stream' ? restoredTimes(want as StreamRecord[]) : [];
  for (let i = 0; i < Math.max(want.length, got.length); i++) {
    const w0 = want[i];
    const w = w0 && kind === 'stream' ? { ...(w0 as StreamRecord), time: times[i] } : w0;
    const g = got[i];
    if (!w) return `record ${i + 1}: in the store, not in the archive`;
    if (!g) return `record ${i + 1}: in the archive, not in the store`;
    const withSeq = kind === 'stream' && (w as StreamRecord).seq !== undefined;
    if (form(w, withSeq) !== form(g, withSeq)) return `record ${i + 1} differs`;
  }
  return undefined;
}
