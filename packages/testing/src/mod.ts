export { freePort, freePorts } from './ports.js';
export { pidAlive, tempDir, waitFor, type TempDir } from './fs.js';
export { startNats, type StartNatsOptions, type TestNats } from './nats.js';
export {
  membershipdBin,
  runClientcheck,
  runMembershipd,
  runNode,
  startDaemon,
  type CliResult,
  type LogRecord,
  type ProcessExit,
  type StartDaemonOptions,
  type TestDaemon,
} from './daemon.js';
export {
  clusterScript,
  startCluster,
  type ClusterNode,
  type ClusterState,
  type TestCluster,
} from './cluster.js';
