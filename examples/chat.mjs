#!/usr/bin/env node
// A two-terminal encrypted chat on Sealbus, using nothing but @sealbus/client.
//
//   node examples/chat.mjs alice.id whoami            (creates alice.id; prints its token)
//   node examples/chat.mjs bob.id whoami              (the same for bob)
//   (an admin registers both tokens: membershipd user add --public TOKEN ...)
//   terminal 1:  node examples/chat.mjs alice.id create chat.demo     (prints the room id)
//   terminal 1:  node examples/chat.mjs alice.id invite <room id> <bob's sign_pub>
//   terminal 2:  node examples/chat.mjs bob.id join <room id>
//   terminal 1:  node examples/chat.mjs alice.id join <room id>
//
// Lines typed in one terminal appear, decrypted and verified, in the other.
// Where the daemon is: --nats URL[,URL] and --control URL[,URL], or the
// environment (SEALBUS_NATS, SEALBUS_CONTROL); default the local
// `npm start` (nats://127.0.0.1:4222, http://127.0.0.1:8470).

import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { ControlError, Sealbus, encodePublicIdentity, loadOrCreateIdentity } from '@sealbus/client';

const USAGE =
  'usage: chat.mjs ID_FILE (whoami | create SUBJECT | invite ROOM SIGN_PUB | join ROOM) [--nats URL] [--control URL]';
let parsed;
try {
  parsed = parseArgs({
    allowPositionals: true,
    options: { nats: { type: 'string' }, control: { type: 'string' } },
  });
} catch (err) {
  console.error(`${err.message}\n${USAGE}`);
  process.exit(2);
}
const [idFile, cmd, arg, arg2] = parsed.positionals;
if (!idFile || !cmd) {
  console.error(USAGE);
  process.exit(2);
}
const natsServers = (
  parsed.values.nats ??
  process.env.SEALBUS_NATS ??
  'nats://127.0.0.1:4222'
).split(',');
const controlUrls = (
  parsed.values.control ??
  process.env.SEALBUS_CONTROL ??
  'http://127.0.0.1:8470'
).split(',');

const { identity, created } = await loadOrCreateIdentity(idFile);
if (cmd === 'whoami' || created) {
  console.log(`sign_pub ${identity.signPubHex}\nkex_pub  ${identity.kexPubHex}`);
  // What an admin registers: `membershipd user add --handle H --public TOKEN --role member`.
  console.log(`token    ${encodePublicIdentity(identity)}`);
  if (cmd === 'whoami') process.exit(0);
}

let bus;
try {
  bus = await Sealbus.connect({ natsServers, controlUrls, identity, name: 'sealbus-chat' });
} catch (err) {
  if (err instanceof ControlError && err.code === 'UNKNOWN_KEY')
    console.error(`${idFile} is not registered: an admin adds it with the token \`whoami\` prints`);
  else if (err instanceof ControlError && err.code === 'REVOKED_KEY')
    console.error(`${idFile} is revoked`);
  else
    console.error(
      `no Sealbus daemon answered at ${controlUrls.join(', ')} / ${natsServers.join(', ')} ` +
        `(${err.message}); start one with \`npm start\`, or say where it is with --control and --nats`
    );
  process.exit(1);
}
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
    await bus.subscribe(arg, (m) => console.log(`<${m.sender.slice(0, 8)}> ${m.string()}`));
    console.error('joined; type lines to send, Ctrl-D to leave');
    for await (const line of createInterface({ input: process.stdin })) {
      if (line.trim()) await bus.publish(arg, line);
    }
  } else {
    console.error(`unknown command ${cmd}\n${USAGE}`);
    process.exitCode = 2;
  }
} catch (err) {
  console.error(`${cmd}: ${err.code ? `${err.code}: ` : ''}${err.message}`);
  process.exitCode = 1;
} finally {
  await bus.close();
}
