#!/usr/bin/env node
// `npm run bench [-- [--json] suite...]`: runs the benchmarks and prints figures and
// ratios measured side by side in one run. Absolute numbers drift on a shared
// machine; compare the ratios.

import { controlBench } from './control.mjs';
import { dataplaneBench } from './dataplane.mjs';
import { clusterBench } from './cluster.mjs';
import { opsBench } from './ops.mjs';
import { durabilityBench } from './durability.mjs';
import { persistedBench } from './persisted.mjs';
import { blobsBench } from './blobs.mjs';
import { framesBench } from './frames.mjs';
import { reconnectStorm } from './storm.mjs';
import { failoverBench } from './failover.mjs';

const SUITES = {
  control: controlBench,
  dataplane: dataplaneBench,
  cluster: clusterBench,
  ops: opsBench,
  persisted: persistedBench,
  durability: durabilityBench,
  blobs: blobsBench,
  frames: framesBench,
  // Part of `cluster` too; named on its own to run only it.
  storm: () => reconnectStorm(),
  failover: failoverBench,
};
// Suites run when none is named (`storm` and `failover` run inside `cluster`).
const DEFAULT = Object.keys(SUITES).filter((s) => s !== 'storm' && s !== 'failover');
const args = process.argv.slice(2);
// `--json`: the run ends with one line, a JSON object of the named figures
// every suite measured in this run (the human-readable tables stay above it).
const json = args.includes('--json');
const wanted = args.filter((a) => a !== '--json');
for (const name of wanted) {
  if (!SUITES[name]) {
    console.error(`unknown suite ${name}; have: ${Object.keys(SUITES).join(', ')}`);
    process.exit(2);
  }
}
const figures = {};
for (const name of wanted.length ? wanted : DEFAULT) {
  const result = await SUITES[name]();
  Object.assign(figures, result?.figures ?? {});
}
if (json) {
  const rounded = Object.fromEntries(
    Object.entries(figures).map(([k, v]) => [k, Number.isFinite(v) ? Number(v.toPrecision(4)) : v])
  );
  console.log(JSON.stringify(rounded));
}
// A suite's lingering client timers must not keep a finished run alive.
process.exit(0);
