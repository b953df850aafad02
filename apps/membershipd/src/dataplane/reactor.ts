import { randomBytes } from 'node:crypto';
import type { NatsConnection, Subscription } from 'nats';
import { fromHex, userNkeyFromPublic } from '@sealbus/crypto';
import { userEventsSubject } from '@sealbus/protocol';
import type { MembershipStore } from '@sealbus/store';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { countServers, kickUser } from './kick.js';

/** When a revocation looks again for late connections: the last after the auth timeout (12 s). */
export const REVOKE_SWEEPS_MS = [1_000, 3_000, 7_000, 14_000] as const;

/**
 * A control-plane change that the data plane must act on. Writers (HTTP
 * handlers, `membershipd user` on a node) announce it on an internal
 * subject that no user may touch; exactly one daemon of the deployment
 * (queue group) acts on it.
 */
export type Change =
  | { type: 'user.revoked'; sign_pub: string }
  | { type: 'member.added'; room: string; sign_pub: string }
  | {
      type: 'member.removed';
      room: string;
      sign_pub: string;
      /** Why, for the member's SDK: removed by the owner (default), the room deleted, or left out at a rekey (revoked or expired). */
      reason?: 'removed' | 'deleted' | 'left out';
    }
  | { type: 'room.rekeyed'; room: string; epoch: number }
  /** A member of an encrypted room was revoked or expired: its owner should rotate the key. */
  | { type: 'rekey.needed'; room: string; owner: string };

export const CHANGE_SUBJECT = 'sealbus.ctl.change';
const REACTOR_QUEUE = 'sealbus.reactor';
const enc = new TextEncoder();
const dec = new TextDecoder();

/** Announces a change (flushes, so it is on the wire when this resolves). */
export async function announce(nc: NatsConnection, change: Change): Promise<void> {
  nc.publish(CHANGE_SUBJECT, enc.encode(JSON.stringify(change)));
  await nc.flush();
}

export interface ReactorOptions {
  /** The daemon's internal connection (account SEALBUS): the change subject. */
  nc: NatsConnection;
  /** The daemon's app connection (account APP): events to users. */
  app: NatsConnection;
  /** Told about every change this node sees (local caches), before it is acted on. */
  onChange?: (change: Change) => void;
  /** The system-account connection: CONNZ and KICK. */
  sys: NatsConnection;
  store: MembershipStore;
  logger: Logger;
  /** Counts kicked connections. */
  metrics?: Pick<Metrics, 'kicked'>;
  /** nats-servers expected before the first census (1 alone): a kick stops collecting once all have answered. */
  servers?: number;
}

/**
 * Turns changes into data-plane effects: a revoked user or a removed member
 * is kicked from every server (its reconnect is then denied, or gets the
 * reduced permissions); an added member and the members of a rekeyed room
 * get an event on their own events subject, which the SDK answers by
 * refreshing its connection or fetching the new key; the other members of
 * a room whose membership changed get `room.changed` (they fetch the
 * owner's new statement), and a room's owner gets `rekey.needed` when a
 * member was revoked.
 */
export class Reactor {
  readonly #o: ReactorOptions;
  #sub: Subscription | undefined;
  #all: Subscription | undefined;
  #sweep: NodeJS.Timeout | undefined;
  #census: NodeJS.Timeout | undefined;
  /** nats-servers that answered the last census (a kick waits for that many). */
  #servers: number;
  kicks = 0;

  constructor(o: ReactorOptions) {
    this.#o = o;
    this.#servers = o.servers ?? 1;
  }

