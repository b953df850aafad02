// D-25 (deploy/cluster/README.md §5): a node asked for a different replica
// count than an existing bucket has logs it and keeps the bucket as it is.
// Against a real nats-server: a store opened at 1 replica, then opened again
// asking for 3 (what a node started with --replicas 3 would ask).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'nats';
import { startNats } from '@sealbus/testing';
import { MembershipStore } from './store.js';

test('D-25: opening existing buckets with another replica count logs each and keeps it (the store still works)', async () => {
  await using nats = await startNats();
  const nc = await connect({ servers: nats.url });
  try {
    const first = await MembershipStore.open(nc, { replicas: 1 });
    await first.addUser({ sign_pub: 'ab'.repeat(32), handle: 'd25', role: 'member' });
    const warned: Array<{ bucket?: string; have?: number; want?: number; msg: string }> = [];
    const again = await MembershipStore.open(nc, {
      replicas: 3,
      logger: {
        info: () => {},
        warn: (o: object, msg: string) => warned.push({ ...o, msg }),
      },
    });
    const jsm = await nc.jetstreamManager();
    const streams: string[] = [];
    for await (const si of jsm.streams.list()) {
      if (!si.config.name.startsWith('KV_sealbus_')) continue;
      streams.push(si.config.name);
      assert.equal(si.config.num_replicas, 1, `${si.config.name} kept at 1 replica`);
    }
    assert.ok(streams.length >= 5, `buckets: ${streams.join(', ')}`);
    const mismatch = warned.filter(
      (w) => w.msg === 'bucket exists with a different replica count; keeping it as it is'
    );
    assert.ok(mismatch.length >= 5, JSON.stringify(warned));
    for (const w of mismatch) assert.deepEqual([w.have, w.want], [1, 3]);
    assert.equal((await again.getUser('ab'.repeat(32)))?.handle, 'd25');
  } finally {
    await nc.close();
  }
});
