// `membershipd sign`: what it prints is a request the daemon accepts, with
// and without a body, as headers or as a curl command.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { encodePublicIdentity, generateIdentity, loadIdentity } from '@sealbus/crypto';
import { runMembershipd, startDaemon, type TestDaemon } from '@sealbus/testing';

const run = promisify(execFile);

describe('membershipd sign', { timeout: 60_000 }, () => {
  let d: TestDaemon;
  let adminFile: string;
  before(async () => {
    d = await startDaemon();
    adminFile = join(d.dataDir, 'admin.id');
  });
  after(async () => {
    await d?.dispose();
  });

  const headersOf = (stdout: string) =>
    Object.fromEntries(
      stdout
        .trim()
        .split('\n')
        .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)])
    );

  test('the headers it prints sign a GET and a POST with a body the daemon accepts', async () => {
    const admin = await loadIdentity(adminFile);
    const r = await runMembershipd(['sign', '--identity', adminFile, 'GET', `${d.httpUrl}/me`]);
    assert.equal(r.code, 0, r.stderr);
    const me = await fetch(`${d.httpUrl}/me`, { headers: headersOf(r.stdout) });
    assert.equal(me.status, 200);
    assert.equal(
      ((await me.json()) as { user: { sign_pub: string } }).user.sign_pub,
      admin.signPubHex
    );

    const body = JSON.stringify({
      public: encodePublicIdentity(generateIdentity()),
      handle: 'signed-by-cli',
      role: 'member',
    });
    const p = await runMembershipd([
      'sign',
      '--identity',
      adminFile,
      'POST',
      `${d.httpUrl}/users`,
      '--data',
      body,
    ]);
    assert.equal(p.code, 0, p.stderr);
    const h = headersOf(p.stdout);
    assert.match(h['content-digest'] ?? '', /^sha-256=:/);
    const added = await fetch(`${d.httpUrl}/users`, { method: 'POST', headers: h, body });
    assert.equal(added.status, 201, await added.text());
    // The same headers with another body: the digest no longer matches.
    const other = await fetch(`${d.httpUrl}/users`, {
      method: 'POST',
      headers: h,
      body: body.replace('cli', 'xyz'),
    });
    assert.equal(other.status, 401);
  });

  test('--curl prints a command that runs as it is', async () => {
    const r = await runMembershipd([
      'sign',
      '--identity',
      adminFile,
      'GET',
      `${d.httpUrl}/me`,
      '--curl',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^curl -sS -X GET -H 'signature-input: /);
    const { stdout } = await run('bash', ['-c', r.stdout.trim()], { timeout: 15_000 });
    const admin = await loadIdentity(adminFile);
    assert.equal(
      (JSON.parse(stdout) as { user: { sign_pub: string } }).user.sign_pub,
      admin.signPubHex
    );
  });

  test('bad method or URL is a usage error (exit 2); nothing secret is printed', async () => {
    for (const args of [
      ['FETCH', `${d.httpUrl}/me`],
      ['GET', 'not a url'],
      ['GET', 'ftp://127.0.0.1/me'],
    ]) {
      const r = await runMembershipd(['sign', '--identity', adminFile, ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    }
    const admin = await loadIdentity(adminFile);
    const r = await runMembershipd(['sign', '--identity', adminFile, 'GET', `${d.httpUrl}/me`]);
    assert.ok(!r.stdout.includes(Buffer.from(admin.signSeed).toString('hex')));
    assert.ok(!r.stdout.includes(Buffer.from(admin.signSeed).toString('base64')));
  });
});
