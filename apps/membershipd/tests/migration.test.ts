import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateIdentity, identityFromSecrets, type Identity } from '@sealbus/crypto';
import { Sealbus, type RoomMessage } from '@sealbus/client';
import {
  freePorts,
  runMembershipd,
  startDaemon,
  tempDir,
  waitFor,
  type TempDir,
} from '@sealbus/testing';

/**
 * A store made by Sealbus 0.1 (control state in account APP, where users
 * connected): its `membershipd backup` archive and its raw JetStream store,
 * kept as fixtures (tests/fixtures, made by 0.1's own commands). Their users
 * have deterministic identities, re-derived here, so no key sits in git.
 */
const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'tests', 'fixtures');
const det = (name: string): Identity =>
  identityFromSecrets(
    new Uint8Array(createHash('sha256').update(`sealbus-fixture-${name}-sign`).digest()),
    new Uint8Array(createHash('sha256').update(`sealbus-fixture-${name}-kex`).digest())
  );
const FIXTURE = {
  alice: det('alice'),
  bob: det('bob'),
  room: '526b4e40dcbcbc771da7fdd8',
  bobRole: 'reader' as 'writer' | 'reader',
  history: ['one', 'two', 'three'],
};

/** Reads the fixture room's history as `who` (a 0.1 user: unbound until its SDK binds it). */
async function readHistory(d: { natsUrl: string; httpUrl: string }, who: Identity) {
  const bus = await Sealbus.connect({
    natsServers: [d.natsUrl],
    controlUrls: [d.httpUrl],
    identity: who,
  });
  try {
    const got: RoomMessage[] = [];
    const sub = await bus.subscribe(FIXTURE.room, (m) => void got.push(m), { from: 'start' });
    await waitFor(() => got.length >= FIXTURE.history.length, {
      timeoutMs: 15_000,
      what: 'the 0.1 history',
    });
    await sub.stop();
    return got.map((m) => new TextDecoder().decode(m.data));
  } finally {
    await bus.close();
  }
}

/** alice, the fixture room's owner, adopts it: bob is its other member. */
async function adopt(d: { natsUrl: string; httpUrl: string }) {
  const bus = await Sealbus.connect({
    natsServers: [d.natsUrl],
    controlUrls: [d.httpUrl],
    identity: FIXTURE.alice,
  });
  try {
    // The control plane's list must be exactly this: another member is refused.
    await assert.rejects(
      bus.adoptRoom(FIXTURE.room, [
        [FIXTURE.bob.signPubHex, FIXTURE.bobRole],
        [generateIdentity().signPubHex, 'reader'],
      ]),
      { name: 'TrustError', code: 'BAD_STATEMENT' }
    );
    await bus.adoptRoom(FIXTURE.room, [[FIXTURE.bob.signPubHex, FIXTURE.bobRole]]);
  } finally {
    await bus.close();
  }
}

describe(
  'a Sealbus 0.1 store: restored from its archive, or migrated in place',
  { timeout: 300_000 },
  () => {
    let dir: TempDir;
    before(async () => {
      dir = await tempDir('sealbus-migrate-');
    });
    after(async () => {
      await dir?.remove();
    });

    test('an archive made by 0.1 restores into the current layout; its members read their history once its owner signed it', async () => {
      const data = join(dir.path, 'restored');
      const r = await runMembershipd([
        'restore',
        '--data',
        data,
        '--in',
        join(FIXTURES, 'v0.1-backup.tgz'),
        '--allow-unauthenticated',
      ]);
      assert.equal(r.code, 0, r.stderr);
      const d = await startDaemon({ dataDir: data });
      try {
        // A 0.1 room has no owner statement: its members (its owner too)
        // refuse it until the owner (alice) adopts it, naming its members.
        for (const who of [FIXTURE.bob, FIXTURE.alice])
          await assert.rejects(readHistory(d, who), { name: 'TrustError', code: 'NO_STATEMENT' });
        await adopt(d);
        assert.deepEqual(await readHistory(d, FIXTURE.alice), FIXTURE.history);
        assert.deepEqual(await readHistory(d, FIXTURE.bob), FIXTURE.history);
      } finally {
        await d.dispose();
      }
    });

    test('serve refuses a 0.1 data dir and names `membershipd migrate`; migrate rewrites it, keeps the old store, and it serves', async () => {
      const data = join(dir.path, 'inplace');
      await mkdir(join(data, 'nats'), { recursive: true, mode: 0o700 });
      execFileSync('tar', ['-xzf', join(FIXTURES, 'v0.1-store.tgz'), '-C', join(data, 'nats')]);
      const [http, nats] = (await freePorts(2)) as [number, number];
      const refused = await runMembershipd(
        ['serve', '--data', data, '--http', `127.0.0.1:${http}`, '--nats-port', String(nats)],
        { timeoutMs: 30_000 }
      );
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /Sealbus 0\.1 store/);
      assert.match(refused.stderr, /membershipd migrate --data/);
      assert.ok(
        !existsSync(join(data, 'nats', 'jetstream', 'jetstream', 'SEALBUS')),
        'nothing written'
      );

      const m = await runMembershipd(['migrate', '--data', data, '-o', 'json']);
      assert.equal(m.code, 0, m.stderr);
      const report = JSON.parse(m.stdout) as {
        kept: string;
        sections: Array<{ name: string; count: number }>;
      };
      assert.ok(existsSync(report.kept), 'the 0.1 store is kept');
      assert.equal(report.sections.find((s) => s.name === 'sealbus_users')?.count, 3);
      // Twice is refused: there is nothing left to migrate.
      const again = await runMembershipd(['migrate', '--data', data]);
      assert.equal(again.code, 1);
      assert.match(again.stderr, /nothing to migrate/);

      const d = await startDaemon({ dataDir: data });
      try {
        // bob's SDK binds his 0.1 record at connect (a key is sealed only to a bound one).
        await assert.rejects(readHistory(d, FIXTURE.bob), {
          name: 'TrustError',
          code: 'NO_STATEMENT',
        });
        await adopt(d);
        assert.deepEqual(await readHistory(d, FIXTURE.alice), FIXTURE.history);
      } finally {
        await d.dispose();
      }
    });
  }
);
