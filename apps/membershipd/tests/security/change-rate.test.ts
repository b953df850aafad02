// Attack replay (second cold review of issue 10): a member created and
// deleted a room in a loop, 300 audit records (139 KB) in 4.6 s, ~2.6 GB a
// day, in an audit stream no one may trim. Changes by keys that are not
// admins are now rate limited per key.
import { signedCtl } from '../author.js';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateIdentity } from '@sealbus/crypto';
import { ControlClient, ControlError } from '@sealbus/client';
import type { MembershipStore } from '@sealbus/store';
import { startDaemon, type TestDaemon } from '@sealbus/testing';
import type { NatsConnection } from 'nats';
import { adminOf, enrol, nodeStore } from '../helpers.js';

describe('changes are rate limited per key', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let admin: ControlClient;
  let store: MembershipStore;
  let nc: NatsConnection;
  before(async () => {
    d = await startDaemon({ args: ['--changes-per-minute', '20'] });
    admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    ({ store, nc } = await nodeStore(d));
  });
  after(async () => {
    admin?.close();
    await nc?.close();
    await d?.dispose();
  });

  test('a member creating and deleting rooms in a loop is stopped at its budget; reads and admins go on', async () => {
    const { id: m, ctl: retrying } = await enrol(admin, d, 'churn');
    // Counting each refusal: no waiting out Retry-After here.
    const ctl = new ControlClient({ urls: [d.httpUrl], identity: m, retryRateLimited: false });
    const before = (await store.audit.tail(100_000)).length;
    let done = 0;
    let limited: ControlError | undefined;
    for (let i = 0; i < 100 && !limited; i++) {
      try {
        const r = await signedCtl(ctl, m).createRoom({
          subject: `churn.${i}`,
          policy: { encrypt: false, persist: false, sign: false },
        });
        done++;
        await ctl.deleteRoom(r.id);
        done++;
      } catch (err) {
        limited = err as ControlError;
      }
    }
    assert.ok(limited, 'never limited');
    assert.deepEqual([limited.status, limited.code], [429, 'RATE_LIMITED']);
    assert.ok(done >= 20 && done <= 22, `${done} changes went through`);
    // The SDK's default waits out the Retry-After (3 s at 20 a minute) once, and gets through.
    const t0 = Date.now();
    const r = await signedCtl(retrying, m).createRoom({
      subject: 'churn.after',
      policy: { encrypt: false, persist: false, sign: false },
    });
    assert.ok(r.id);
    assert.ok(Date.now() - t0 >= 1_000, `through in ${Date.now() - t0} ms: it waited`);
    done++;
    ctl.close();
    // Reads are not changes; an admin is not limited.
    assert.equal((await ctl.me()).sign_pub, m.signPubHex);
    for (let i = 0; i < 25; i++)
      await admin.addUser({
        sign_pub: generateIdentity().signPubHex,
        handle: `a${i}`,
        role: 'member',
      });
    const added = (await store.audit.tail(100_000)).slice(before);
    const fromMember = added.filter((r) => r.actor === m.signPubHex);
    assert.ok(fromMember.length <= done + 25, `${fromMember.length} records from the member`);
  });
});
