#!/usr/bin/env node
import('../dist/src/main.js').catch((err) => {
  if (err?.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/src/main.js')) {
    process.stderr.write(
      'clientcheck is not built yet: run `npm run setup` in the repository root\n'
    );
    process.exit(1);
  }
  throw err;
});
