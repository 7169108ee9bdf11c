// One contender of npm run bench:http: a master and N workers serving the same tiny HTTP
// response, started as `node --import tsx bench/http-server.ts <mode> <workers>`:
//   pool              fdpass's WorkerPool, the workers serving with serveFromPool
//   pool-sched-other  the same with batchScheduling: false (the master under SCHED_OTHER)
//   cluster-rr        Node's cluster, round-robin (its default on Linux)
//   cluster-rr-batch  the same with its master under SCHED_BATCH, as the pool's runs (chrt,
//                     once the workers listen: they run under SCHED_OTHER)
//   cluster-none      Node's cluster, SCHED_NONE (the workers accept from one shared socket)
// The master prints `listening <port>` once every worker is ready, and exits on SIGTERM.
import { execFileSync } from 'node:child_process';
import cluster from 'node:cluster';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WorkerPool, serveFromPool } from 'fdpass';

const [mode = 'pool', workersArg = '2'] = process.argv.slice(2);
const workers = Number(workersArg);

function handler(_request: http.IncomingMessage, response: http.ServerResponse): void {
  response.end('hello world\n');
}

async function poolMaster(batchScheduling: boolean): Promise<void> {
  const pool = new WorkerPool(__filename, { workers, args: ['pool-worker'], batchScheduling });
  const { port } = (await pool.listen({ port: 0, host: '127.0.0.1' }))!;
  console.log(`listening ${port}`);
  process.once('SIGTERM', () => void pool.close().then(() => process.exit(0)));
}

async function clusterMaster(policy: number): Promise<void> {
  cluster.schedulingPolicy = policy;
  cluster.setupPrimary({ args: [mode, workersArg] });
  const ready: Promise<number>[] = [];
  for (let i = 0; i < workers; i++) {
    const worker = cluster.fork();
    ready.push(new Promise((resolve) => worker.once('listening', (address: AddressInfo) => resolve(address.port))));
  }
  // Port 0 in every worker: cluster gives them all the one port the master bound.
  const [port] = await Promise.all(ready);
  // This thread only (its id is the pid): the workers started under SCHED_OTHER already.
  if (mode === 'cluster-rr-batch') execFileSync('chrt', ['--batch', '--pid', '0', String(process.pid)]);
  console.log(`listening ${port}`);
  process.once('SIGTERM', () => {
    for (const worker of Object.values(cluster.workers ?? {})) worker?.process.kill('SIGKILL');
    process.exit(0);
  });
}

if (mode === 'pool-worker') {
  serveFromPool(http.createServer(handler));
} else if (cluster.isWorker) {
  http.createServer(handler).listen(0, '127.0.0.1');
} else if (mode === 'pool' || mode === 'pool-sched-other') {
  void poolMaster(mode === 'pool');
} else {
  void clusterMaster(mode === 'cluster-none' ? cluster.SCHED_NONE : cluster.SCHED_RR);
}
