import type { Command } from 'commander';
import { registerAuditQuery } from './query.js';
import { registerAuditTail } from './tail.js';

export function registerAudit(program: Command): void {
  const audit = program
    .command('audit')
    .description("read the node's audit log (privileged loopback path, like `user`)");
  registerAuditTail(audit);
  registerAuditQuery(audit);
}
