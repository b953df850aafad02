import { z } from 'zod';
import { requestSigner, signRequest, type Identity, type RequestSigner } from '@sealbus/crypto';
import {
  addMemberSchema,
  adoptStatementSchema,
  removeMemberSchema,
  statementsResponseSchema,
  type RemoveMemberRequest,
  type SignedStatement,
  type StatementsResponse,
  createRoomSchema,
  cursorResponseSchema,
  cursorSchema,
  roomDeletedResponseSchema,
  directoryEntrySchema,
  type CursorRequest,
  type DirectoryEntry,
  errorResponseSchema,
  memberAddedResponseSchema,
  memberRemovedResponseSchema,
  myKeysResponseSchema,
  myRoomSchema,
  myRoomsResponseSchema,
  newUserSchema,
  parseKeyHex,
  parseOrThrow,
  parseSignPubHex,
  rekeyResponseSchema,
  rekeySchema,
  setMyKeysResponseSchema,
  setMyKeysSchema,
  revokeResponseSchema,
  roomDetailResponseSchema,
  roomIdSchema,
  userResponseSchema,
  usersResponseSchema,
  type AddMemberRequest,
  type CreateRoomRequest,
  type MyRoom,
  type NewUser,
  type RekeyRequest,
  type RoomDetail,
  type SetMyKeys,
  type UserRecord,
} from '@sealbus/protocol';
import { ControlError, type ControlAttempt } from './errors.js';
import { Transport, type RawResponse } from './transport.js';
import { checkControlUrl } from './secure.js';
import { readSmall, streamExchange, type StreamedExchange } from './blobs.js';

export interface ControlClientOptions {
  /** Control-plane base URLs, tried in order; the one that last answered goes first. */
  urls: string[];
  identity: Identity;
  /** PEM CA bundle for https URLs. */
  ca?: string | Buffer;
  /** Per-attempt timeout (default 10 s). */
  timeoutMs?: number;
  /** Seconds a signature stays valid (default 60). */
  signatureLifetimeSec?: number;
  /** Whole call, every URL tried included (default 30 s, at least `timeoutMs`). */
  deadlineMs?: number;
  /** Accept `http://` to a host that is not loopback (warned once); default false. */
  allowInsecure?: boolean;
  /**
   * A 429 (rate limited) answer is retried once, after the server's
   * `Retry-After` when that fits in the deadline (default true); false
   * throws the 429 at once.
   */
  retryRateLimited?: boolean;
}

type Json = Record<string, unknown>;

/**
 * Signed client for membershipd's control plane. Every request carries a
 * fresh RFC 9421 signature (new nonce per attempt). On a connection error,
 * a timeout or a 503 it moves on to the next URL; a 4xx is the server's
 * answer and is thrown at once as a {@link ControlError}.
 *
 * @example
 * const ctl = new ControlClient({ urls: ['http://127.0.0.1:8470'], identity });
 * const me = await ctl.me();
 */
export class ControlClient {
  readonly #urls: URL[];
  readonly #signer: RequestSigner;
  readonly #transport: Transport;
  readonly #lifetime: number;
  readonly #deadlineMs: number;
  readonly #retry429: boolean;
  readonly #ca: string | Buffer | undefined;
  readonly #timeoutMs: number;
  #preferred = 0;

