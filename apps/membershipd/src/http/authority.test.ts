import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Authorities } from './authority.js';

test('nothing is accepted before the listener is bound', () => {
  const a = new Authorities(['sealbus.example.com']);
  assert.equal(a.has('sealbus.example.com'), false);
  assert.deepEqual(a.list(), []);
});

test('loopback listener: its address, the loopback names with its port, and the configured names', () => {
  const a = new Authorities(['sealbus.example.com', 'proxy.example.com:443', '10.0.0.5:8470']);
  a.bind('127.0.0.1', 8470);
  for (const ok of [
    '127.0.0.1:8470',
    'localhost:8470',
    'LOCALHOST:8470',
    '[::1]:8470',
    'sealbus.example.com',
    'proxy.example.com:443',
    'proxy.example.com',
    '10.0.0.5:8470',
  ])
    assert.ok(a.has(ok), ok);
  for (const bad of [
    '127.0.0.1:8471',
    '127.0.0.1',
    'localhost',
    'sealbus.example.com:443',
    'sealbus.example.com:8470',
    'other.example:8470',
    '10.0.0.5',
    '',
  ])
    assert.equal(a.has(bad), false, bad);
});

test('a non-loopback listener does not answer to loopback names; wildcard does', () => {
  const a = new Authorities();
  a.bind('10.0.0.5', 8470);
  assert.deepEqual(a.list(), ['10.0.0.5:8470']);
  const w = new Authorities();
  w.bind('0.0.0.0', 443);
  assert.ok(w.has('127.0.0.1:443') && w.has('127.0.0.1') && w.has('[::1]'));
  const v6 = new Authorities();
  v6.bind('::1', 8470);
  assert.ok(v6.has('[::1]:8470') && v6.has('localhost:8470'));
});
