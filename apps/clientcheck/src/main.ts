import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { runCheck, type CheckResult } from './check.js';
import { InsecureTransportError } from '@sealbus/client';

const duration = (v: string): number => {
  const m = /^(\d+)(ms|s|m)$/.exec(v.trim());
  if (!m) throw new InvalidArgumentError('expected a duration like 500ms, 30s, 2m');
  return Number(m[1]) * ({ ms: 1, s: 1_000, m: 60_000 } as const)[m[2] as 'ms' | 's' | 'm'];
};
const positive = (v: string): number => {
  if (!/^\d+$/.test(v) || Number(v) < 1)
    throw new InvalidArgumentError('expected a positive number');
  return Number(v);
};
const list = (v: string): string[] =>
  v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

const program = new Command('clientcheck')
  .description(
    'prove end-to-end encrypted publish/subscribe works on a Sealbus deployment (and keeps working while nodes die)'
  )
  .requiredOption('--identity-file <file>', 'identity of a registered user (0600)')
  .requiredOption('--nats-seeds <urls>', 'NATS servers, comma separated', list)
  .requiredOption('--ctrl-seeds <urls>', 'membershipd control URLs, comma separated', list)
  .option('--ca <file>', 'CA bundle for tls:// and https:// seeds')
  .option(
    '--allow-insecure',
    'accept nats:// and http:// seeds that are not loopback (plaintext, unauthenticated)',
    false
  )
  .addOption(
    new Option(
      '--mode <mode>',
      'golden: publish N and expect N; loop: one per interval for a duration'
    )
      .choices(['golden', 'loop'])
      .default('golden')
  )
  .option('--messages <n>', 'golden: how many', positive, 100)
  .option('--duration <d>', 'loop: how long', duration, 30_000)
  .option('--interval <d>', 'loop: time between messages', duration, 100)
  .option('--persist', 'use a persisted room (JetStream): any loss is a failure', false)
  .option('--keep-room', 'do not delete the room at the end', false)
  .option('--grace <d>', 'wait this long for late messages at the end', duration, 10_000)
  .option('--json', 'print the final report as one JSON line', false)
  .showHelpAfterError('(add --help for usage)')
  .exitOverride();

let code: number;
try {
  program.parse(process.argv);
  const o = program.opts();
  // Loop mode ends early on SIGINT/SIGTERM and still reports (a second signal,
  // or any signal in golden mode, exits at once with 130).
  const stop = new AbortController();
  for (const sig of ['SIGINT', 'SIGTERM'] as const)
    process.on(sig, () => {
      if (stop.signal.aborted || o.mode !== 'loop') process.exit(130);
      stop.abort();
    });
  const result: CheckResult = await runCheck({
    identityFile: o.identityFile,
    natsSeeds: o.natsSeeds,
    ctrlSeeds: o.ctrlSeeds,
    ...(o.ca ? { ca: readFileSync(o.ca) } : {}),
    allowInsecure: o.allowInsecure,
    mode: o.mode,
    messages: o.messages,
    durationMs: o.duration,
    intervalMs: o.interval,
    persist: o.persist,
    keepRoom: o.keepRoom,
    graceMs: o.grace,
    stop: stop.signal,
    log: (line) => process.stdout.write(`${new Date().toISOString()} ${line}\n`),
  });
  const lostText = result.lost.length
    ? `lost ${result.lost.length}: ${result.lost.join(',')}`
    : 'lost 0';
  process.stdout.write(
    `result: sent ${result.sent}, received ${result.received}, ${lostText}, duplicates ${result.duplicates}, ` +
      `failovers ${result.failovers.length}, longest gap ${result.longest_gap_ms} ms -> ${result.ok ? 'OK' : 'FAILED'}\n`
  );
  if (o.json) process.stdout.write(JSON.stringify(result) + '\n');
  code = result.ok ? 0 : 1;
} catch (err) {
  if (err instanceof CommanderError) code = err.exitCode === 0 ? 0 : 2;
  else if (err instanceof InsecureTransportError) {
    process.stderr.write(`clientcheck: ${err.message} (--allow-insecure)\n`);
    code = 2;
  } else {
    process.stderr.write(`clientcheck: ${(err as Error).message}\n`);
    code = 1;
  }
}
process.exit(code);
