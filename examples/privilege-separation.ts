// Privilege separation: a process running as root binds a port below 1024 and opens a file
// only root may read, then hands both to a worker running as nobody (uid 65534), which serves
// HTTP on that port with that file's content: what nobody cannot do alone.
//
//   sudo npx tsx examples/privilege-separation.ts
//
// The worker (privilege-separation-worker.mjs) runs as nobody from its first instruction:
// spawn's uid and gid options make the child setgroups(0), setgid and setuid between fork and
// exec. So nobody must be able to read its code, as it can where an app is installed
// root-owned and world-readable (/opt/app, /usr/lib/node_modules). From a checkout nobody
// cannot read (under /root, mode 0700), this example starts the worker as root instead, and
// the worker drops to nobody itself once its code is loaded, before it takes any fd.
import { once } from 'node:events';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { text } from 'node:stream/consumers';
import { forkWithChannel, type ChildWithChannel } from 'fdpass';

const NOBODY = 65534;
const workerFile = path.join(__dirname, 'privilege-separation-worker.mjs');

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.log(`uid ${process.getuid?.()}: this example runs as root, which binds a port below 1024 and opens a root-only file`);
    console.log('for a worker running as nobody. Run it as root: sudo npx tsx examples/privilege-separation.ts');
    return;
  }
  const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-privsep-')); // mode 0700: root's alone
  try {
    const secretPath = path.join(dir, 'secret.txt');
    writeFileSync(secretPath, `root's secret, written by pid ${process.pid}\n`, { mode: 0o600 });
    const listener = await listenOnLowPort();
    const { port } = listener.address() as net.AddressInfo;
    const file = openSync(secretPath, 'r');
    console.log(`root ${process.pid}: bound 127.0.0.1:${port} and opened ${secretPath} (mode 0600, in a 0700 directory)`);

    const worker = await startWorker([secretPath, String(port)]);
    const { pid } = worker.child;
    console.log(`worker ${pid}: runs as ${credentials(pid!)} (/proc/${pid}/status)`);
    const { refused } = worker.hello;
    console.log(`worker ${pid}: open(${secretPath}) itself -> ${refused.open}; bind 127.0.0.1:${port} itself -> ${refused.bind}`);

    // The fds travel in one message. close: root's copies are closed once the kernel has them,
    // so the worker holds the only ones (its HTTP server owns the socket, its code the file).
    await worker.channel.send({ fds: [listener, file] }, { close: true });
    console.log(`root: handed the listening socket and the file to worker ${pid}, and closed its own copies`);
    await worker.channel.recv(); // 'serving'

    // http, not fetch: fetch refuses some of these ports (993, 995...), as the Fetch standard lists them.
    const response = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, agent: false }, resolve).on('error', reject);
    });
    console.log(`client: GET http://127.0.0.1:${port}/ -> ${response.statusCode} ${JSON.stringify(await text(response))}`);

    await worker.channel.close(); // the worker's cue to stop
    const [code] = (await worker.exited) as [number | null];
    console.log(`worker ${pid}: exited with code ${code}`);
  } finally {
    rmSync(dir, { recursive: true });
  }
}

interface Hello {
  uid: number;
  gid: number;
  refused: { open: string | null; bind: string | null };
}

type Worker = ChildWithChannel & { hello: Hello; exited: Promise<unknown[]> };

/** The worker as nobody from its start; where nobody cannot read its code, as root that drops to nobody. */
async function startWorker(args: string[]): Promise<Worker> {
  const unprivileged = await start(args, { uid: NOBODY, gid: NOBODY });
  if ('hello' in unprivileged) {
    console.log(`root: started worker ${unprivileged.child.pid} as nobody (spawn's uid and gid)`);
    return unprivileged;
  }
  console.log(`root: the worker could not load its code as nobody (${unprivileged.failure});`);
  console.log('root: starting it as root instead, to drop to nobody itself once its code is loaded');
  const dropping = await start([...args, `--drop-to=${NOBODY}:${NOBODY}`], {});
  if ('hello' in dropping) {
    console.log(`root: started worker ${dropping.child.pid} as root; it loaded its code and dropped to nobody`);
    return dropping;
  }
  throw new Error(`the worker did not start: ${dropping.failure}`);
}

/** Starts the worker and waits for its hello, or for the reason it exited without one. */
async function start(args: string[], ids: { uid?: number; gid?: number }): Promise<Worker | { failure: string }> {
  // execArgv []: the worker is plain JavaScript; tsx's loader, which this process runs under,
  // is in node_modules, which nobody may not be able to read.
  const started = forkWithChannel(workerFile, args, { ...ids, execArgv: [], stdio: ['ignore', 'inherit', 'pipe'] });
  const exited = once(started.child, 'close');
  let stderr = '';
  const collect = (chunk: Buffer) => (stderr += chunk.toString());
  started.child.stderr!.on('data', collect);
  try {
    const hello = JSON.parse((await started.channel.recv()).data.toString()) as Hello;
    // Started: from here on, what the worker says on stderr goes to ours.
    process.stderr.write(stderr);
    started.child.stderr!.off('data', collect).pipe(process.stderr);
    return { ...started, hello, exited };
  } catch {
    // The channel ended before the hello: the worker exited.
    await exited;
    await started.channel.close();
    return { failure: /^\w*Error.*$/m.exec(stderr)?.[0] ?? stderr.trim() };
  }
}

/** Uid, Gid and Groups as /proc/<pid>/status shows them. */
function credentials(pid: number): string {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return ['Uid', 'Gid', 'Groups']
    .map((name) => `${name} ${new RegExp(`^${name}:(.*)$`, 'm').exec(status)![1]!.trim().replace(/\s+/g, ' ') || '(none)'}`)
    .join(', ');
}

/** A TCP listener on 127.0.0.1, on a free port below 1024 (only root may bind there). */
async function listenOnLowPort(): Promise<net.Server> {
  for (let attempt = 0; ; attempt++) {
    const server = net.createServer();
    const port = 600 + Math.floor(Math.random() * 400);
    try {
      await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', resolve));
      return server;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt === 50) throw error;
    }
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