  start(): void {
    // How many servers a kick waits for: counted now and every 30 s, so a
    // node that is down costs a kick nothing once it has been missed.
    const census = () =>
      void countServers(this.#o.sys)
        .then((n) => {
          // Never below the configured cluster size: a kick that stopped
          // collecting early would miss a server that came back.
          this.#servers = Math.max(n, this.#o.servers ?? 1);
        })
        .catch(() => {});
    census();
    this.#census = setInterval(census, 30_000);
    this.#census.unref();
    const onChange = this.#o.onChange;
    // Every node hears every change (its own caches); one node acts on it.
    if (onChange)
      this.#all = this.#o.nc.subscribe(CHANGE_SUBJECT, {
        callback: (err, msg) => {
          if (err) return;
          try {
            onChange(JSON.parse(dec.decode(msg.data)) as Change);
          } catch {
            /* not a change */
          }
        },
      });
    this.#sub = this.#o.nc.subscribe(CHANGE_SUBJECT, {
      queue: REACTOR_QUEUE,
      callback: (err, msg) => {
        if (err) return;
        let change: Change;
        try {
          change = JSON.parse(dec.decode(msg.data)) as Change;
        } catch {
          return;
        }
        this.#react(change).catch((e: unknown) =>
          this.#o.logger.warn({ change, err: (e as Error).message }, 'could not act on a change')
        );
      },
    });
  }

  /**
   * Every `intervalMs`, finds memberships that expired in encrypted rooms
   * and marks those rooms for a rekey: the room's owner gets `rekey.needed`
   * (once: every node sweeps, the compare-and-set on the room record lets
   * one of them tell).
   */
  startExpirySweep(intervalMs = 15_000): void {
    const sweep = async () => {
      const now = Date.now();
      for (const m of await this.#o.store.rooms.expiredMemberships(now)) {
        if (m.role === 'owner') continue;
        const room = await this.#o.store.rooms.get(m.room);
        if (!room?.policy.encrypt) continue;
        if (await this.#o.store.rooms.markForRekey(room.id))
          this.#notify(room.owner, { type: 'rekey.needed', room: room.id });
      }
    };
    this.#sweep = setInterval(() => {
      sweep().catch((e: unknown) =>
        this.#o.logger.warn({ err: (e as Error).message }, 'expiry sweep failed')
      );
    }, intervalMs);
    this.#sweep.unref();
  }

  /**
   * A connection whose callout answer was given just before a revocation
   * can register after the kick's last listing: a loaded server may take
   * seconds, up to the auth timeout, between the answer and the connection
   * (a CI run once counted 28 of 160 clients "still open" 5.5 s after a
   * revoke; nats-server's own listing later showed those were clients
   * retrying refused reconnects, not connections). So a revocation looks
   * again, in the background, until every answer given before it has
   * either registered or timed out (the auth timeout, plus a margin).
   */
  #sweepAfterRevoke(signPub: string): void {
    for (const ms of REVOKE_SWEEPS_MS) {
      const t = setTimeout(() => {
        this.#followUps.delete(t);
        this.#kick(signPub, true).catch((e: unknown) =>
          this.#o.logger.warn({ err: (e as Error).message }, 'revocation follow-up kick failed')
        );
      }, ms);
      t.unref();
      this.#followUps.add(t);
    }
  }
  readonly #followUps = new Set<NodeJS.Timeout>();

  async stop(): Promise<void> {
    for (const t of this.#followUps) clearTimeout(t);
    this.#followUps.clear();
    if (this.#sweep) clearInterval(this.#sweep);
    if (this.#census) clearInterval(this.#census);
    await this.#all?.drain().catch(() => {});
    await this.#sub?.drain().catch(() => {});
  }

  #notify(signPub: string, event: Record<string, unknown>): void {
    // `id`: two events alike (two room.changed for one room) are still two
    // messages, which a client renewing its connection tells apart.
    const id = randomBytes(8).toString('hex');
    this.#o.app.publish(userEventsSubject(signPub), enc.encode(JSON.stringify({ ...event, id })));
  }

  async #kick(signPub: string, all = false): Promise<void> {
    // Users connect with their derived NATS key, never the sign key; an
    // unbound user cannot have a connection at all.
    const natsPub = (await this.#o.store.getUser(signPub))?.nats_pub;
    if (!natsPub) return;
    this.kicks += await kickUser(
      this.#o.sys,
      userNkeyFromPublic(fromHex(natsPub, 'nats_pub', 32)),
      this.#o.logger,
      { servers: this.#servers, all },
      this.#o.metrics
    );
  }

  /** The room's other members fetch its new statement (who may send, from now on). */
  async #tellOthers(room: string, except: string): Promise<void> {
    for (const m of await this.#o.store.rooms.members(room))
      if (m.sign_pub !== except) this.#notify(m.sign_pub, { type: 'room.changed', room });
  }

  async #react(c: Change): Promise<void> {
    switch (c.type) {
      case 'user.revoked':
        await this.#kick(c.sign_pub, true);
        this.#sweepAfterRevoke(c.sign_pub);
        return;
      case 'member.added':
        this.#notify(c.sign_pub, { type: 'member.added', room: c.room });
        await this.#tellOthers(c.room, c.sign_pub);
        return;
      case 'member.removed':
        this.#notify(c.sign_pub, {
          type: 'member.removed',
          room: c.room,
          reason: c.reason ?? 'removed',
        });
        await this.#tellOthers(c.room, c.sign_pub);
        await this.#o.app.flush();
        await this.#kick(c.sign_pub);
        return;
      case 'rekey.needed':
        this.#notify(c.owner, { type: 'rekey.needed', room: c.room });
        return;
      case 'room.rekeyed': {
        for (const m of await this.#o.store.rooms.members(c.room)) {
          this.#notify(m.sign_pub, { type: 'room.rekeyed', room: c.room, epoch: c.epoch });
        }
        return;
      }
    }
  }
}
