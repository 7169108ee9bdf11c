// Zero-downtime restart: generation 1 of an HTTP server serves on a port; generation 2 starts,
// takes the listening socket over, and generation 1 drains and exits, while clients keep
// sending requests, on keep-alive connections and on a new connection each. None fails,
// and no connection is refused: the listening socket is open in one process or both at
// every moment.
//
//   npx tsx examples/zero-downtime-restart.ts
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { offerListeners, takeOverListeners } from 'fdpass';

/** One generation of the server: what an application's own entry point would do. */
async function generation(socketPath: string): Promise<void> {
  const server = http.createServer((_request, response) => response.end(`${process.pid}`));

  // Take the socket over from the generation running now; on a first start, bind the port.
  // From the takeover on, the socket is the server's: server.close() closes it.
  const takeover = await takeOverListeners(socketPath, { servers: [server] });
  if (takeover === null) await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));

  // Offer it to the next generation. Once one listens on it, this one stops accepting and
  // drains: each connection's next request is answered with `Connection: close`.
  const offer = await offerListeners(socketPath, [server]);
  const { port } = server.address() as { port: number };
  console.log(takeover ? `took-over ${port} ${takeover.previous.pid}` : `listening ${port}`);

  const handedOver = new Promise<number>((resolve) => offer.once('handover', () => resolve(performance.now())));
  await offer.drained;
  console.log(`drained ${Math.round(performance.now() - (await handedOver))}`);
  process.exit(0);
}

/** A generation started as a child process, the lines it prints, and its exit code. */
function start(socketPath: string): { child: ChildProcess; exited: Promise<number | null>; nextLine(): Promise<string> } {
  const child = spawn(process.execPath, [...process.execArgv, __filename, 'generation', socketPath], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  // Listened for from the start: a generation may exit before its last line has been read.
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  return {
    child,
    exited,
    async nextLine() {
      const next = await lines.next();
      return next.done === true ? '' : next.value;
    },
  };
}

/** Clients that send requests until stopped: each answer counted by the pid that served it. */
function clients(port: number, keepAlive: number, perRequest: number) {
  const servedBy = new Map<string, number>();
  const failures: string[] = [];
  const agent = new http.Agent({ keepAlive: true });
  let running = true;
  const request = (options: http.RequestOptions) =>
    new Promise<void>((resolve) => {
      http
        .get({ host: '127.0.0.1', port, ...options }, (response) => {
          let body = '';
          response.on('data', (chunk: Buffer) => (body += chunk.toString()));
          response.on('end', () => {
            servedBy.set(body, (servedBy.get(body) ?? 0) + 1);
            resolve();
          });
        })
        .on('error', (error: NodeJS.ErrnoException) => {
          failures.push(error.code ?? error.message);
          resolve();
        });
    });
  const loop = async (options: http.RequestOptions) => {
    while (running) await request(options);
  };
  const loops = [
    ...Array.from({ length: keepAlive }, () => loop({ agent })),
    ...Array.from({ length: perRequest }, () => loop({ agent: false })),
  ];
  return {
    servedBy,
    failures,
    async stop() {
      running = false;
      await Promise.all(loops);
      agent.destroy();
    },
  };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-restart-demo-'));
  const socketPath = path.join(dir, 'handover.sock');

  const first = start(socketPath);
  const [, port] = (await first.nextLine()).split(' '); // 'listening <port>'
  console.log(`generation 1 (pid ${first.child.pid}): listening on 127.0.0.1:${port}, offering its socket at ${socketPath}`);
  const load = clients(Number(port), 4, 4);
  console.log('clients: 4 on keep-alive connections and 4 with a new connection per request, sending without pause');
  await sleep(500);

  const second = start(socketPath);
  const [, secondPort, from] = (await second.nextLine()).split(' '); // 'took-over <port> <old pid>'
  console.log(`generation 2 (pid ${second.child.pid}): took the socket over from pid ${from}, listening on port ${secondPort}`);
  const [, drainMs] = (await first.nextLine()).split(' '); // 'drained <ms>'
  const code = await first.exited;
  console.log(
    `generation 1 (pid ${first.child.pid}): stopped accepting, drained its connections in ${drainMs} ms, exited with code ${code}`,
  );
  await sleep(500);

  await load.stop();
  const answered = (pid: number | undefined) => load.servedBy.get(String(pid)) ?? 0;
  console.log(
    `requests: ${answered(first.child.pid)} answered by generation 1, ${answered(second.child.pid)} by generation 2, ${load.failures.length} failed` +
      (load.failures.length > 0 ? ` (${[...new Set(load.failures)].join(', ')})` : ''),
  );
  second.child.kill();
  await second.exited;
  rmSync(dir, { recursive: true });
  if (load.failures.length > 0 || answered(first.child.pid) === 0 || answered(second.child.pid) === 0) process.exitCode = 1;
}

(process.argv[2] === 'generation' ? generation(process.argv[3]!) : main()).catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
