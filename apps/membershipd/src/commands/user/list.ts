import type { Command } from 'commander';
import { grantActive, type UserRecord } from '@sealbus/protocol';
import { action, outputOption } from '../../cli.js';
import { addNodeOptions, withNodeStore, type NodeOptions } from './node.js';

interface ListOptions extends NodeOptions {
  output: 'table' | 'json';
}

const COLUMNS: Array<[string, (u: UserRecord) => string]> = [
  ['SIGN_PUB', (u) => u.sign_pub],
  ['HANDLE', (u) => u.handle],
  ['ROLE', (u) => u.role],
  ['STATUS', (u) => u.status],
  ['BOUND', (u) => (u.bound ? 'yes' : 'no')],
  ['NATS_PUB', (u) => u.nats_pub ?? '-'],
  ['CREATED', (u) => u.created_at],
  ['REVOKED', (u) => u.revoked_at ?? '-'],
  [
    'EXPIRES',
    (u) => (u.expires_at ? `${u.expires_at}${grantActive(u.expires_at) ? '' : ' (expired)'}` : '-'),
  ],
];

/** Plain aligned columns: greppable, and wide keys are never truncated. */
export function formatTable(users: UserRecord[]): string {
  const rows = [COLUMNS.map(([h]) => h), ...users.map((u) => COLUMNS.map(([, f]) => f(u)))];
  const widths = COLUMNS.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return (
    rows
      .map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  '))
      .join('\n') + '\n'
  );
}

export function registerUserList(user: Command): void {
  addNodeOptions(
    user
      .command('list')
      .description('list every user, revoked ones included')
      .addOption(outputOption(['table', 'json']))
  ).action(
    action('user list', async (opts: ListOptions) => {
      await withNodeStore(opts, async ({ store }) => {
        const users = await store.listUsers();
        process.stdout.write(
          opts.output === 'json' ? JSON.stringify(users, null, 2) + '\n' : formatTable(users)
        );
      });
    })
  );
}
