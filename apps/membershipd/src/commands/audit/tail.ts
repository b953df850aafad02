import type { Command } from 'commander';
import type { AuditRecord } from '@sealbus/protocol';
import { action, outputOption, parseCount } from '../../cli.js';
import { addNodeOptions, withNodeStore, type NodeOptions } from '../user/node.js';

interface TailOptions extends NodeOptions {
  n: number;
  output: 'text' | 'json';
}

/** One line per record: time, outcome, action, target, actor. */
export function formatAuditLine(r: AuditRecord): string {
  const detail = r.detail
    ? ' ' +
      Object.entries(r.detail)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ')
    : '';
  return `${r.time}  ${r.outcome.padEnd(6)}  ${r.action.padEnd(20)}  target=${r.target ?? '-'}  actor=${r.actor ?? `(${r.via})`}  req=${r.request_id}${r.client_request_id !== undefined ? `  client_req=${JSON.stringify(r.client_request_id)}` : ''}${detail}`;
}

export function registerAuditTail(audit: Command): void {
  addNodeOptions(
    audit
      .command('tail')
      .description('print the last audit records, oldest first')
      .option('-n <count>', 'how many records', parseCount, 20)
      .addOption(outputOption())
  ).action(
    action('audit tail', async (opts: TailOptions) => {
      await withNodeStore(opts, async ({ store }) => {
        const records = await store.audit.tail(opts.n);
        process.stdout.write(
          opts.output === 'json'
            ? JSON.stringify(records, null, 2) + '\n'
            : records.map((r) => formatAuditLine(r) + '\n').join('')
        );
      });
    })
  );
}
