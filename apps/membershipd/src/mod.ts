export { run } from './cli.js';
export { Daemon, EXIT, type DaemonOptions } from './daemon/daemon.js';
export { dataPaths, type DataPaths } from './daemon/paths.js';
export { readNodeInfo, type NodeInfo } from './daemon/nodefile.js';
export { VERSION } from './version.js';
export { internalNatsSeed, loadOrCreateCalloutKeys, nodeUsers } from './dataplane/keys.js';
