import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseAuthority, parseCount, parseSize } from './parse.js';

test('parseSize: bytes and binary units', () => {
  const ok: Array<[string, number]> = [
    ['65536', 65_536],
    ['1B', 1],
    ['64KiB', 65_536],
    ['256MiB', 268_435_456],
    ['10GiB', 10 * 1024 ** 3],
    [' 2MiB ', 2 * 1024 ** 2],
  ];
  for (const [text, bytes] of ok) assert.equal(parseSize(text), bytes, text);
  for (const bad of [
    '',
    '0',
    '0MiB',
    '-1',
    '1.5MiB',
    '64kib',
    '64KB',
    '64 KiB',
    'MiB',
    '1TiB',
    '9'.repeat(20),
  ])
    assert.throws(() => parseSize(bad), /invalid size/, JSON.stringify(bad));
});

test('parseAuthority: HOST[:PORT], lowercase, IPv6 bracketed', () => {
  const ok: Array<[string, string]> = [
    ['sealbus.example.com', 'sealbus.example.com'],
    ['Sealbus.Example.COM:443', 'sealbus.example.com:443'],
    ['10.0.0.5:8470', '10.0.0.5:8470'],
    ['[::1]:8470', '[::1]:8470'],
    ['[fe80::1]', '[fe80::1]'],
    ['localhost', 'localhost'],
  ];
  for (const [text, a] of ok) assert.equal(parseAuthority(text), a, text);
  for (const bad of [
    '',
    '::1',
    '::1:8470',
    'http://x',
    'x/y',
    'x:70000',
    'x:',
    '-x',
    'a b',
    '[zz::1]',
  ])
    assert.throws(() => parseAuthority(bad), /invalid authority/, JSON.stringify(bad));
});

test('parseCount', () => {
  assert.equal(parseCount('0'), 0);
  assert.equal(parseCount('100'), 100);
  for (const bad of ['', '-1', '1.5', 'x', '1e3']) assert.throws(() => parseCount(bad));
});
