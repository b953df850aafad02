// A cluster whose nodes hold different callout keys fails connections on
// the healthy nodes too (the callout's queue group spans the cluster). The
// daemon that cannot read a request now says why, and names both keys.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ControlClient } from '@sealbus/client';
import { runMembershipd, startDaemon, tempDir } from '@sealbus/testing';
import { adminOf, enrol, natsAs } from './helpers.js';

describe('callout key mismatch', { timeout: 120_000 }, () => {
  test('a daemon holding another callout.key than its nats-server names the mismatch, once per interval', async () => {
    await using a = await startDaemon();
    await using dir = await tempDir();
    const key = join(dir.path, 'other-callout.key');
    const mk = await runMembershipd(['callout-key', 'new', key]);
    assert.equal(mk.code, 0, mk.stderr);
    // A second daemon on the same nats-server (as a second node would be),
    // with a callout key of its own: it shares the callout's queue group.
    await using b = await startDaemon({
      dataDir: join(dir.path, 'b'),
      args: [
        '--nats-url',
        a.natsUrl,
        '--internal-id-file',
        join(a.dataDir, 'internal.id'),
        '--callout-key-file',
        key,
        '--log-level',
        'info',
      ],
    });
    const admin = new ControlClient({ urls: [a.httpUrl], identity: await adminOf(a) });
    try {
      const { id } = await enrol(admin, a, 'connects');
      // Some of these land on b, which cannot read them (they time out).
      const results = await Promise.allSettled(
        Array.from({ length: 12 }, () => natsAs(a, id, { timeout: 20_000 }))
      );
      for (const r of results) if (r.status === 'fulfilled') await r.value.close();
      const said = b.logs.filter((l) => /callout\.key differs between nodes/.test(l.msg));
      assert.ok(said.length >= 1, `b said: ${b.logs.map((l) => l.msg).join(' | ')}`);
      assert.ok(said.length <= 3, `${said.length} lines: one per interval, the rest counted`);
      const first = said[0]!;
      assert.match(String(first.server_xkey), /^X[A-Z2-7]{55}$/);
      assert.match(String(first.this_node_xkey), /^X[A-Z2-7]{55}$/);
      assert.notEqual(first.server_xkey, first.this_node_xkey);
      assert.ok(
        results.some((r) => r.status === 'rejected'),
        'connections failed while the keys differ'
      );
    } finally {
      admin.close();
    }
  });
});
