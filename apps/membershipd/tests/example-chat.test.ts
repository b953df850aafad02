// The chat example as the README walks it: two users, a room, an invite, a
// line from one terminal read in the other; and a clear word when no daemon
// is there.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ControlClient } from '@sealbus/client';
import {
  freePort,
  runNode,
  startDaemon,
  tempDir,
  waitFor,
  type TempDir,
  type TestDaemon,
} from '@sealbus/testing';
import { adminOf } from './helpers.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
const CHAT = join(ROOT, 'examples', 'chat.mjs');

describe('examples/chat.mjs', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let dir: TempDir;
  before(async () => {
    d = await startDaemon();
    dir = await tempDir('sealbus-chat-');
  });
  after(async () => {
    await d?.dispose();
    await dir?.[Symbol.asyncDispose]();
  });
  const chat = (...args: string[]) =>
    runNode(CHAT, [...args, '--nats', d.natsUrl, '--control', d.httpUrl], 30_000);

  test('the README walkthrough: whoami, register both, create, invite, a line goes across', async () => {
    const [alice, bob] = [join(dir.path, 'alice.id'), join(dir.path, 'bob.id')];
    const who = async (file: string) => {
      const r = await chat(file, 'whoami');
      assert.equal(r.code, 0, r.stderr);
      return {
        signPub: /^sign_pub (\w+)/m.exec(r.stdout)![1]!,
        token: /^token +(\S+)/m.exec(r.stdout)![1]!,
      };
    };
    const [a, b] = [await who(alice), await who(bob)];
    const admin = new ControlClient({ urls: [d.httpUrl], identity: await adminOf(d) });
    await admin.addUser({ public: a.token, handle: 'chat-alice', role: 'member' });
    await admin.addUser({ public: b.token, handle: 'chat-bob', role: 'member' });
    admin.close();
    const created = await chat(alice, 'create', 'chat.demo');
    assert.equal(created.code, 0, created.stderr);
    const room = /^room (\w+)/m.exec(created.stdout)![1]!;
    const invited = await chat(alice, 'invite', room, b.signPub);
    assert.equal(invited.code, 0, invited.stderr);

    const spawnJoin = (file: string) =>
      spawn(
        process.execPath,
        [CHAT, file, 'join', room, '--nats', d.natsUrl, '--control', d.httpUrl],
        {
          cwd: ROOT,
          stdio: ['pipe', 'pipe', 'pipe'],
        }
      );
    const B = spawnJoin(bob);
    let bobOut = '';
    let bobErr = '';
    B.stdout.on('data', (c: Buffer) => (bobOut += c.toString()));
    B.stderr.on('data', (c: Buffer) => (bobErr += c.toString()));
    await waitFor(() => bobErr.includes('joined'), { timeoutMs: 20_000, what: 'bob joined' });
    const A = spawnJoin(alice);
    let aliceErr = '';
    A.stderr.on('data', (c: Buffer) => (aliceErr += c.toString()));
    await waitFor(() => aliceErr.includes('joined'), { timeoutMs: 20_000, what: 'alice joined' });
    A.stdin.end('hello bob\n');
    await waitFor(() => bobOut.includes('hello bob'), {
      timeoutMs: 20_000,
      what: "the line in bob's terminal",
    });
    assert.match(bobOut, new RegExp(`<${a.signPub.slice(0, 8)}> hello bob`));
    B.stdin.end();
    const exited = (p: typeof A) =>
      new Promise((r) => {
        if (p.exitCode !== null) return r(p.exitCode);
        const t = setTimeout(() => {
          p.kill('SIGKILL');
          r('killed after 20 s');
        }, 20_000);
        p.on('exit', (code) => {
          clearTimeout(t);
          r(code);
        });
      });
    const codes = await Promise.all([exited(A), exited(B)]);
    assert.deepEqual(codes, [0, 0], `alice: ${aliceErr}\nbob: ${bobErr}`);
  });

  test('no daemon there: it says so and exits 1', async () => {
    const port = await freePort();
    const r = await runNode(
      CHAT,
      [
        join(dir.path, 'nobody.id'),
        'create',
        'x.y',
        '--nats',
        `nats://127.0.0.1:${port}`,
        '--control',
        `http://127.0.0.1:${port}`,
      ],
      30_000
    );
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no Sealbus daemon answered at http:\/\/127\.0\.0\.1:\d+/);
    assert.match(r.stderr, /npm start/);
  });
});
