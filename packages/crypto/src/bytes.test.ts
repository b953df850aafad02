import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assertBytes, fromHex, toHex } from './bytes.js';
import { CryptoError } from './errors.js';

test('fromHex accepts either case and round-trips to lowercase', () => {
  assert.equal(toHex(fromHex('00AbFf')), '00abff');
  assert.deepEqual(fromHex(''), new Uint8Array());
});

test('fromHex refuses what Buffer.from would silently truncate', () => {
  const table: Array<[string, unknown, number | undefined, string]> = [
    ['odd length', 'abc', undefined, 'BAD_HEX'],
    ['non-hex char', '00zz', undefined, 'BAD_HEX'],
    ['bad char after valid prefix', 'aabbcg', undefined, 'BAD_HEX'],
    ['whitespace', 'aa bb', undefined, 'BAD_HEX'],
    ['0x prefix', '0xaabb', undefined, 'BAD_HEX'],
    ['not a string', 42, undefined, 'BAD_HEX'],
    ['too short for 32 bytes', 'aa'.repeat(31), 32, 'BAD_LENGTH'],
    ['too long for 32 bytes', 'aa'.repeat(33), 32, 'BAD_LENGTH'],
  ];
  for (const [name, input, len, code] of table) {
    assert.throws(
      () => fromHex(input as string, 'key', len),
      (e: unknown) => e instanceof CryptoError && e.code === code && e.message.startsWith('key:'),
      name
    );
  }
});

test('assertBytes checks type and exact length', () => {
  assert.throws(() => assertBytes([1, 2], 2, 'x'), { code: 'BAD_KEY' });
  assert.throws(() => assertBytes(new Uint8Array(3), 2, 'x'), { code: 'BAD_LENGTH' });
  assert.doesNotThrow(() => assertBytes(new Uint8Array(2), 2, 'x'));
});
