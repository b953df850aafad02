import type { Command } from 'commander';
import { requestSigner, signRequest } from '@sealbus/crypto';
import { CliError, EXIT_CODES, action } from '../cli.js';
import { loadIdentityForCli } from './identity/load.js';

/** A shell word, single-quoted (what `--curl` prints is pasted into a shell). */
const sq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * `membershipd sign --identity FILE METHOD URL [--data BODY] [--curl]`: signs
 * one request as the control plane expects it (RFC 9421, Ed25519, RFC 9530
 * Content-Digest with a body) and prints the headers, or a curl command that
 * sends it. For operators, and to check a signer written in another language
 * against this one (the same identity, method, URL and body give the same
 * Content-Digest and the same signature base; the signature itself differs
 * by its nonce and time).
 */
export function registerSign(program: Command): void {
  program
    .command('sign')
    .description(
      'sign one control-plane request (RFC 9421) and print its headers, or the curl command that sends it'
    )
    .requiredOption('--identity <file>', 'the identity that signs')
    .argument('<method>', 'HTTP method (GET, POST, PUT, DELETE)')
    .argument('<url>', 'the full URL, e.g. http://127.0.0.1:8470/me')
    .option('--data <body>', 'a JSON body (sent as application/json)')
    .option('--curl', 'print a curl command instead of the headers')
    .action(
      action(
        'sign',
        async (
          method: string,
          rawUrl: string,
          opts: { identity: string; data?: string; curl?: boolean }
        ) => {
          const m = method.toUpperCase();
          if (!/^(GET|POST|PUT|DELETE|PATCH|HEAD)$/.test(m))
            throw new CliError(
              EXIT_CODES.USAGE,
              `sign: ${method} is not an HTTP method this API uses`
            );
          let url: URL;
          try {
            url = new URL(rawUrl);
          } catch {
            throw new CliError(EXIT_CODES.USAGE, `sign: ${rawUrl} is not a URL`);
          }
          if (url.protocol !== 'http:' && url.protocol !== 'https:')
            throw new CliError(EXIT_CODES.USAGE, 'sign: the URL must be http:// or https://');
          const body = opts.data !== undefined ? new TextEncoder().encode(opts.data) : undefined;
          const identity = await loadIdentityForCli(opts.identity);
          const headers = signRequest(requestSigner(identity), {
            method: m,
            url,
            ...(body && body.length ? { body, contentType: 'application/json' } : {}),
          });
          if (opts.curl) {
            const parts = ['curl', '-sS', '-X', m];
            for (const [k, v] of Object.entries(headers)) parts.push('-H', sq(`${k}: ${v}`));
            if (opts.data !== undefined) parts.push('--data-binary', sq(opts.data));
            parts.push(sq(url.toString()));
            process.stdout.write(parts.join(' ') + '\n');
          } else {
            for (const [k, v] of Object.entries(headers)) process.stdout.write(`${k}: ${v}\n`);
          }
        }
      )
    );
}
