import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import {
  encodePublicIdentity,
  generateIdentity,
  natsUserKey,
  parsePublicIdentity,
  saveIdentity,
} from '@sealbus/crypto';
import { runMembershipd, startDaemon, tempDir, type TestDaemon } from '@sealbus/testing';

/** A token whose kex_pub was changed after signing: its binding no longer holds. */
const TAMPERED = (() => {
  const raw = Buffer.from(encodePublicIdentity(generateIdentity()).slice(6), 'base64url');
  raw[40]! ^= 1;
  return 'sbid1.' + raw.toString('base64url');
})();

const KEY_A = 'aa'.repeat(32);
const KEY_B = 'bb'.repeat(32);
const KEX = 'cc'.repeat(32);

describe('membershipd user, against a running daemon', { timeout: 180_000 }, () => {
  let d: TestDaemon;
  const user = (...args: string[]) => runMembershipd(['user', ...args, '--data', d.dataDir]);
  const listJson = async () => {
    const r = await user('list', '-o', 'json');
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Array<Record<string, unknown>>;
  };

  before(async () => {
    d = await startDaemon();
  });
  after(async () => {
    await d?.dispose();
  });

  test('add registers an active user and reports replication', async () => {
    const r = await user(
      'add',
      '--handle',
      'alice',
      '--sign-pub',
      KEY_A.toUpperCase(),
      '--kex-pub',
      KEX,
      '--role',
      'member'
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`added user alice \\(${KEY_A}\\) role=member`));
    assert.match(r.stdout, /users bucket: replicas 1\/1 current, leader \S+/);
    const row = (await listJson()).find((u) => u.sign_pub === KEY_A);
    assert.deepEqual(
      { ...row, created_at: typeof row?.created_at },
      {
        sign_pub: KEY_A,
        kex_pub: KEX,
        nats_pub: null,
        binding: null,
        bound: false,
        handle: 'alice',
        role: 'member',
        status: 'active',
        created_at: 'string',
        revoked_at: null,
        expires_at: null,
      }
    );
  });

  test('list prints a table with every user and JSON with the documented fields', async () => {
    const table = await user('list');
    assert.equal(table.code, 0);
    const lines = table.stdout.trim().split('\n');
    assert.match(
      lines[0]!,
      /^SIGN_PUB\s+HANDLE\s+ROLE\s+STATUS\s+BOUND\s+NATS_PUB\s+CREATED\s+REVOKED\s+EXPIRES$/
    );
    assert.ok(
      lines.some((l) => l.startsWith(KEY_A) && /\balice\b.*\bmember\b.*\bactive\b/.test(l))
    );
    for (const u of await listJson()) {
      assert.deepEqual(Object.keys(u).sort(), [
        'binding',
        'bound',
        'created_at',
        'expires_at',
        'handle',
        'kex_pub',
        'nats_pub',
        'revoked_at',
        'role',
        'sign_pub',
        'status',
      ]);
    }
  });

  test('re-adding a registered key exits 1 and leaves the row untouched', async () => {
    const before = (await listJson()).find((u) => u.sign_pub === KEY_A);
    const r = await user('add', '--handle', 'mallory', '--sign-pub', KEY_A, '--role', 'admin');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /already registered \(unchanged\)/);
    assert.deepEqual(
      (await listJson()).find((u) => u.sign_pub === KEY_A),
      before
    );
  });

  test('bad input exits 2 with a clear message and writes nothing', async () => {
    const count = (await listJson()).length;
    const cases: Array<[string[], RegExp]> = [
      [
        ['add', '--handle', 'x', '--sign-pub', 'abc', '--role', 'member'],
        /sign_pub: must be 64 hex characters/,
      ],
      [
        ['add', '--handle', 'x', '--sign-pub', 'zz'.repeat(32), '--role', 'member'],
        /sign_pub: must contain only hex/,
      ],
      [
        ['add', '--handle', 'x', '--sign-pub', KEY_B, '--kex-pub', '12', '--role', 'member'],
        /kex_pub: must be 64 hex/,
      ],
      [
        ['add', '--handle', 'x', '--sign-pub', KEY_B, '--role', 'root'],
        /Allowed choices are admin, member/,
      ],
      [
        ['add', '--handle', 'two words', '--sign-pub', KEY_B, '--role', 'member'],
        /handle: may contain/,
      ],
      [['add', '--sign-pub', KEY_B, '--role', 'member'], /required option '--handle <handle>'/],
      [['add', '--handle', 'x', '--sign-pub', KEY_B], /required option '--role <role>'/],
      [['add', '--handle', 'x', '--role', 'member'], /exactly one of --public/],
      [
        ['add', '--handle', 'x', '--sign-pub', KEY_B, '--public', 'sbid1.x', '--role', 'member'],
        /exactly one of --public/,
      ],
      [
        ['add', '--handle', 'x', '--public', 'sbid1.short', '--role', 'member'],
        /--public: .*base64url/,
      ],
      [['add', '--handle', 'x', '--public', TAMPERED, '--role', 'member'], /binding/],
      [['revoke', 'nothex'], /sign_pub: must be 64 hex/],
      [['list', '--nats-url', 'nats://192.0.2.10:4222'], /refusing non-loopback NATS URL/],
      [['list', '-o', 'yaml'], /Allowed choices are table, json/],
    ];
    for (const [args, message] of cases) {
      const r = await user(...args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(' '));
    }
    assert.equal((await listJson()).length, count);
  });

  test('identity public prints the token, -o json its fields; nats-seed the derived seed with a warning', async () => {
    const dir = await tempDir('sealbus-idcli-');
    try {
      const file = join(dir.path, 'carol.id');
      const id = generateIdentity();
      await saveIdentity(file, id);
      const pub = await runMembershipd(['identity', 'public', file]);
      assert.equal(pub.code, 0, pub.stderr);
      const token = pub.stdout.trim();
      assert.equal(token, encodePublicIdentity(id));
      assert.equal(parsePublicIdentity(token).natsPubHex, id.natsPubHex);
      const json = await runMembershipd(['identity', 'public', file, '-o', 'json']);
      assert.deepEqual(JSON.parse(json.stdout), {
        sign_pub: id.signPubHex,
        kex_pub: id.kexPubHex,
        nats_pub: id.natsPubHex,
        binding: parsePublicIdentity(token).bindingHex,
        token,
      });
      const seed = await runMembershipd(['identity', 'nats-seed', file]);
      assert.equal(seed.code, 0, seed.stderr);
      assert.equal(seed.stdout.trim(), natsUserKey(id).seed);
      assert.match(seed.stderr, /SECRET/);
      assert.ok(!seed.stderr.includes(natsUserKey(id).seed), 'the seed is on stdout only');
      const show = await runMembershipd(['identity', 'show', file, '-o', 'json']);
      assert.equal(JSON.parse(show.stdout).nats_pub, id.natsPubHex);
    } finally {
      await dir.remove();
    }
  });

  test('user add --public and --identity register bound users', async () => {
    const dir = await tempDir('sealbus-idcli-');
    try {
      const carol = generateIdentity();
      const r = await user(
        'add',
        '--handle',
        'carol',
        '--public',
        encodePublicIdentity(carol),
        '--role',
        'member'
      );
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`bound nats_pub=${carol.natsPubHex}`));
      const dave = generateIdentity();
      const daveFile = join(dir.path, 'dave.id');
      await saveIdentity(daveFile, dave);
      const r2 = await user('add', '--handle', 'dave', '--identity', daveFile, '--role', 'guest');
      assert.equal(r2.code, 0, r2.stderr);
      const rows = await listJson();
      for (const [who, u] of [
        [carol, rows.find((x) => x.sign_pub === carol.signPubHex)],
        [dave, rows.find((x) => x.sign_pub === dave.signPubHex)],
      ] as const) {
        assert.equal(u?.bound, true);
        assert.equal(u?.nats_pub, who.natsPubHex);
        assert.equal(u?.kex_pub, who.kexPubHex);
        assert.match(String(u?.binding), /^[0-9a-f]{128}$/);
      }
    } finally {
      await dir.remove();
    }
  });

  test('user lookup finds a user by its U… NATS key (text and -o json), names a sign key as one, exits 1 for an unknown key and 2 for a malformed one', async () => {
    // What nats-server and the denial logs show is the U… nkey.
    const erin = generateIdentity();
    const r = await user(
      'add',
      '--handle',
      'erin',
      '--public',
      encodePublicIdentity(erin),
      '--role',
      'member'
    );
    assert.equal(r.code, 0, r.stderr);
    const nkey = natsUserKey(erin).publicKey;
    const found = await user('lookup', nkey);
    assert.equal(found.code, 0, found.stderr);
    assert.match(found.stdout, new RegExp(`^${erin.signPubHex}\\s+erin\\b`, 'm'));
    const foundJson = JSON.parse((await user('lookup', nkey, '-o', 'json')).stdout);
    assert.deepEqual([foundJson.match, foundJson.user.sign_pub], ['user', erin.signPubHex]);
    const bySignKey = await user('lookup', erin.signPubHex);
    assert.equal(bySignKey.code, 0, bySignKey.stderr);
    assert.match(bySignKey.stdout, /is erin's sign key, not a NATS key/);
    const stranger = await user('lookup', natsUserKey(generateIdentity()).publicKey);
    assert.equal(stranger.code, 1);
    assert.match(stranger.stderr, /no user has the NATS key/);
    const junk = await user('lookup', 'Unot-a-key');
    assert.equal(junk.code, 2);
    assert.match(junk.stderr, /not a NATS user public key/);
  });

  test('revoke flips status; again is a no-op; an unknown key exits 1', async () => {
    assert.equal(
      (await user('add', '--handle', 'bob', '--sign-pub', KEY_B, '--role', 'admin')).code,
      0
    );
    const r = await user('revoke', KEY_B);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /revoked user bob/);
    const row = (await listJson()).find((u) => u.sign_pub === KEY_B)!;
    assert.equal(row.status, 'revoked');
    assert.match(String(row.revoked_at), /^\d{4}-\d\d-\d\dT/);
    assert.equal(row.role, 'admin', 'revoke changes nothing but the status');
    const again = await user('revoke', KEY_B);
    assert.equal(again.code, 0);
    assert.match(again.stdout, /already revoked .* \(unchanged\)/);
    assert.equal((await listJson()).find((u) => u.sign_pub === KEY_B)!.revoked_at, row.revoked_at);
    const unknown = await user('revoke', 'dd'.repeat(32));
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no user with sign_pub d{64}/);
  });

  test('without a node identity, or with the node down, the CLI fails clearly and promptly', async () => {
    await using empty = await tempDir();
    const r = await runMembershipd(['user', 'list', '--data', empty.path]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no internal identity at .*internal\.id/);

    const down = await runMembershipd([
      'user',
      'list',
      '--data',
      d.dataDir,
      '--nats-url',
      'nats://127.0.0.1:1',
      '--timeout',
      '10s',
    ]);
    assert.equal(down.code, 1);
    assert.match(down.stderr, /cannot connect to NATS at nats:\/\/127\.0\.0\.1:1/);
  });
});
