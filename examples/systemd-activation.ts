// systemd socket activation: systemd (here its test tool, systemd-socket-activate) opens the
// listening socket and starts the server with it on fd 3; listenFds() finds it, and Node's
// HTTP server takes it over.
//
//   systemd-socket-activate -l 8080 --fdname=http node --import tsx examples/systemd-activation.ts
//   curl http://localhost:8080/
//
// Not `npx tsx ...` under systemd-socket-activate: npx and tsx's own command start the script
// in a child process, whose pid is not LISTEN_PID, so listenFds() rightly takes nothing.
//
// Run on its own (npx tsx examples/systemd-activation.ts), it starts itself under
// systemd-socket-activate on a Unix socket, makes one request, prints the answer, stops the
// server and exits.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { listenFds } from 'fdpass';

const LISTEN_VARIABLES = ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'];

/** Started by systemd: serve HTTP on every socket it passed, until SIGTERM. */
function serve(fds: ReturnType<typeof listenFds>): void {
  const left = LISTEN_VARIABLES.filter((name) => process.env[name] !== undefined);
  const servers = fds.map(({ fd, name }) => {
    console.log(
      `server ${process.pid}: listenFds() took fd ${fd} named '${name}' ` +
        `(LISTEN_* left in the environment: ${left.length === 0 ? 'none' : left.join(', ')})`,
    );
    // The server owns the fd from here on: server.close() closes it.
    const server = http.createServer((_request, response) => {
      response.end(`hello from pid ${process.pid}, served on fd ${fd} ('${name}'), the socket systemd opened\n`);
    });
    server.listen({ fd });
    return server;
  });
  process.once('SIGTERM', () => {
    for (const server of servers) {
      server.close();
      server.closeAllConnections();
    }
    console.log(`server ${process.pid}: SIGTERM, stopped`);
  });
}

/** Not activated: start this file under systemd-socket-activate, ask it once, stop it. */
async function demo(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-systemd-'));
  const socketPath = path.join(dir, 'http.sock');
  const activator = spawn(
    'systemd-socket-activate',
    ['-l', socketPath, '--fdname=http', process.execPath, ...process.execArgv, __filename],
    {
      stdio: ['ignore', 'inherit', 'pipe'],
    },
  );
  let stderr = '';
  const exited = new Promise<number | null>((resolve, reject) => {
    activator.once('error', reject);
    activator.once('close', resolve);
  });
  // It says "Listening on ..." once the socket is there; it starts us at the first connection.
  await new Promise<void>((resolve, reject) => {
    activator.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      if (/Listening on /.test(stderr)) resolve();
    });
    exited.then(() => reject(new Error(`systemd-socket-activate exited: ${stderr}`)), reject);
  });
  console.log(`client: systemd-socket-activate (pid ${activator.pid}) listens on ${socketPath}; connecting starts the server`);
  const answer = await new Promise<string>((resolve, reject) => {
    http
      .get({ socketPath, path: '/', agent: false }, (response) => {
        let body = '';
        response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
        response.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
  console.log(`client: GET / answered: ${answer.trimEnd()}`);
  // systemd-socket-activate exec'd the server: same pid, so this stops the server.
  activator.kill('SIGTERM');
  const code = await exited;
  console.log(`client: the server exited with code ${code}`);
  rmSync(dir, { recursive: true, force: true });
  if (code !== 0) throw new Error(`server failed: ${stderr}`);
}

const wrapped = process.env.LISTEN_PID !== undefined && process.env.LISTEN_PID !== String(process.pid);
const fds = listenFds();
if (fds.length > 0) {
  serve(fds);
} else if (wrapped) {
  console.error('LISTEN_PID is another process: start this with `node --import tsx`, not through npx or the tsx command');
  process.exitCode = 1;
} else {
  demo().catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
