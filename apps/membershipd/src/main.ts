// A reader that closes the pipe early (| head) is not an error worth a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});

import { run } from './cli.js';

process.exitCode = await run(process.argv);
