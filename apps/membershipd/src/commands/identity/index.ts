import type { Command } from 'commander';
import { registerIdentityFingerprint } from './fingerprint.js';
import { registerIdentityNatsSeed } from './nats-seed.js';
import { registerIdentityNew } from './new.js';
import { registerIdentityPublic } from './public.js';
import { registerIdentityShow } from './show.js';

export function registerIdentity(program: Command): void {
  const identity = program
    .command('identity')
    .description(
      'create or inspect identity files (Ed25519 + X25519, 0600) and what they present: token, NATS key, fingerprint'
    );
  registerIdentityNew(identity);
  registerIdentityShow(identity);
  registerIdentityPublic(identity);
  registerIdentityNatsSeed(identity);
  registerIdentityFingerprint(identity);
}
