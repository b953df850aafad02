import { Option, type Command } from 'commander';
import { AUDIT_OUTCOMES, parseKeyHex } from '@sealbus/protocol';
import { auditSubjectFilter, type AuditQuery } from '@sealbus/store';
import { action, CliError, EXIT_CODES, outputOption, parseCount } from '../../cli.js';
import { parsePastTime } from '../../util/expiry.js';
import { addNodeOptions, withNodeStore, type NodeOptions } from '../user/node.js';
import { formatAuditLine } from './tail.js';

interface QueryOptions extends NodeOptions {
  actor?: string;
  action?: string;
  since?: string;
  until?: string;
  outcome?: (typeof AUDIT_OUTCOMES)[number];
  via?: 'http' | 'cli';
  n: number;
  newest: boolean;
  output: 'text' | 'json';
}

/** Checks every filter before anything touches the network; a bad one is a usage error. */
export function auditQueryFilters(opts: QueryOptions, now = Date.now()): AuditQuery {
  const q: AuditQuery = { limit: opts.n, ...(opts.newest ? { newest: true } : {}) };
  if (opts.actor !== undefined) q.actor = parseKeyHex(opts.actor, 'actor');
  if (opts.action !== undefined) {
    try {
      auditSubjectFilter(opts.action);
    } catch (err) {
      throw new CliError(EXIT_CODES.USAGE, `action: ${(err as Error).message}`);
    }
    q.action = opts.action;
  }
  if (opts.since !== undefined) q.since = parsePastTime(opts.since, 'since', now);
  if (opts.until !== undefined) q.until = parsePastTime(opts.until, 'until', now);
  if (q.since !== undefined && q.until !== undefined && q.since > q.until) {
    throw new CliError(EXIT_CODES.USAGE, '--since is after --until');
  }
  if (opts.outcome !== undefined) q.outcome = opts.outcome;
  if (opts.via !== undefined) q.via = opts.via;
  return q;
}

export function registerAuditQuery(audit: Command): void {
  addNodeOptions(
    audit
      .command('query')
      .description(
        'print the audit records matching every given filter, oldest first (at most -n of them)'
      )
      .option('--actor <sign_pub>', "the signer's public key (64 hex)")
      .option(
        '--action <name>',
        'an action (user.add) or every action under a prefix (room.*); filtered by the server'
      )
      .option('--since <time>', 'from this RFC 3339 time, or this long ago (1h, 7d)')
      .option('--until <time>', 'up to this RFC 3339 time, or this long ago (1h, 7d)')
      .addOption(new Option('--outcome <outcome>', 'how it ended').choices(AUDIT_OUTCOMES))
      .addOption(
        new Option('--via <via>', 'a signed request (http) or the node CLI (cli)').choices([
          'http',
          'cli',
        ])
      )
      .option('-n <count>', 'at most this many records (the oldest matching ones)', parseCount, 100)
      .option('--newest', 'keep the newest -n matches instead of the oldest', false)
      .addOption(outputOption())
  ).action(
    action('audit query', async (opts: QueryOptions) => {
      const filters = auditQueryFilters(opts);
      await withNodeStore(opts, async ({ store }) => {
        const { records, truncated } = await store.audit.query({
          ...filters,
          deadline: Date.now() + opts.timeout,
        });
        process.stdout.write(
          opts.output === 'json'
            ? JSON.stringify(records, null, 2) + '\n'
            : records.map((r) => formatAuditLine(r) + '\n').join('')
        );
        if (truncated) {
          process.stderr.write(
            `membershipd audit query: more records match than -n ${opts.n}; ` +
              `narrow the query (--since, --until) or raise -n${opts.newest ? '' : ' (--newest keeps the latest)'}\n`
          );
        }
      });
    })
  );
}