  constructor(o: ControlClientOptions) {
    if (o.urls.length === 0) throw new TypeError('ControlClient needs at least one control URL');
    this.#urls = o.urls.map((u) => {
      const url = new URL(u);
      if (url.protocol !== 'http:' && url.protocol !== 'https:')
        throw new TypeError(`not an http(s) URL: ${u}`);
      checkControlUrl(url, o.allowInsecure);
      return url;
    });
    this.#signer = requestSigner(o.identity);
    this.#transport = new Transport({
      timeoutMs: o.timeoutMs ?? 10_000,
      ...(o.ca ? { ca: o.ca } : {}),
    });
    this.#lifetime = o.signatureLifetimeSec ?? 60;
    this.#deadlineMs = Math.max(o.deadlineMs ?? 30_000, o.timeoutMs ?? 10_000);
    this.#retry429 = o.retryRateLimited ?? true;
    this.#ca = o.ca;
    this.#timeoutMs = o.timeoutMs ?? 10_000;
  }

  /** The URL that answered last (where the next request goes first). */
  get currentUrl(): string {
    return this.#urls[this.#preferred]!.toString();
  }

  /** Sends a signed request and parses the answer with `schema`. */
  async request<S extends z.ZodType>(
    method: string,
    path: string,
    schema: S,
    body?: Json
  ): Promise<z.output<S>> {
    const bytes = body === undefined ? undefined : new TextEncoder().encode(JSON.stringify(body));
    const attempts: ControlAttempt[] = [];
    const deadline = Date.now() + this.#deadlineMs;
    let retried429 = false;
    let beforeStart = 0;
    for (let i = 0; i < this.#urls.length && Date.now() < deadline; i++) {
      const idx = (this.#preferred + i) % this.#urls.length;
      const url = new URL(path, this.#urls[idx]);
      const headers = signRequest(
        this.#signer,
        { method, url, ...(bytes ? { body: bytes, contentType: 'application/json' } : {}) },
        { lifetimeSec: this.#lifetime }
      );
      headers['accept'] = 'application/json';
      let res: RawResponse;
      try {
        res = await this.#transport.send(method, url, headers, bytes);
      } catch (err) {
        attempts.push({ url: url.origin, status: 0, error: (err as Error).message });
        continue;
      }
      if (res.status === 503) {
        const e = errorOf(res);
        attempts.push({ url: url.origin, status: 503, code: e.code, error: e.message });
        continue;
      }
      this.#preferred = idx;
      // Rate limited: wait what the server asks (within the deadline) and try once more.
      if (res.status === 429 && this.#retry429 && !retried429) {
        const waitMs = retryAfterMs(res.headers['retry-after']);
        if (waitMs !== null && Date.now() + waitMs < deadline) {
          retried429 = true;
          await new Promise((r) => setTimeout(r, waitMs));
          i = -1; // the same node again: it is `#preferred` now
          continue;
        }
      }
      // A node that keeps request nonces in memory refuses requests signed
      // before it started (a clock behind the node's, or a restart a moment
      // ago): sign again, a second later, a few times.
      if (res.status === 401 && beforeStart < 3 && Date.now() + 1_000 < deadline) {
        if (errorOf(res).code === 'SIGNED_BEFORE_START') {
          beforeStart++;
          await new Promise((r) => setTimeout(r, 1_000));
          i = -1; // the same node again: it is `#preferred` now
          continue;
        }
      }
      if (res.status >= 200 && res.status < 300) {
        let parsed: unknown;
        try {
          parsed = JSON.parse(res.body.toString('utf8'));
        } catch {
          throw new ControlError(
            res.status,
            'BAD_RESPONSE',
            `${method} ${path}: the answer is not JSON`
          );
        }
        return parseOrThrow(schema, parsed, 'response');
      }
      const e = errorOf(res);
      throw new ControlError(res.status, e.code, `${method} ${path}: ${e.message}`);
    }
    const allBusy = attempts.every((a) => a.status === 503);
    throw new ControlError(
      allBusy ? 503 : 0,
      'UNAVAILABLE',
      `${method} ${path}: no control URL answered (${attempts.map((a) => `${a.url}: ${a.error}`).join('; ')})`,
      attempts
    );
  }

  async listUsers(): Promise<UserRecord[]> {
    return (await this.request('GET', '/users', usersResponseSchema)).users;
  }

  async addUser(user: NewUser): Promise<UserRecord> {
    const body = parseOrThrow(newUserSchema, user);
    return (await this.request('POST', '/users', userResponseSchema, body)).user;
  }

  async revokeUser(signPub: string): Promise<{ user: UserRecord; changed: boolean }> {
    return this.request('POST', `/users/${parseSignPubHex(signPub)}/revoke`, revokeResponseSchema);
  }

  async me(): Promise<UserRecord> {
    return (await this.request('GET', '/me', userResponseSchema)).user;
  }

  /**
   * Completes the signer's own record with its kex and NATS keys and their
   * binding (`PUT /me/keys`); `Sealbus.connect` does this by itself.
   *
   * @example
   * const p = publicIdentityOf(identity);
   * await ctl.setMyKeys({ kex_pub: p.kexPubHex, nats_pub: p.natsPubHex, binding: p.bindingHex });
   */
  async setMyKeys(keys: SetMyKeys): Promise<{ user: UserRecord; changed: boolean }> {
    return this.request(
      'PUT',
      '/me/keys',
      setMyKeysResponseSchema,
      parseOrThrow(setMyKeysSchema, keys)
    );
  }

  async createRoom(input: CreateRoomRequest): Promise<MyRoom> {
    return this.request('POST', '/rooms', myRoomSchema, parseOrThrow(createRoomSchema, input));
  }

  async listMyRooms(): Promise<MyRoom[]> {
    return (await this.request('GET', '/rooms', myRoomsResponseSchema)).rooms;
  }

  /** Deletes a room with its memberships, keys and history (owner only). */
  async deleteRoom(id: string) {
    return this.request('DELETE', `/rooms/${roomId(id)}`, roomDeletedResponseSchema);
  }

  async getRoom(id: string): Promise<RoomDetail> {
    return sameId(id, await this.request('GET', `/rooms/${roomId(id)}`, roomDetailResponseSchema));
  }

  async addMember(id: string, input: AddMemberRequest) {
    return this.request(
      'POST',
      `/rooms/${roomId(id)}/members`,
      memberAddedResponseSchema,
      parseOrThrow(addMemberSchema, input)
    );
  }

  /** Removes a member; `input.statement` is the owner's statement without them. */
  async removeMember(id: string, signPub: string, input: RemoveMemberRequest) {
    return this.request(
      'DELETE',
      `/rooms/${roomId(id)}/members/${parseKeyHex(signPub)}`,
      memberRemovedResponseSchema,
      parseOrThrow(removeMemberSchema, input)
    );
  }

  /** The room's owner-signed statements with seq > `after` (all by default), as stored. */
  async statements(id: string, after = -1): Promise<StatementsResponse> {
    const q = after >= 0 ? `?after=${after}` : '';
    const r = sameId(
      id,
      await this.request('GET', `/rooms/${roomId(id)}/statements${q}`, statementsResponseSchema)
    );
    // Bounded and in order, or refused: a control plane may lie, not overflow us.
    let expect = after + 1;
    for (const s of r.statements) {
      if (s.seq !== expect)
        throw new ControlError(200, 'BAD_RESPONSE', 'GET statements: answered out of order');
      expect++;
    }
    return r;
  }

  /** The first statement of a room made before statements existed (owner only). */
  async adoptStatement(
    id: string,
    statement: SignedStatement,
    sealedKeys?: Record<string, string>
  ): Promise<StatementsResponse> {
    return this.request(
      'POST',
      `/rooms/${roomId(id)}/statements`,
      statementsResponseSchema,
      parseOrThrow(adoptStatementSchema, {
        statement,
        ...(sealedKeys ? { sealed_keys: sealedKeys } : {}),
      })
    );
  }

  async rekey(id: string, input: RekeyRequest) {
    return this.request(
      'POST',
      `/rooms/${roomId(id)}/rekey`,
      rekeyResponseSchema,
      parseOrThrow(rekeySchema, input)
    );
  }

  async myKeys(id: string) {
    return sameId(id, await this.request('GET', `/rooms/${roomId(id)}/keys`, myKeysResponseSchema));
  }

  /** Restarts the signer's reading of a persisted room from its start or from new messages. */
  async cursor(id: string, input: CursorRequest) {
    return this.request(
      'POST',
      `/rooms/${roomId(id)}/cursor`,
      cursorResponseSchema,
      parseOrThrow(cursorSchema, input)
    );
  }

  /** An active user's public keys, to seal a room key to them. */
  async directory(signPub: string): Promise<DirectoryEntry> {
    const asked = parseSignPubHex(signPub);
    const entry = await this.request('GET', `/directory/${asked}`, directoryEntrySchema);
    if (entry.sign_pub !== asked)
      throw new ControlError(200, 'BAD_RESPONSE', `GET /directory: answered for another key`);
    return entry;
  }

  /**
   * One signed exchange with a streamed body and answer (blobs), with the
   * same failover as `request`: a connection error or a 503 moves on to the
   * next URL (a fresh signature, the file read again); any other answer is
   * returned, unread, for a 2xx, and thrown as a ControlError otherwise.
   */
  async #streamed(
    method: string,
    path: string,
    upload?: { path: string; size: number; sha256: Uint8Array }
  ): Promise<StreamedExchange> {
    const attempts: ControlAttempt[] = [];
    const deadline = Date.now() + this.#deadlineMs;
    for (let i = 0; i < this.#urls.length && Date.now() < deadline; i++) {
      const idx = (this.#preferred + i) % this.#urls.length;
      const url = new URL(path, this.#urls[idx]);
      const headers = signRequest(
        this.#signer,
        {
          method,
          url,
          ...(upload ? { bodySha256: upload.sha256, contentType: 'application/octet-stream' } : {}),
        },
        { lifetimeSec: this.#lifetime }
      );
      let res: StreamedExchange;
      try {
        res = await streamExchange(method, url, headers, {
          ...(upload ? { file: upload } : {}),
          ...(this.#ca ? { ca: this.#ca } : {}),
          idleMs: this.#timeoutMs,
        });
      } catch (err) {
        attempts.push({ url: url.origin, status: 0, error: (err as Error).message });
        continue;
      }
      if (res.status >= 200 && res.status < 300) {
        this.#preferred = idx;
        return res;
      }
      const e = errorOf({
        status: res.status,
        headers: res.headers,
        body: await readSmall(res.body),
      });
      if (res.status === 503) {
        attempts.push({ url: url.origin, status: 503, code: e.code, error: e.message });
        continue;
      }
      this.#preferred = idx;
      throw new ControlError(res.status, e.code, `${method} ${path}: ${e.message}`);
    }
    throw new ControlError(
      attempts.every((a) => a.status === 503) ? 503 : 0,
      'UNAVAILABLE',
      `${method} ${path}: no control URL answered (${attempts.map((a) => `${a.url}: ${a.error}`).join('; ')})`,
      attempts
    );
  }

  /**
   * Uploads a blob's stored bytes (ciphertext) from a file whose SHA-256 is
   * known (the signed Content-Digest is sent before the body): `{hash, size}`.
   * `Sealbus.putBlob` encrypts and spools; this is the raw route.
   */
  async uploadBlob(
    id: string,
    file: { path: string; size: number; sha256: Uint8Array }
  ): Promise<{ hash: string; size: number }> {
    const res = await this.#streamed('POST', `/rooms/${roomId(id)}/blobs`, file);
    const answer = parseOrThrow(
      blobAnswerSchema,
      JSON.parse((await readSmall(res.body)).toString('utf8')),
      'response'
    );
    if (answer.hash !== Buffer.from(file.sha256).toString('hex') || answer.size !== file.size)
      throw new ControlError(res.status, 'BAD_RESPONSE', 'POST blobs: answered for other bytes');
    return answer;
  }

  /** A blob's stored bytes, streamed as they arrive (unverified: `Sealbus.getBlob` opens them). */
  async downloadBlob(
    id: string,
    hash: string
  ): Promise<{ size: number; body: AsyncIterable<Uint8Array> }> {
    const res = await this.#streamed('GET', `/rooms/${roomId(id)}/blobs/${blobHash(hash)}`);
    return { size: Number(res.headers['content-length'] ?? NaN), body: res.body };
  }

  /** A blob's stored size, or null when the room has no such blob. */
  async headBlob(id: string, hash: string): Promise<{ size: number } | null> {
    try {
      const res = await this.#streamed('HEAD', `/rooms/${roomId(id)}/blobs/${blobHash(hash)}`);
      res.body.resume();
      return { size: Number(res.headers['content-length'] ?? NaN) };
    } catch (err) {
      if (err instanceof ControlError && err.status === 404) return null;
      throw err;
    }
  }

  /** Deletes a blob (owner only). */
  async deleteBlob(id: string, hash: string) {
    return this.request(
      'DELETE',
      `/rooms/${roomId(id)}/blobs/${blobHash(hash)}`,
      blobAnswerSchema.extend({ deleted: z.literal(true) })
    );
  }

  /** Closes idle keep-alive connections. */
  close(): void {
    this.#transport.close();
  }
}

const roomId = (id: string) => parseOrThrow(roomIdSchema, id, 'room id');
const blobHashSchema = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex characters');
const blobHash = (hash: string) => parseOrThrow(blobHashSchema, hash, 'blob hash');
const blobAnswerSchema = z.object({ hash: blobHashSchema, size: z.number().int().nonnegative() });

/** An answer about a room is about the room asked for, or it is refused. */
function sameId<T extends { id: string }>(asked: string, answer: T): T {
  if (answer.id !== asked)
    throw new ControlError(200, 'BAD_RESPONSE', `answered for room ${answer.id}, not ${asked}`);
  return answer;
}

/** `Retry-After` in seconds (the daemon's form), as ms; null when absent or not a small number. */
function retryAfterMs(header: string | string[] | undefined): number | null {
  const v = Array.isArray(header) ? header[0] : header;
  if (v === undefined || !/^\d{1,4}$/.test(v.trim())) return null;
  return Math.min(Number(v.trim()), 120) * 1000;
}

function errorOf(res: RawResponse): { code: string; message: string } {
  try {
    return parseOrThrow(errorResponseSchema, JSON.parse(res.body.toString('utf8'))).error;
  } catch {
    return {
      code: `HTTP_${res.status}`,
      message: res.body.toString('utf8').slice(0, 200) || `HTTP ${res.status}`,
    };
  }
}
