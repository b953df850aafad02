// The SDK as a developer outside this repository gets it: `npm run sdk:pack`
// writes one tarball; a project with no workspace installs it with npm and
// nothing else from here, type-checks against it with --strict, and runs a
// real session (encrypted room, publish, receive) against a daemon.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  encodePublicIdentity,
  generateIdentity,
  loadIdentity,
  saveIdentity,
} from '@sealbus/crypto';
import { startDaemon, tempDir, type TempDir, type TestDaemon } from '@sealbus/testing';
import { ControlClient } from './control.js';

const run = promisify(execFile);
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const VERSION = '0.1.0';

const CONSUMER_JS = `
import { Sealbus, loadIdentity } from '@sealbus/client';
const [natsUrl, httpUrl, idFile] = process.argv.slice(2);
const identity = await loadIdentity(idFile);
const bus = await Sealbus.connect({ natsServers: [natsUrl], controlUrls: [httpUrl], identity });
const room = await bus.createRoom({
  subject: 'outside.chat',
  policy: { encrypt: true, persist: false, sign: true },
});
const got = new Promise((resolve) =>
  bus.subscribe(room.id, (m) => resolve({ text: new TextDecoder().decode(m.data), sender: m.sender, epoch: m.epoch }))
);
await bus.publish(room.id, new TextEncoder().encode('hello from outside'));
const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('no message in 10 s')), 10_000));
console.log(JSON.stringify(await Promise.race([got, timeout])));
await bus.close();
`;

// A typed consumer: every type it names comes from '@sealbus/client'.
const CONSUMER_TS = `
import {
  Sealbus,
  SealbusError,
  TrustError,
  generateIdentity,
  type Identity,
  type MessageStream,
  type MyRoom,
  type RoomMessage,
  type RoomPolicy,
  type SealbusErrorCode,
  type SealbusOptions,
} from '@sealbus/client';

const identity: Identity = generateIdentity();
const options: SealbusOptions = { natsServers: ['nats://127.0.0.1:4222'], controlUrls: ['http://127.0.0.1:8470'], identity };
const policy: RoomPolicy = { encrypt: true, persist: false, sign: true };
export async function main(): Promise<string> {
  const bus = await Sealbus.connect(options);
  const room: MyRoom = await bus.createRoom({ subject: 'typed.chat', policy });
  await bus.subscribe(room.id, (m: RoomMessage) => {
    const text: string = new TextDecoder().decode(m.data);
    void text;
  });
  bus.on('untrusted', (e: TrustError) => console.warn(e.code));
  bus.on('expired', (r: string | null, at: string) => console.warn(r ?? 'this identity', at));
  const stream: MessageStream = await bus.subscribe(room.id);
  for await (const m of stream) if (m.expectsReply) await stream.respond(m, m.json<{ q: string }>().q);
  try {
    const answer: RoomMessage = await bus.request(room.id, 'q', { timeoutMs: 1_000 });
    void answer.string();
  } catch (e) {
    if (e instanceof SealbusError) {
      const code: string = e.code;
      const known: SealbusErrorCode[] = ['TIMEOUT', 'NO_RESPONDERS'];
      void known.includes(code as SealbusErrorCode);
    }
  }
  return bus.fingerprint(room.owner);
}
`;

