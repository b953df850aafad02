import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  MIN_NATS_SERVER_VERSION,
  natsServerVersion,
  resolveNatsServerBinary,
  versionAtLeast,
} from './binary.js';
import { NatsdError, type NatsdErrorCode } from './errors.js';
import { NATS_BIN, tempDir, type TempDir } from './test-support.js';

let dir: TempDir;
let n = 0;

/** An executable in its own directory, named nats-server, that prints `stdout` for --version. */
async function fake(stdout: string, opts: { status?: number; stderr?: string } = {}) {
  const d = join(dir.path, `fake-${n++}`);
  await mkdir(d);
  const path = join(d, 'nats-server');
  const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
  await writeFile(
    path,
    `#!/bin/sh\nprintf '%s' ${q(stdout)}\nprintf '%s' ${q(opts.stderr ?? '')} >&2\nexit ${opts.status ?? 0}\n`,
    { mode: 0o755 }
  );
  return path;
}

function refused(code: NatsdErrorCode) {
  return (e: unknown) => e instanceof NatsdError && e.code === code;
}

describe('nats-server binary and version gate', { timeout: 60_000 }, () => {
  before(async () => {
    dir = await tempDir('natsd-binary-');
  });
  after(async () => {
    await dir.remove();
  });

  test('the real binary is accepted', () => {
    const found = resolveNatsServerBinary(NATS_BIN);
    assert.equal(found.path, NATS_BIN);
    assert.match(found.version, /^\d+\.\d+\.\d+$/);
    assert.ok(versionAtLeast(found.version));
    assert.equal(natsServerVersion(NATS_BIN), found.version);
    assert.ok(Object.isFrozen(found));
    assert.ok(Object.isFrozen(MIN_NATS_SERVER_VERSION));
  });

  test('2.10 and newer are accepted, compared as numbers', async () => {
    for (const [out, version] of [
      ['nats-server: v2.10.0\n', '2.10.0'],
      ['nats-server: v2.10.27\n', '2.10.27'],
      ['nats-server: v2.11.0-RC.2\n', '2.11.0'],
      ['nats-server: v2.12.1\n', '2.12.1'],
      ['nats-server: v2.100.0\n', '2.100.0'],
      ['nats-server: v3.0.0\n', '3.0.0'],
    ]) {
      const path = await fake(out!);
      assert.deepEqual({ ...resolveNatsServerBinary(path) }, { path, version }, out);
    }
  });

  test('older than 2.10 is refused, saying which version it found and which it needs', async () => {
    for (const out of [
      'nats-server: v2.9.25\n',
      'nats-server: v2.9.99\n',
      'nats-server: v2.2.0\n',
      'nats-server: v1.4.1\n',
      'nats-server: v0.10.0\n',
      // another program's version first must not count as the server's
      'libfoo 3.0.0 loaded\nnats-server: v2.9.0\n',
    ]) {
      const path = await fake(out);
      assert.throws(
        () => resolveNatsServerBinary(path),
        (e) =>
          refused('BINARY_TOO_OLD')(e) &&
          (e as Error).message.includes(path) &&
          /2\.10\.0 or newer/.test((e as Error).message),
        out
      );
    }
  });

  test('garbage, a failing or missing program is refused as not a nats-server', async () => {
    const paths = [
      await fake('hello world\n'),
      await fake(''),
      await fake('nats-server: v2.10\n'),
      await fake('v2.10.0\n'),
      await fake('3.0.0\n'),
      await fake('some-other-server: v2.10.0\n'),
      await fake('nats-server: v2.10.0\n', { status: 1 }),
      await fake('', { stderr: 'nats-server: v2.10.0\n' }),
      join(dir.path, 'does-not-exist'),
      dir.path,
    ];
    const notExecutable = join(dir.path, 'not-executable');
    await writeFile(notExecutable, '#!/bin/sh\necho "nats-server: v2.10.0"\n', { mode: 0o644 });
    paths.push(notExecutable);
    for (const path of paths)
      assert.throws(() => resolveNatsServerBinary(path), refused('BINARY_NOT_FOUND'), path);
  });

  test('versionAtLeast', () => {
    assert.ok(versionAtLeast('2.10.0'));
    assert.ok(versionAtLeast('2.10.1'));
    assert.ok(versionAtLeast('2.11.0'));
    assert.ok(versionAtLeast('10.0.0'));
    assert.ok(!versionAtLeast('2.9.99'));
    assert.ok(!versionAtLeast('1.99.99'));
    assert.ok(versionAtLeast('1.2.3', [1, 2, 3]));
    assert.ok(!versionAtLeast('1.2.2', [1, 2, 3]));
  });

  describe('where it looks: argument, $NATS_SERVER_BIN, setup record, PATH', () => {
    let root: string;
    let moduleUrl: string;
    let oldDir: string;
    let newDir: string;
    let recorded: string;

    before(async () => {
      // The module finds the setup record by walking up from its own file, so
      // a copy of it under a temp tree sees the record we put there, or none.
      root = join(dir.path, 'tree');
      const mods = join(root, 'lib', 'natsd');
      await mkdir(mods, { recursive: true });
      const here = dirname(fileURLToPath(import.meta.url));
      for (const f of ['binary.js', 'errors.js']) await copyFile(join(here, f), join(mods, f));
      moduleUrl = pathToFileURL(join(mods, 'binary.js')).href;
      oldDir = dirname(await fake('nats-server: v2.9.25\n'));
      newDir = dirname(await fake('nats-server: v2.12.1\n'));
      recorded = await fake('nats-server: v2.10.5\n');
    });

    /** resolveNatsServerBinary() in a fresh process with exactly this environment. */
    function resolveIn(env: Record<string, string>): { path?: string; code?: string } {
      const script =
        `const { resolveNatsServerBinary } = await import(${JSON.stringify(moduleUrl)});` +
        `try { console.log(JSON.stringify(resolveNatsServerBinary())); }` +
        `catch (e) { console.log(JSON.stringify({ code: e.code })); }`;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
        env,
        encoding: 'utf8',
        timeout: 20_000,
      });
      assert.equal(r.status, 0, r.stderr);
      return JSON.parse(r.stdout) as { path?: string; code?: string };
    }

    test('PATH: an old server first does not hide a newer one later', () => {
      assert.equal(resolveIn({ PATH: `${oldDir}:${newDir}` }).path, join(newDir, 'nats-server'));
      assert.equal(resolveIn({ PATH: oldDir }).code, 'BINARY_NOT_FOUND');
      assert.equal(resolveIn({ PATH: join(dir.path, 'nothing-here') }).code, 'BINARY_NOT_FOUND');
    });

    test('$NATS_SERVER_BIN is a choice: too old is an error, not skipped', () => {
      const env = { PATH: newDir };
      assert.equal(
        resolveIn({ ...env, NATS_SERVER_BIN: join(oldDir, 'nats-server') }).code,
        'BINARY_TOO_OLD'
      );
      assert.equal(
        resolveIn({ ...env, NATS_SERVER_BIN: join(dir.path, 'missing') }).code,
        'BINARY_NOT_FOUND'
      );
      assert.equal(resolveIn({ ...env, NATS_SERVER_BIN: recorded }).path, recorded);
    });

    test('the setup record comes before PATH; a broken record is ignored', async () => {
      await mkdir(join(root, '.tools'), { recursive: true });
      const record = join(root, '.tools', 'nats-server.json');
      await writeFile(record, JSON.stringify({ path: recorded, version: '2.10.5' }));
      assert.equal(resolveIn({ PATH: newDir }).path, recorded);
      await writeFile(record, '{ not json');
      assert.equal(resolveIn({ PATH: newDir }).path, join(newDir, 'nats-server'));
      await writeFile(record, JSON.stringify({ path: join(oldDir, 'nats-server') }));
      assert.equal(resolveIn({ PATH: newDir }).path, join(newDir, 'nats-server'));
    });
  });
});
