#!/usr/bin/env node
// A two-terminal encrypted chat on Sealbus.
//
//   terminal 1:  node examples/chat.mjs alice.id create chat.demo
//                (prints the room id)
//   terminal 1:  node examples/chat.mjs alice.id invite <room id> <bob's sign_pub>
//   terminal 2:  node examples/chat.mjs bob.id join <room id>
//   terminal 1:  node examples/chat.mjs alice.id join <room id>
//
// Lines typed in one terminal appear, decrypted and verified, in the other.
// Both identities must be registered users (`membershipd user add --public TOKEN ...`,
// the token printed by whoami).
// Environment: SEALBUS_NATS (default nats://127.0.0.1:4222) and
// SEALBUS_CONTROL (default http://127.0.0.1:8470), comma-separated lists.

import { createInterface } from 'node:readline';
import { encodePublicIdentity, loadOrCreateIdentity } from '@sealbus/crypto';
import { Sealbus } from '@sealbus/client';

const [idFile, cmd, arg, arg2] = process.argv.slice(2);
if (!idFile || !cmd) {
  console.error(
    'usage: chat.mjs ID_FILE (whoami | create SUBJECT | invite ROOM SIGN_PUB | join ROOM)'
  );
  process.exit(2);
}
const { identity, created } = await loadOrCreateIdentity(idFile);
if (cmd === 'whoami' || created) {
  console.log(`sign_pub ${identity.signPubHex}\nkex_pub  ${identity.kexPubHex}`);
  // What an admin registers: `membershipd user add --handle H --public TOKEN --role member`.
  console.log(`token    ${encodePublicIdentity(identity)}`);
  if (cmd === 'whoami') process.exit(0);
}
const bus = await Sealbus.connect({
  natsServers: (process.env.SEALBUS_NATS ?? 'nats://127.0.0.1:4222').split(','),
  controlUrls: (process.env.SEALBUS_CONTROL ?? 'http://127.0.0.1:8470').split(','),
  identity,
  name: 'sealbus-chat',
});
bus.on('rejected', (r) => console.error(`! rejected frame (${r.code}): ${r.reason}`));
bus.on('loss', (l) =>
  console.error(`! possible loss from ${l.sender.slice(0, 8)}: seq ${l.from}-${l.to}`)
);
bus.on('reconnect', (s) => console.error(`! reconnected to ${s}`));

try {
  if (cmd === 'create') {
    const room = await bus.createRoom({
      subject: arg,
      policy: { encrypt: true, persist: false, sign: true },
    });
    console.log(`room ${room.id} on subject ${room.subject}`);
  } else if (cmd === 'invite') {
    await bus.invite(arg, arg2, 'writer');
    console.log(`invited ${arg2.slice(0, 12)}… to ${arg}`);
  } else if (cmd === 'join') {
    await bus.subscribe(arg, (m) =>
      console.log(`<${m.sender.slice(0, 8)}> ${new TextDecoder().decode(m.data)}`)
    );
    console.error('joined; type lines to send, Ctrl-D to leave');
    for await (const line of createInterface({ input: process.stdin })) {
      if (line.trim()) await bus.publish(arg, new TextEncoder().encode(line));
    }
  } else {
    console.error(`unknown command ${cmd}`);
    process.exitCode = 2;
  }
} finally {
  await bus.close();
}
