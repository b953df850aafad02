import type { NatsConnection } from 'nats';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

interface ConnzReply {
  server?: { id?: string };
  data?: { connections?: Array<{ cid: number }> };
}

/**
 * Disconnects every live connection of one user on every server: a CONNZ
 * ping filtered by user name (the user JWT's name is the client's nkey)
 * answered by each server, then a KICK per connection id on the server that
 * holds it. The client's next connect goes through the callout again.
 */
export async function kickUser(
  sys: NatsConnection,
  nkey: string,
  logger: Logger,
  waitMs = 250,
  metrics?: Pick<Metrics, 'kicked'>
): Promise<number> {
  const found: Array<{ server: string; cid: number }> = [];
  const replies = await sys.requestMany(
    '$SYS.REQ.SERVER.PING.CONNZ',
    enc.encode(JSON.stringify({ user: nkey, auth: true, limit: 1024 })),
    { maxWait: waitMs }
  );
  for await (const m of replies) {
    try {
      const r = JSON.parse(dec.decode(m.data)) as ConnzReply;
      for (const c of r.data?.connections ?? [])
        if (r.server?.id) found.push({ server: r.server.id, cid: c.cid });
    } catch {
      // a malformed reply names nothing to kick
    }
  }
  let kicked = 0;
  await Promise.all(
    found.map(async ({ server, cid }) => {
      try {
        await sys.request(`$SYS.REQ.SERVER.${server}.KICK`, enc.encode(JSON.stringify({ cid })), {
          timeout: 2_000,
        });
        kicked++;
      } catch (err) {
        logger.warn({ nkey, server, cid, err: (err as Error).message }, 'kick failed');
      }
    })
  );
  metrics?.kicked(kicked);
  if (found.length) logger.info({ nkey, connections: found.length, kicked }, 'kicked connections');
  return kicked;
}
