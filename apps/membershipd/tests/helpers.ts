import http from 'node:http';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { connect, headers as natsHeaders, nkeyAuthenticator, type NatsConnection } from 'nats';
import {
  encodePublicIdentity,
  generateIdentity,
  loadIdentity,
  natsUserKey,
  requestSigner,
  signRequest,
  type Identity,
} from '@sealbus/crypto';
import { ControlClient, Sealbus } from '@sealbus/client';
import { APPEND_ID_HEADER, appendResultSubject, appendSubject } from '@sealbus/protocol';
import { nodeUsers } from '../src/dataplane/keys.js';
import { MembershipStore } from '@sealbus/store';
import { waitFor, type TestDaemon } from '@sealbus/testing';

export interface RawResult {
  status: number;
  json: any;
  headers: http.IncomingHttpHeaders;
}

/** Sends exactly these headers and body (nothing added but Host, unless given). */
export function rawRequest(
  base: string,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: Uint8Array | string
): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      new URL(path, base),
      { method, headers, agent: false, timeout: 15_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d) => chunks.push(d));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = text;
          }
          resolve({ status: res.statusCode ?? 0, json, headers: res.headers });
        });
      }
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

/** Headers of a request signed with the Sealbus profile. */
export function signedHeaders(
  id: Identity,
  method: string,
  url: string,
  body?: string,
  opts: Parameters<typeof signRequest>[2] = {}
): Record<string, string> {
  const bytes = body === undefined ? undefined : new TextEncoder().encode(body);
  return signRequest(
    requestSigner(id),
    {
      method,
      url: new URL(url),
      ...(bytes ? { body: bytes, contentType: 'application/json' } : {}),
    },
    opts
  );
}

/**
 * The node's own connections, as its daemon makes them: `nc` in account
 * SEALBUS (control state) and `app` in account APP (room streams), with the
 * store opened over both, to check what was (not) written.
 */
export async function nodeStore(
  d: TestDaemon
): Promise<{ store: MembershipStore; nc: NatsConnection; app: NatsConnection }> {
  const users = nodeUsers(await loadIdentity(join(d.dataDir, 'internal.id')));
  const nc = await connect({
    servers: d.natsUrl,
    authenticator: nkeyAuthenticator(users.internal.getSeed()),
  });
  const app = await connect({
    servers: d.natsUrl,
    authenticator: nkeyAuthenticator(users.app.getSeed()),
  });
  return { store: await MembershipStore.open(nc, { bindOnly: true, app }), nc, app };
}

export async function adminOf(d: TestDaemon): Promise<Identity> {
  return loadIdentity(join(d.dataDir, 'admin.id'));
}

/** Registers a fresh identity (bound, by its public token) through the admin, with its own client. */
export async function enrol(
  admin: ControlClient,
  d: TestDaemon,
  handle: string,
  role: 'admin' | 'member' = 'member'
): Promise<{ id: Identity; ctl: ControlClient }> {
  const id = generateIdentity();
  await admin.addUser({ public: encodePublicIdentity(id), handle, role });
  return { id, ctl: new ControlClient({ urls: [d.httpUrl], identity: id }) };
}

/** A plain NATS connection as an identity's derived NATS key (the way the SDK connects, minus the SDK). */
export async function natsAs(
  d: TestDaemon,
  id: Identity,
  opts: Record<string, unknown> = {}
): Promise<NatsConnection> {
  return connect({
    servers: d.natsUrl,
    authenticator: nkeyAuthenticator(new TextEncoder().encode(natsUserKey(id).seed)),
    inboxPrefix: `_INBOX_${id.signPubHex.slice(0, 32)}.r`,
    maxReconnectAttempts: 0,
    ...opts,
  });
}

/** Resolves with the first permissions-violation error the connection reports. */
export function nextPermissionError(nc: NatsConnection, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no permissions violation reported')), timeoutMs);
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === 'error' && /permissions[ _]violation/i.test(String(s.data))) {
          clearTimeout(t);
          return resolve(String(s.data));
        }
      }
    })();
  });
}

/** Waits until nats-server logged a publish violation for `subject` (the server says which subject). */
export function publishRefused(d: TestDaemon, subject: string): Promise<unknown> {
  return waitFor(
    () =>
      d.logs.some(
        (l) =>
          l.component === 'nats-server' &&
          /Publish Violation/.test(l.msg) &&
          l.msg.includes(`Subject "${subject}"`)
      ),
    { timeoutMs: 5_000, what: `publish violation on ${subject}` }
  );
}

/** A Sealbus client of `id` on a test daemon; its close goes into `closers`. */
export async function busOf(
  d: TestDaemon,
  id: Identity,
  closers: Array<() => Promise<unknown> | void>
): Promise<Sealbus> {
  const b = await Sealbus.connect({
    natsServers: [d.natsUrl],
    controlUrls: [d.httpUrl],
    identity: id,
  });
  closers.push(() => b.close());
  return b;
}

/** Sends `frame` to a persisted room's append service, raw, under a fresh append id. */
export function appendRaw(nc: NatsConnection, roomId: string, frame: Uint8Array): void {
  const h = natsHeaders();
  h.set(APPEND_ID_HEADER, randomBytes(16).toString('hex'));
  nc.publish(appendSubject(roomId), frame, { headers: h });
}

/** Collects the append service's answers to `signPubHex` on a raw connection. */
export async function appendAnswers(
  nc: NatsConnection,
  signPubHex: string
): Promise<Array<{ ok: boolean; code?: string }>> {
  const answers: Array<{ ok: boolean; code?: string }> = [];
  nc.subscribe(appendResultSubject(signPubHex, '*'), {
    callback: (_e, m) => void answers.push(JSON.parse(new TextDecoder().decode(m.data))),
  });
  await nc.flush();
  return answers;
}

/**
 * The connections nats-server holds for a NATS user key, asked of the server
 * itself (CONNZ filtered by user, over the node's system-account key): the
 * ground truth a client's own view of its socket cannot give. `authorised`
 * counts those in account APP, where the callout puts a user it let in;
 * `pending` those still waiting for the callout's answer (no account yet).
 */
export async function serverConnectionsOf(
  d: TestDaemon,
  natsPub: string
): Promise<{ authorised: number; pending: number }> {
  const users = nodeUsers(await loadIdentity(join(d.dataDir, 'internal.id')));
  const sys = await connect({
    servers: d.natsUrl,
    authenticator: nkeyAuthenticator(users.system.getSeed()),
  });
  try {
    const m = await sys.request(
      '$SYS.REQ.SERVER.PING.CONNZ',
      new TextEncoder().encode(JSON.stringify({ user: natsPub, auth: true, limit: 100_000 })),
      { timeout: 5_000 }
    );
    const r = JSON.parse(new TextDecoder().decode(m.data)) as {
      data?: { connections?: Array<{ account?: string }> };
    };
    const conns = r.data?.connections;
    if (!Array.isArray(conns)) throw new Error('CONNZ answered without connections');
    const authorised = conns.filter((c) => c.account === 'APP').length;
    return { authorised, pending: conns.length - authorised };
  } finally {
    await sys.close();
  }
}
