import { signedCtl } from './author.js';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { AuditRecord } from '@sealbus/protocol';
import { generateIdentity, type Identity } from '@sealbus/crypto';
import { ControlClient, ControlError } from '@sealbus/client';
import { runMembershipd, startDaemon, type TestDaemon } from '@sealbus/testing';
import { adminOf, enrol } from './helpers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('membershipd audit query', { timeout: 180_000 }, () => {
  let d: TestDaemon;
  let admin: Identity;
  let adminCtl: ControlClient;
  let member: { id: Identity; ctl: ControlClient };
  const cliUsers = [generateIdentity(), generateIdentity()];
  const httpUser = generateIdentity();
  /** Between the first and the second batch of records. */
  let mid: string;
  let all: AuditRecord[];

  const audit = (...args: string[]) => runMembershipd(['audit', ...args, '--data', d.dataDir]);
  const query = async (...args: string[]): Promise<AuditRecord[]> => {
    const r = await audit('query', ...args, '-o', 'json');
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as AuditRecord[];
  };

  before(async () => {
    d = await startDaemon();
    admin = await adminOf(d);
    adminCtl = new ControlClient({ urls: [d.httpUrl], identity: admin });
    // First batch: two users added on the node (CLI), one over HTTP by the admin.
    for (const [i, u] of cliUsers.entries()) {
      const r = await runMembershipd([
        'user',
        'add',
        '--data',
        d.dataDir,
        '--handle',
        `cli-${i}`,
        '--sign-pub',
        u.signPubHex,
        '--role',
        'member',
      ]);
      assert.equal(r.code, 0, r.stderr);
    }
    member = await enrol(adminCtl, d, 'member');
    await sleep(1_100);
    mid = new Date().toISOString();
    await sleep(50);
    // Second batch: an HTTP add and revoke by the admin, a denied admin
    // request and a room by the member.
    await adminCtl.addUser({ sign_pub: httpUser.signPubHex, handle: 'http-user', role: 'member' });
    await adminCtl.revokeUser(httpUser.signPubHex);
    await assert.rejects(
      member.ctl.listUsers(),
      (e: unknown) => e instanceof ControlError && e.status === 403
    );
    await signedCtl(member.ctl, member.id).createRoom({
      subject: 'audit.query',
      policy: { encrypt: false, persist: false, sign: true },
    });
    const tail = await audit('tail', '-n', '1000', '-o', 'json');
    assert.equal(tail.code, 0, tail.stderr);
    const records = JSON.parse(tail.stdout) as AuditRecord[];
    // The log opens with admin #0, registered by the first start.
    assert.deepEqual(
      records.slice(0, 2).map((r) => [r.action, r.outcome, r.target, r.detail?.role]),
      [
        ['user.add', 'intent', admin.signPubHex, 'admin'],
        ['user.add', 'ok', admin.signPubHex, 'admin'],
      ]
    );
    all = records;
  });
  after(async () => {
    adminCtl?.close();
    member?.ctl.close();
    await d?.dispose();
  });

  test('the log holds what the operations wrote', () => {
    assert.deepEqual(
      all.slice(2).map((r) => [r.action, r.outcome, r.via]),
      [
        // Each change: its intent before it is made, then its outcome.
        ['user.add', 'intent', 'cli'],
        ['user.add', 'ok', 'cli'],
        ['user.add', 'intent', 'cli'],
        ['user.add', 'ok', 'cli'],
        ['user.add', 'intent', 'http'],
        ['user.add', 'ok', 'http'],
        ['user.add', 'intent', 'http'],
        ['user.add', 'ok', 'http'],
        ['user.revoke', 'intent', 'http'],
        ['user.revoke', 'ok', 'http'],
        ['user.list', 'denied', 'http'],
        ['room.create', 'intent', 'http'],
        ['room.create', 'ok', 'http'],
      ]
    );
    // An intent and its outcome share the request id (admin #0's too).
    for (let i = 0; i < all.length; i++)
      if (all[i]!.outcome === 'intent') assert.equal(all[i + 1]!.request_id, all[i]!.request_id);
  });

  test('--action, --actor, --outcome, --via: exactly the matching records, oldest first', async () => {
    assert.deepEqual(
      (await query('--action', 'user.add', '--outcome', 'ok')).map((r) => r.target),
      [
        admin.signPubHex,
        cliUsers[0]!.signPubHex,
        cliUsers[1]!.signPubHex,
        member.id.signPubHex,
        httpUser.signPubHex,
      ]
    );
    assert.deepEqual(
      (await query('--action', 'user.add', '--outcome', 'intent')).map((r) => r.target),
      [
        admin.signPubHex,
        cliUsers[0]!.signPubHex,
        cliUsers[1]!.signPubHex,
        member.id.signPubHex,
        httpUser.signPubHex,
      ]
    );
    assert.deepEqual(
      await query('--action', 'user.*'),
      all.filter((r) => r.action.startsWith('user.'))
    );
    assert.deepEqual(await query('--action', 'room.member.add'), []);
    assert.deepEqual(
      await query('--actor', admin.signPubHex),
      all.filter((r) => r.actor === admin.signPubHex)
    );
    assert.equal((await query('--actor', admin.signPubHex)).length, 6);
    assert.deepEqual(
      await query('--actor', admin.signPubHex.toUpperCase(), '--action', 'user.revoke'),
      all.filter((r) => r.action === 'user.revoke')
    );
    assert.deepEqual(
      (await query('--actor', member.id.signPubHex)).map((r) => [r.action, r.outcome]),
      [
        ['user.list', 'denied'],
        ['room.create', 'intent'],
        ['room.create', 'ok'],
      ]
    );
    assert.deepEqual(
      (await query('--outcome', 'denied')).map((r) => r.action),
      ['user.list']
    );
    assert.deepEqual(await query('--outcome', 'error'), []);
    const cli = await query('--via', 'cli');
    assert.deepEqual(
      cli.map((r) => r.target),
      [
        admin.signPubHex,
        admin.signPubHex,
        cliUsers[0]!.signPubHex,
        cliUsers[0]!.signPubHex,
        cliUsers[1]!.signPubHex,
        cliUsers[1]!.signPubHex,
      ]
    );
    assert.deepEqual(
      await query('--via', 'http'),
      all.filter((r) => r.via === 'http')
    );
  });

  test('--since and --until: RFC 3339 times or "that long ago"', async () => {
    const second = all.filter((r) => r.time >= mid);
    assert.equal(second.length, 7);
    assert.deepEqual(await query('--since', mid), second);
    assert.deepEqual(
      await query('--until', mid),
      all.filter((r) => r.time <= mid)
    );
    assert.deepEqual(
      (await query('--since', mid, '--action', 'user.add')).map((r) => r.target),
      [httpUser.signPubHex, httpUser.signPubHex]
    );
    assert.deepEqual(await query('--since', '1h'), all);
    assert.deepEqual(await query('--until', '1h'), []);
    assert.deepEqual(
      await query('--since', '1h', '--until', mid, '--actor', admin.signPubHex),
      all.filter((r) => r.time <= mid && r.actor === admin.signPubHex)
    );
  });

  test('text output is the lines of audit tail; -n keeps the oldest (--newest the latest) and says more match', async () => {
    const tail = await audit('tail', '-n', '1000');
    const text = await audit('query', '--since', '1d');
    assert.equal(text.code, 0, text.stderr);
    assert.equal(text.stdout, tail.stdout);
    assert.equal(text.stderr, '');
    const two = await audit('query', '--action', 'user.add', '-n', '2', '-o', 'json');
    assert.equal(two.code, 0, two.stderr);
    assert.deepEqual(JSON.parse(two.stdout), all.slice(0, 2));
    assert.match(two.stderr, /more records match than -n 2/);
    const latest = await audit(
      'query',
      '--action',
      'user.add',
      '-n',
      '2',
      '--newest',
      '-o',
      'json'
    );
    assert.equal(latest.code, 0, latest.stderr);
    const adds = all.filter((r) => r.action === 'user.add');
    assert.ok(adds.length > 2);
    assert.deepEqual(JSON.parse(latest.stdout), adds.slice(-2));
    assert.match(latest.stderr, /more records match than -n 2/);
  });

  test('bad filters are usage errors (exit 2) with a clear message', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--since', 'yesterday'], /since: "yesterday" is neither a duration/],
      [['--until', '2026-13-45T00:00:00Z'], /until: .* is not a valid time/],
      [['--since', '1h', '--until', '2h'], /--since is after --until/],
      [['--actor', 'abc'], /actor: must be 64 hex/],
      [['--action', 'User.Add'], /action: .*neither an action name/],
      [['--action', 'user.>'], /action: .*neither an action name/],
      [['--outcome', 'maybe'], /Allowed choices are ok, denied, error/],
      [['-n', '0'], /-n must be a positive number/],
    ];
    for (const [args, message] of cases) {
      const r = await audit('query', ...args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(' '));
      assert.equal(r.stdout, '');
    }
  });
});
