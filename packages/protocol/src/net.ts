import { isIP } from 'node:net';

/**
 * `localhost`, 127.0.0.0/8 or ::1 (with or without brackets): the hosts
 * plaintext may reach. One rule for the daemon's listeners and CLI and for
 * the SDK's transport checks.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1') return true;
  return isIP(h) === 4 && h.startsWith('127.');
}
