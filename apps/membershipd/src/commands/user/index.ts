import type { Command } from 'commander';
import { registerUserAdd } from './add.js';
import { registerUserList } from './list.js';
import { registerUserLookup } from './lookup.js';
import { registerUserRevoke } from './revoke.js';

export function registerUser(program: Command): void {
  const user = program
    .command('user')
    .description(
      'manage the allowlist on a node, over its privileged loopback connection (works while serve runs)'
    );
  registerUserAdd(user);
  registerUserList(user);
  registerUserLookup(user);
  registerUserRevoke(user);
}
