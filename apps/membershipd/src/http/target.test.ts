import { test } from 'node:test';
import assert from 'node:assert/strict';
import { targetProblem } from './target.js';

test('targets in normal form pass', () => {
  for (const t of [
    '/',
    '/me',
    '/users?role=admin',
    '/rooms/0123456789abcdef01234567/members',
    '/users/' + 'ab'.repeat(32) + '/revoke',
    '/rooms?x=..%2f',
    '/a%20b',
    '/%C3%A9',
  ])
    assert.equal(targetProblem(t), null, t);
});

test('targets not in normal form are refused', () => {
  for (const t of [
    '',
    '*',
    'http://127.0.0.1:8470/users',
    '//users',
    '/rooms//users',
    '/users/',
    '/rooms/../users',
    '/rooms/./users',
    '/rooms/%2e%2e/users',
    '/rooms/%2E%2E/users',
    '/rooms/.%2e/users',
    '/rooms/%2e./users',
    '/rooms/%2e/users',
    '/rooms/..',
    '/rooms/x%2fy',
    '/rooms/x%2Fy',
    '/rooms/x%5cy',
    '/rooms\\..\\users',
    '/rooms/%zz',
    '/rooms/%2',
    '/rooms/%41',
    '/me#x',
  ])
    assert.notEqual(targetProblem(t), null, JSON.stringify(t));
});
