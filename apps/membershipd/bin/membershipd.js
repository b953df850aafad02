#!/usr/bin/env node
// Thin launcher: the program is compiled TypeScript under dist/.
// A node reloads its TLS certificates on SIGHUP (`systemctl reload`); until
// `serve` installs that handler, a SIGHUP must not end it (systemd counts a
// SIGHUP death as clean and would not restart it).
if (process.argv[2] === 'serve') process.on('SIGHUP', () => {});
import('../dist/src/main.js').catch((err) => {
  if (err?.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/src/main.js')) {
    process.stderr.write(
      'membershipd is not built yet: run `npm run setup` in the repository root\n'
    );
    process.exit(1);
  }
  throw err;
});
