import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, stat, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CryptoError } from './errors.js';
import {
  generateIdentity,
  loadIdentity,
  loadOrCreateIdentity,
  saveIdentity,
  serializeIdentity,
} from './identity.js';

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await mkdtemp(join(tmpdir(), 'sealbus-id-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const isCode = (code: string) => (e: unknown) => e instanceof CryptoError && e.code === code;

test('identity file has exactly the documented format and mode 0600', () =>
  withDir(async (dir) => {
    const path = join(dir, 'alice.id');
    const id = generateIdentity();
    await saveIdentity(path, id);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    const json = JSON.parse(await readFile(path, 'utf8'));
    assert.deepEqual(Object.keys(json), [
      'version',
      'sign_pub',
      'sign_priv',
      'kex_pub',
      'kex_priv',
    ]);
    assert.equal(json.version, 1);
    for (const k of ['sign_pub', 'sign_priv', 'kex_pub', 'kex_priv'])
      assert.match(json[k], /^[0-9a-f]{64}$/);
    assert.equal(json.sign_pub, id.signPubHex);
    const back = await loadIdentity(path);
    assert.equal(back.signPubHex, id.signPubHex);
    assert.deepEqual(back.kexPriv, id.kexPriv);
    // no temp file is left behind by the atomic write
    assert.deepEqual(await readdir(dir), ['alice.id']);
  }));

test('load never creates; load-or-create creates only when absent', () =>
  withDir(async (dir) => {
    const path = join(dir, 'x.id');
    await assert.rejects(loadIdentity(path), isCode('IDENTITY_NOT_FOUND'));
    const first = await loadOrCreateIdentity(path);
    assert.equal(first.created, true);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    const second = await loadOrCreateIdentity(path);
    assert.equal(second.created, false);
    assert.equal(second.identity.signPubHex, first.identity.signPubHex);
  }));

test('concurrent load-or-create agree on one identity', () =>
  withDir(async (dir) => {
    const path = join(dir, 'race.id');
    const results = await Promise.all(Array.from({ length: 8 }, () => loadOrCreateIdentity(path)));
    assert.equal(results.filter((r) => r.created).length, 1);
    assert.equal(new Set(results.map((r) => r.identity.signPubHex)).size, 1);
  }));

test('a corrupt file is an error and is left untouched', () =>
  withDir(async (dir) => {
    const good = JSON.parse(serializeIdentity(generateIdentity()));
    const other = JSON.parse(serializeIdentity(generateIdentity()));
    const cases: Array<[string, string]> = [
      ['empty', ''],
      ['truncated', serializeIdentity(generateIdentity()).slice(0, 40)],
      ['array', '[]'],
      ['wrong version', JSON.stringify({ ...good, version: 2 })],
      ['missing field', JSON.stringify({ ...good, kex_priv: undefined })],
      ['short key', JSON.stringify({ ...good, sign_priv: good.sign_priv.slice(2) })],
      ['non-hex key', JSON.stringify({ ...good, kex_pub: 'zz' + good.kex_pub.slice(2) })],
      ['sign_pub of another key', JSON.stringify({ ...good, sign_pub: other.sign_pub })],
      ['kex_pub of another key', JSON.stringify({ ...good, kex_pub: other.kex_pub })],
    ];
    for (const [name, content] of cases) {
      const path = join(dir, `${name}.id`);
      await writeFile(path, content, { mode: 0o600 });
      await assert.rejects(loadIdentity(path), isCode('IDENTITY_CORRUPT'), name);
      await assert.rejects(
        loadOrCreateIdentity(path),
        isCode('IDENTITY_CORRUPT'),
        `${name} (load-or-create)`
      );
      assert.equal(await readFile(path, 'utf8'), content, `${name} must not be rewritten`);
    }
  }));

test('error messages never quote private key material', () =>
  withDir(async (dir) => {
    const text = serializeIdentity(generateIdentity());
    const priv = JSON.parse(text).sign_priv as string;
    const path = join(dir, 'leak.id');
    // A syntax error right after the key: JSON.parse's own message would quote it.
    const content = text.replace(`"${priv}"`, `"${priv}" x`);
    await writeFile(path, content, { mode: 0o600 });
    const err = await loadIdentity(path).catch((e: unknown) => e);
    assert.ok(err instanceof CryptoError && err.code === 'IDENTITY_CORRUPT');
    assert.ok(!err.message.includes(priv.slice(0, 12)), err.message);
    assert.equal(err.cause, undefined);
  }));

test('a group- or world-readable identity file is refused', () =>
  withDir(async (dir) => {
    const path = join(dir, 'open.id');
    await saveIdentity(path, generateIdentity());
    await chmod(path, 0o644);
    await assert.rejects(loadIdentity(path), isCode('IDENTITY_PERMISSIONS'));
  }));

test('save with createOnly never replaces an existing identity', () =>
  withDir(async (dir) => {
    const path = join(dir, 'keep.id');
    const a = generateIdentity();
    await saveIdentity(path, a);
    await assert.rejects(saveIdentity(path, generateIdentity(), { createOnly: true }), {
      code: 'EEXIST',
    });
    assert.equal((await loadIdentity(path)).signPubHex, a.signPubHex);
  }));
