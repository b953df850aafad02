import type { NatsConnection } from 'nats';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Connections asked for per CONNZ page. */
export const CONNZ_PAGE = 1_024;

interface ConnzReply {
  server?: { id?: string };
  data?: { total?: number; connections?: Array<{ cid: number }> };
}

export interface KickOptions {
  /**
   * How many servers answer (the cluster's size): collection ends as soon as
   * that many have; a server that is down costs `waitMs`, and delays only
   * itself (each answer is acted on as it arrives).
   */
  servers?: number;
  /** The longest the CONNZ ping waits for answers (default 2 s). */
  waitMs?: number;
  /**
   * A revocation: every connection of the user goes, also one made while
   * the kick runs (its reconnect is refused anyway), and each server is
   * listed once more after the kicks even if it had none. Otherwise (a
   * member removal) connections newer than the first listing are spared:
   * they were authorised after the change.
   */
  all?: boolean;
}

function parse(data: Uint8Array): ConnzReply | null {
  try {
    return JSON.parse(dec.decode(data)) as ConnzReply;
  } catch {
    return null; // a malformed reply names nothing to kick
  }
}

/** How many nats-servers answer a system ping within `waitMs` (distinct server ids). */
export async function countServers(sys: NatsConnection, waitMs = 1_000): Promise<number> {
  const ids = new Set<string>();
  const replies = await sys.requestMany('$SYS.REQ.SERVER.PING', new Uint8Array(), {
    maxWait: waitMs,
  });
  for await (const m of replies) {
    const id = parse(m.data)?.server?.id;
    if (id) ids.add(id);
  }
  return ids.size;
}

/**
 * Disconnects every live connection of one user on every server: a CONNZ
 * ping filtered by user name (the user JWT's name is the client's nkey)
 * answered by each server, each server's further pages asked of it until
 * its total is read, then a KICK per connection id on the server that holds
 * it. The client's next connect goes through the callout again.
 */
export async function kickUser(
  sys: NatsConnection,
  nkey: string,
  logger: Logger,
  o: KickOptions = {},
  metrics?: Pick<Metrics, 'kicked'>
): Promise<number> {
  const query = (offset: number) =>
    enc.encode(JSON.stringify({ user: nkey, auth: true, offset, limit: CONNZ_PAGE }));
  const seen = new Set<string>();
  // Distinct connections kicked: a kicked connection can still be listed
  // for a moment (the server closes it asynchronously) and be kicked again.
  const gone = new Set<string>();
  const kick = async (server: string, cids: number[]) => {
    for (const c of cids) seen.add(`${server}/${c}`);
    // Bounded fan-out: a user with thousands of connections is kicked in waves.
    for (let i = 0; i < cids.length; i += 256) {
      await Promise.all(
        cids.slice(i, i + 256).map(async (cid) => {
          try {
            await sys.request(
              `$SYS.REQ.SERVER.${server}.KICK`,
              enc.encode(JSON.stringify({ cid })),
              { timeout: 2_000 }
            );
            gone.add(`${server}/${cid}`);
          } catch (err) {
            logger.warn({ nkey, server, cid, err: (err as Error).message }, 'kick failed');
          }
        })
      );
    }
  };
  // Every connection of the user on one server, page by page from `offset`.
  const list = async (server: string, offset: number, have: number[]): Promise<number[]> => {
    const out = [...have];
    for (let at = offset; ;) {
      let page: number[];
      let total: number;
      try {
        const p = await sys.request(`$SYS.REQ.SERVER.${server}.CONNZ`, query(at), {
          timeout: 2_000,
        });
        const r = parse(p.data);
        page = (r?.data?.connections ?? []).map((c) => c.cid);
        total = r?.data?.total ?? 0;
      } catch (err) {
        logger.warn({ nkey, server, offset: at, err: (err as Error).message }, 'CONNZ failed');
        return out;
      }
      out.push(...page);
      at += page.length;
      if (page.length === 0 || at >= total) return out;
    }
  };
  // Each server's connections are kicked as soon as its answer arrives (a
  // server that is down delays nobody else). The list is read whole before
  // kicking (kicks would shift its pages), then read again: anything that
  // was there at the first read and is still there is kicked again (at most
  // three rounds). Connections made since (a higher cid: a removed member
  // back with its reduced permissions) are left alone.
  const work: Array<Promise<void>> = [];
  const replies = await sys.requestMany('$SYS.REQ.SERVER.PING.CONNZ', query(0), {
    maxWait: o.waitMs ?? 2_000,
    ...(o.servers ? { maxMessages: o.servers } : {}),
  });
  for await (const m of replies) {
    const r = parse(m.data);
    const id = r?.server?.id;
    if (!r || !id) continue;
    const first = (r.data?.connections ?? []).map((c) => c.cid);
    const total = r.data?.total ?? first.length;
    work.push(
      (async () => {
        const cids = total > first.length ? await list(id, first.length, first) : first;
        if (cids.length === 0 && !o.all) return;
        let newest = 0;
        for (const c of cids) if (c > newest) newest = c;
        let todo = [...new Set(cids)];
        for (let round = 0; round < 3; round++) {
          if (todo.length > 0) await kick(id, todo);
          else if (!o.all || round > 0) break;
          // A connection authorised just before a revocation may register
          // after the first listing: a revocation always looks once more.
          if (o.all && round === 0) await new Promise((r) => setTimeout(r, 250));
          const now = await list(id, 0, []);
          todo = o.all ? now : now.filter((c) => c <= newest);
        }
        if (todo.length > 0)
          logger.warn({ nkey, server: id, left: todo.length }, 'connections survived three kicks');
      })()
    );
  }
  await Promise.all(work);
  const kicked = gone.size;
  metrics?.kicked(kicked);
  if (seen.size) logger.info({ nkey, connections: seen.size, kicked }, 'kicked connections');
  return kicked;
}
