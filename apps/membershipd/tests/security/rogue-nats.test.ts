import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server, type Socket } from 'node:net';
import {
  ed25519Verify,
  encodePublicIdentity,
  generateIdentity,
  natsUserKey,
  publicFromUserNkey,
  signRequest,
  toHex,
  userNkeyFromPublic,
  type Identity,
} from '@sealbus/crypto';
import { Sealbus } from '@sealbus/client';
import { freePort, startDaemon, type TestDaemon } from '@sealbus/testing';
import { adminOf, nodeStore, rawRequest } from '../helpers.js';

/** What the rogue server saw in the client's CONNECT. */
interface Captured {
  nkey: string;
  sig: string;
}

/**
 * A fake NATS server on loopback: it sends an INFO whose nonce is `nonce`,
 * records the CONNECT's nkey and signature, and refuses the connection.
 */
async function rogueServer(
  nonce: string
): Promise<{ url: string; captured: Promise<Captured>; close(): Promise<void> }> {
  const port = await freePort();
  const sockets = new Set<Socket>();
  let resolveCaptured!: (c: Captured) => void;
  const captured = new Promise<Captured>((r) => (resolveCaptured = r));
  const server: Server = createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    const info = {
      server_id: 'NROGUE',
      server_name: 'rogue',
      version: '2.10.0',
      proto: 1,
      host: '127.0.0.1',
      port,
      headers: true,
      max_payload: 1048576,
      auth_required: true,
      nonce,
    };
    sock.write(`INFO ${JSON.stringify(info)}\r\n`);
    let buf = '';
    sock.on('data', (chunk) => {
      buf += chunk.toString('utf8');
      const m = /^CONNECT (\{.*?\})\r\n/m.exec(buf);
      if (!m) return;
      const connect = JSON.parse(m[1]!) as Partial<Captured>;
      resolveCaptured({ nkey: String(connect.nkey), sig: String(connect.sig) });
      sock.end("-ERR 'Authorization Violation'\r\n");
    });
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  return {
    url: `nats://127.0.0.1:${port}`,
    captured,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('a rogue NATS server cannot harvest an HTTP signature', { timeout: 120_000 }, () => {
  let d: TestDaemon;
  let admin: Identity;

  before(async () => {
    d = await startDaemon();
    admin = await adminOf(d);
  });
  after(async () => {
    await d?.dispose();
  });

  test('the INFO nonce is the signature base of an admin promotion; what the SDK signs is useless', async () => {
    // The request the attacker wants signed: register itself as an admin.
    const attacker = generateIdentity();
    const body = new TextEncoder().encode(
      JSON.stringify({ public: encodePublicIdentity(attacker), handle: 'mallory', role: 'admin' })
    );
    const url = new URL('/users', d.httpUrl);
    let base: Uint8Array | undefined;
    const headers = signRequest(
      {
        publicKeyHex: admin.signPubHex,
        sign: (m) => {
          base = m;
          return new Uint8Array(64); // replaced by what the rogue server collects
        },
      },
      { method: 'POST', url, body, contentType: 'application/json' }
    );
    const nonce = new TextDecoder().decode(base!);
    assert.match(nonce, /^"@method": POST\n/, 'the nonce is an RFC 9421 signature base');

    const rogue = await rogueServer(nonce);
    try {
      // Admin #0 connects its SDK to the rogue server (control plane: the real daemon).
      const connecting = Sealbus.connect({
        natsServers: [rogue.url],
        controlUrls: [d.httpUrl],
        identity: admin,
        nats: { maxReconnectAttempts: 0, reconnect: false, timeout: 5_000 },
      });
      const captured = await Promise.race([
        rogue.captured,
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error('no CONNECT within 15 s')), 15_000)
        ),
      ]);
      await connecting.then(
        (bus) => bus.close(),
        () => {}
      );

      // The SDK presented its derived NATS key, never the sign key.
      assert.equal(captured.nkey, natsUserKey(admin).publicKey);
      assert.notEqual(captured.nkey, userNkeyFromPublic(admin.signPub));
      assert.equal(toHex(publicFromUserNkey(captured.nkey)), admin.natsPubHex);
      const sig = new Uint8Array(Buffer.from(captured.sig, 'base64url'));
      assert.equal(sig.length, 64);
      // It signed the nonce, with the NATS key...
      assert.equal(ed25519Verify(admin.natsPub, base!, sig), true);
      // ...so the signature does not verify under sign_pub: not an HTTP signature.
      assert.equal(ed25519Verify(admin.signPub, base!, sig), false);

      // Replayed to the daemon as the admin's signature, it is refused.
      const replay = {
        ...headers,
        signature: headers['signature']!.replace(
          /=:.*:$/,
          `=:${Buffer.from(sig).toString('base64')}:`
        ),
      };
      const r = await rawRequest(d.httpUrl, 'POST', '/users', replay, body);
      assert.equal(r.status, 401, JSON.stringify(r.json));
      assert.equal(r.json.error.code, 'BAD_SIGNATURE');
      const { store, nc } = await nodeStore(d);
      try {
        assert.equal(await store.getUser(attacker.signPubHex), null, 'no admin was added');
      } finally {
        await nc.close();
      }
    } finally {
      await rogue.close();
    }
  });
});
