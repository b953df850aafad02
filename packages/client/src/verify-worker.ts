/**
 * A verification thread of the SDK (see verifier.ts): checks the Ed25519
 * signatures of signed room frames and answers a verdict per frame. It
 * decides nothing else: the frame's other checks stay on the client's
 * thread, in order.
 *
 * A batch is one transferred buffer: [u32 count] then, per frame,
 * [u32 length][frame bytes]. The answer is one byte per frame: 1 the
 * signature verifies, 0 it does not, 2 not decided here (the client checks
 * that frame itself: a frame not laid out as a signed one, or a key
 * node:crypto refuses).
 */
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { parentPort } from 'node:worker_threads';

const HEADER = 78;
const SIGNATURE = 64;
const KEYS_MAX = 4096;
const keys = new Map<string, KeyObject>();

function keyOf(pub: Buffer): KeyObject {
  const id = pub.toString('latin1');
  let k = keys.get(id);
  if (k === undefined) {
    k = createPublicKey({
      key: { kty: 'OKP', crv: 'Ed25519', x: pub.toString('base64url') },
      format: 'jwk',
    });
    if (keys.size >= KEYS_MAX) keys.delete(keys.keys().next().value!);
    keys.set(id, k);
  }
  return k;
}

function verdict(frame: Buffer): number {
  if (frame.length < HEADER + SIGNATURE || (frame[1]! & 2) === 0) return 2;
  const end = HEADER + frame.readUInt32BE(74);
  if (end + SIGNATURE !== frame.length) return 2;
  try {
    const key = keyOf(frame.subarray(18, 50));
    return verify(null, frame.subarray(0, end), key, frame.subarray(end)) ? 1 : 0;
  } catch {
    return 2;
  }
}

parentPort!.on('message', ({ id, buf }: { id: number; buf: ArrayBuffer }) => {
  const b = Buffer.from(buf);
  const n = b.readUInt32BE(0);
  const out = new Uint8Array(n);
  let at = 4;
  for (let i = 0; i < n; i++) {
    const len = b.readUInt32BE(at);
    out[i] = verdict(b.subarray(at + 4, at + 4 + len));
    at += 4 + len;
  }
  parentPort!.postMessage({ id, verdicts: out }, [out.buffer]);
});
