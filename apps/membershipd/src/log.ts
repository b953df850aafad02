import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * JSON-lines logger on stdout. Private keys never reach a log call; the
 * redaction list is a second line of defence for fields that might carry one.
 */
export function createLogger(level = 'info'): Logger {
  return pino({
    level,
    base: { service: 'membershipd', pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: [
        '*.sign_priv',
        '*.kex_priv',
        '*.seed',
        '*.signSeed',
        '*.kexPriv',
        'sign_priv',
        'kex_priv',
        'seed',
      ],
      censor: '[redacted]',
    },
  });
}