describe('the SDK packed, installed and used outside the repository', { timeout: 300_000 }, () => {
  let dir: TempDir;
  let d: TestDaemon;
  let tarball: string;
  let project: string;

  before(async () => {
    dir = await tempDir('sealbus-sdk-consumer-');
    d = await startDaemon();
  });
  after(async () => {
    await d?.dispose();
    await dir?.[Symbol.asyncDispose]();
  });

  test('npm run sdk:pack writes exactly one tarball named by the version', async () => {
    const out = join(dir.path, 'out');
    const r = await run('npm', ['run', '--silent', 'sdk:pack', '--', '--out', out], {
      cwd: ROOT,
      timeout: 180_000,
    });
    tarball = join(out, `sealbus-client-${VERSION}.tgz`);
    assert.equal(r.stdout.trim(), tarball);
    assert.deepEqual(readdirSync(out), [`sealbus-client-${VERSION}.tgz`]);
    const { stdout: listing } = await run('tar', ['tzf', tarball]);
    const files = listing.split('\n').filter(Boolean);
    assert.ok(files.includes('package/dist/mod.d.ts'), 'types are in the tarball');
    assert.ok(files.includes('package/node_modules/@sealbus/crypto/dist/mod.js'), 'crypto bundled');
    assert.ok(
      files.includes('package/node_modules/@sealbus/protocol/dist/mod.js'),
      'protocol bundled'
    );
    assert.deepEqual(
      files.filter((f) => /\.test\./.test(f)),
      [],
      'no tests in the tarball'
    );
    assert.deepEqual(
      files.filter((f) => /^package\/dist\/internal\./.test(f)),
      [],
      'the internal entry stays home'
    );
  });

  test('a project with no workspace installs it with npm alone, and imports it', async () => {
    project = join(dir.path, 'app');
    await mkdir(project);
    await writeFile(
      join(project, 'package.json'),
      JSON.stringify({ name: 'outside-app', private: true, type: 'module' })
    );
    // The public dependencies come from the npm registry (or npm's cache).
    await run('npm', ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund'], {
      cwd: project,
      timeout: 180_000,
    });
    const installed = readdirSync(join(project, 'node_modules', '@sealbus'));
    assert.deepEqual(installed, ['client'], 'only the SDK itself under @sealbus at the top');
    const { stdout } = await run(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "import('@sealbus/client').then((m) => console.log(typeof m.Sealbus, typeof m.generateIdentity))",
      ],
      { cwd: project }
    );
    assert.equal(stdout.trim(), 'function function');
    // Internals are not part of the package: not importable, not exported.
    const { stdout: internal } = await run(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        "import('@sealbus/client/internal').then(() => console.log('importable'), (e) => console.log(e.code)); import('@sealbus/client').then((m) => console.log(['RoomState', 'newRoomKey', 'sealRoomKey', 'authorStatement', 'OwnerPins'].filter((k) => k in m).join(',') || 'none'))",
      ],
      { cwd: project }
    );
    assert.deepEqual(internal.trim().split('\n').sort(), ['ERR_PACKAGE_PATH_NOT_EXPORTED', 'none']);
  });

  test('a typed consumer compiles with --strict against the installed types', async () => {
    await writeFile(join(project, 'consumer.ts'), CONSUMER_TS);
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = await run(
      process.execPath,
      [
        tsc,
        '--strict',
        '--noEmit',
        '--target',
        'es2022',
        '--module',
        'nodenext',
        '--moduleResolution',
        'nodenext',
        '--typeRoots',
        join(ROOT, 'node_modules', '@types'),
        '--types',
        'node',
        'consumer.ts',
      ],
      { cwd: project, timeout: 120_000 }
    ).catch((err: { stdout?: string }) => {
      assert.fail(`tsc --strict failed:\n${err.stdout ?? String(err)}`);
    });
    assert.equal(r.stdout.trim(), '');
  });

  test('it runs a real session against a daemon: encrypted room, publish, receive', async () => {
    const admin = new ControlClient({
      urls: [d.httpUrl],
      identity: await loadIdentity(join(d.dataDir, 'admin.id')),
    });
    const me = generateIdentity();
    await admin.addUser({ public: encodePublicIdentity(me), handle: 'outsider', role: 'member' });
    admin.close();
    const idFile = join(project, 'me.id');
    await saveIdentity(idFile, me);
    await writeFile(join(project, 'consumer.mjs'), CONSUMER_JS);
    const { stdout } = await run(process.execPath, ['consumer.mjs', d.natsUrl, d.httpUrl, idFile], {
      cwd: project,
      timeout: 60_000,
    });
    assert.deepEqual(JSON.parse(stdout.trim()), {
      text: 'hello from outside',
      sender: me.signPubHex,
      epoch: 0,
    });
  });
});
