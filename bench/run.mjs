#!/usr/bin/env node
// `npm run bench [-- suite...]`: runs the benchmarks and prints figures and
// ratios measured side by side in one run. Absolute numbers drift on a shared
// machine; compare the ratios.

import { controlBench } from './control.mjs';
import { dataplaneBench } from './dataplane.mjs';
import { clusterBench } from './cluster.mjs';
import { opsBench } from './ops.mjs';
import { durabilityBench } from './durability.mjs';
import { persistedBench } from './persisted.mjs';

const SUITES = {
  control: controlBench,
  dataplane: dataplaneBench,
  cluster: clusterBench,
  ops: opsBench,
  persisted: persistedBench,
  durability: durabilityBench,
};
const wanted = process.argv.slice(2);
for (const name of wanted.length ? wanted : Object.keys(SUITES)) {
  const suite = SUITES[name];
  if (!suite) {
    console.error(`unknown suite ${name}; have: ${Object.keys(SUITES).join(', ')}`);
    process.exit(2);
  }
  await suite();
}
// A suite's lingering client timers must not keep a finished run alive.
process.exit(0);
