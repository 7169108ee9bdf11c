// Demo: a master accepts TCP connections and hands each one to one of two worker processes,
// which serve HTTP on it. The master makes a few requests, kills a worker to show its
// replacement take over, makes a few more, closes the pool and exits.
//
//   npm run demo        (tsx examples/worker-pool.ts)
//
// The same file is the master and, started with the argument 'worker', each worker.
import http from 'node:http';
import { WorkerPool, serveFromPool } from 'fdpass';

function worker(): void {
  const server = http.createServer((_request, response) => {
    response.end(`worker ${process.env.FDPASS_POOL_WORKER_ID} (pid ${process.pid})`);
  });
  // The connections the master hands over become this server's: no listen() here.
  serveFromPool(server);
}

/** One request on a new connection: what the worker that served it said. */
function get(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, agent: false }, (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (body += chunk));
        response.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}

async function requests(port: number, count: number): Promise<void> {
  for (let i = 1; i <= count; i++) console.log(`  request ${i}: served by ${await get(port)}`);
}

async function master(): Promise<void> {
  const pool = new WorkerPool(__filename, { workers: 2, args: ['worker'] });
  const { port } = (await pool.listen({ port: 0, host: '127.0.0.1' }))!;
  const pids = pool.workers.map(({ id, pid }) => `worker ${id} (pid ${pid})`).join(' and ');
  console.log(`master ${process.pid}: listening on 127.0.0.1:${port}, with ${pids}`);
  await requests(port, 4);

  const replaced = new Promise<number | undefined>((resolve) => pool.once('online', (started) => resolve(started.pid)));
  pool.once('exit', ({ id, pid, signal, rehandedConnections }) =>
    console.log(
      `master: worker ${id} (pid ${pid}) died of ${signal}; connections sent to it and not yet taken, handed on: ${rehandedConnections}`,
    ),
  );
  process.kill(pool.workers[0]!.pid!, 'SIGKILL');
  console.log(`master: started worker 0 again (pid ${await replaced})`);
  await requests(port, 4);

  await pool.close(); // stop accepting; each worker drains and exits
  console.log('master: closed; the workers have exited');
}

(process.argv[2] === 'worker' ? Promise.resolve(worker()) : master()).catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
