// A revocation cuts every connection of the user: the kick pages CONNZ
// until each server's total is read (0.1 asked for 1,024 and waited a
// fixed 250 ms, so a user with more connections kept the rest).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { NatsConnection } from 'nats';
import { ControlClient } from '@sealbus/client';
import { startDaemon, waitFor } from '@sealbus/testing';
import { adminOf, enrol, natsAs } from './helpers.js';

describe('kick: every connection of a user', { timeout: 300_000 }, () => {
  test('a revoke cuts all 1,100 connections of one user (more than a CONNZ page)', async () => {
    await using d = await startDaemon({ args: ['--log-level', 'info'] });
    const admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    try {
      const { id } = await enrol(admin, d, 'many');
      const N = 1_100;
      const conns: NatsConnection[] = [];
      while (conns.length < N) {
        const n = Math.min(50, N - conns.length);
        conns.push(...(await Promise.all(Array.from({ length: n }, () => natsAs(d, id)))));
      }
      let open = N;
      for (const nc of conns) void nc.closed().then(() => open--);
      // A bystander of the same daemon keeps its connection.
      const { id: other } = await enrol(admin, d, 'bystander');
      const keep = await natsAs(d, other);
      const t0 = Date.now();
      await admin.revokeUser(id.signPubHex);
      await waitFor(() => open === 0, {
        timeoutMs: 60_000,
        intervalMs: 50,
        what: `all ${N} connections closed`,
      }).catch((err: Error) => {
        throw new Error(`${err.message}: ${open} still open`);
      });
      const took = Date.now() - t0;
      assert.ok(took < 30_000, `took ${took} ms`);
      const rec = d.logs.find((l) => l.msg === 'kicked connections');
      assert.ok(rec, 'the kick is logged');
      // At least the N. CI once logged 1,128 distinct connection ids for
      // these 1,100 (clients that never reconnect, under heavy load); the
      // cause is not found yet (an open question in issue 15's note). The
      // promise is asserted above: every one of the N closed, the bystander
      // kept.
      assert.ok((rec.connections as number) >= N, `${String(rec.connections)} listed`);
      assert.ok((rec.kicked as number) >= N, `${String(rec.kicked)} kicked`);
      assert.equal(keep.isClosed(), false, 'the bystander stays');
      await keep.close();
      console.log(`# ${N} connections of one user cut ${took} ms after the revoke`);
    } finally {
      admin.close();
    }
  });
});
