import assert from 'node:assert/strict';
import http from 'node:http';
import type { NatsConnection } from 'nats';
import { ControlClient, Sealbus, type RejectedFrame, type RoomMessage } from '@sealbus/client';
import { openRoomKey } from '@sealbus/client/internal';
import type { Identity } from '@sealbus/crypto';
import { userEventsSubject } from '@sealbus/protocol';
import type { MembershipStore } from '@sealbus/store';
import { freePort, startDaemon, type TestDaemon } from '@sealbus/testing';
import { adminOf, enrol, nodeStore } from '../helpers.js';

/** A request as the lying control plane sees it; `asker` is the signer's keyid. */
export type Q = { method: string; path: string; query: URLSearchParams; asker: string | undefined };
export type Answer = { status: number; body: unknown };

/**
 * A control plane that lies: an HTTP proxy in front of membershipd that
 * forwards every request as it came (the SDK's signature covers the
 * proxy's name, which the daemon accepts with `--authority`) and may answer
 * a request itself (`intercept`, which sees the request body) or rewrite
 * any JSON answer (`lie`).
 */
export class LyingProxy {
  readonly #server: http.Server;
  readonly #target: URL;
  intercept: ((q: Q, reqBody: any) => Answer | undefined) | undefined;
  lie: ((q: Q, body: any) => any) | undefined;
  /** Every request, `METHOD path?query`, in order (what the SDK fetched). */
  readonly asked: string[] = [];

  private constructor(target: string) {
    this.#target = new URL(target);
    this.#server = http.createServer((req, res) => this.#forward(req, res));
  }

  static async start(target: string, port: number): Promise<LyingProxy> {
    const p = new LyingProxy(target);
    await new Promise<void>((r) => p.#server.listen(port, '127.0.0.1', r));
    return p;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as { port: number }).port}`;
  }

  #forward(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      this.asked.push(`${req.method} ${req.url}`);
      const u = new URL(req.url ?? '/', 'http://x');
      const keyid = /keyid="([0-9a-f]+)"/.exec(String(req.headers['signature-input'] ?? ''))?.[1];
      const q: Q = {
        method: req.method ?? 'GET',
        path: u.pathname,
        query: u.searchParams,
        asker: keyid,
      };
      const raw = Buffer.concat(chunks);
      if (this.intercept) {
        let reqBody: unknown;
        try {
          reqBody = raw.length ? JSON.parse(raw.toString('utf8')) : undefined;
        } catch {
          reqBody = undefined;
        }
        const a = this.intercept(q, reqBody);
        if (a) {
          const out = Buffer.from(JSON.stringify(a.body));
          res.writeHead(a.status, {
            'content-type': 'application/json',
            'content-length': String(out.length),
          });
          res.end(out);
          return;
        }
      }
      const up = http.request(
        {
          host: this.#target.hostname,
          port: this.#target.port,
          method: req.method,
          path: req.url,
          headers: req.headers,
          agent: false,
        },
        (ur) => {
          const body: Buffer[] = [];
          ur.on('data', (c: Buffer) => body.push(c));
          ur.on('end', () => {
            let out = Buffer.concat(body);
            const headers = { ...ur.headers };
            if (this.lie && /json/.test(String(ur.headers['content-type']))) {
              try {
                const changed = this.lie(q, JSON.parse(out.toString('utf8')));
                if (changed !== undefined) out = Buffer.from(JSON.stringify(changed));
              } catch {
                /* an answer the lie cannot read passes as it is */
              }
            }
            headers['content-length'] = String(out.length);
            delete headers['transfer-encoding'];
            res.writeHead(ur.statusCode ?? 502, headers);
            res.end(out);
          });
        }
      );
      up.on('error', () => {
        res.writeHead(502);
        res.end();
      });
      up.end(raw);
    });
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise((r) => this.#server.close(r));
  }
}

type BusOptions = Partial<Parameters<typeof Sealbus.connect>[0]>;

/**
 * A daemon with a lying proxy in front of it, and what the tests of a lying
 * control plane do with them: enrol users, clients through the proxy
 * (`lied`) or straight to the daemon (`honest`), read keys and messages,
 * and send a user an event as the daemon would (`tell`).
 */
export async function lyingHarness() {
  const port = await freePort();
  const d: TestDaemon = await startDaemon({ args: ['--authority', `127.0.0.1:${port}`] });
  const proxy = await LyingProxy.start(d.httpUrl, port);
  const admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
  const n = await nodeStore(d);
  const store: MembershipStore = n.store;
  const app: NatsConnection = n.app;
  const closers: Array<() => Promise<unknown> | void> = [() => n.nc.close(), () => n.app.close()];

  const bus = async (id: Identity, url: string, o: BusOptions = {}) => {
    const b = await Sealbus.connect({
      natsServers: [d.natsUrl],
      controlUrls: [url],
      identity: id,
      ...o,
    });
    closers.push(() => b.close());
    return b;
  };
  const ctlOf = (id: Identity) => {
    const c = new ControlClient({ urls: [d.httpUrl], identity: id });
    closers.push(() => c.close());
    return c;
  };
  return {
    d,
    proxy,
    admin,
    store,
    app,
    user: async (handle: string) => (await enrol(admin, d, handle)).id,
    lied: (id: Identity, o: BusOptions = {}) => bus(id, proxy.url, o),
    honest: (id: Identity, o: BusOptions = {}) => bus(id, d.httpUrl, o),
    ctlOf,
    async keyOf(id: Identity, room: string, epoch: number) {
      const k = (await ctlOf(id).myKeys(room)).keys.find((x) => x.epoch === epoch);
      assert.ok(k, `a key of epoch ${epoch}`);
      return openRoomKey(k.sealed_key, id);
    },
    async collect(b: Sealbus, room: string, o: { from?: 'start' | 'new' } = {}) {
      const got: RoomMessage[] = [];
      const rejected: RejectedFrame[] = [];
      b.on('rejected', (r) => r.room === room && rejected.push(r));
      await b.subscribe(room, (m) => void got.push(m), o);
      return { got, rejected };
    },
    /** What the daemon (the only publisher there) may tell a user on its events subject. */
    async tell(to: Identity, ev: Record<string, unknown>) {
      app.publish(userEventsSubject(to.signPubHex), new TextEncoder().encode(JSON.stringify(ev)));
      await app.flush();
    },
    async dispose() {
      for (const c of closers.reverse()) await Promise.resolve(c()).catch(() => {});
      admin.close();
      await proxy.close();
      await d.dispose();
    },
  };
}

export type LyingHarness = Awaited<ReturnType<typeof lyingHarness>>;
