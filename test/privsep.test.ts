// Privilege separation: this process, as root, binds a port below 1024 and opens a file only
// root may read, and hands both to a worker running as uid 65534 (nobody), which can do
// neither itself yet serves HTTP on that port with that file's content.
import { type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { text } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { forkWithChannel, spawnWithChannel } from '../lib/index.js';
import { copyForAnyUser, envForAnyUser, expectNoFdLeakAroundEachTest, openFds, within } from './helpers.js';

const NOBODY = 65534;
/** Real, effective, saved and filesystem ids, as /proc/<pid>/status lists them. */
const ALL_NOBODY = '65534 65534 65534 65534';
/** A supplementary group this process joins for a test: one the worker must not keep. */
const EXTRA_GROUP = 4242;
const isRoot = process.getuid?.() === 0;
// Ports below this one are root's: net.ipv4.ip_unprivileged_port_start, 1024 unless lowered.
// Some container runtimes set 0, so that any uid may bind any port: the worker's bind then
// fails with EADDRINUSE, on the port root holds, instead of EACCES.
const unprivilegedPortStart = Number(readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8'));

// This root process's fds, counted before and after each test.
expectNoFdLeakAroundEachTest();

describe.skipIf(!isRoot)('privilege separation', () => {
  let copy: string;
  let secretDir: string;
  let worker: string;
  beforeAll(() => {
    // The worker loads its code and fdpass from a copy uid 65534 can read, wherever the
    // checkout lives (under /root, mode 0700, it could not).
    copy = copyForAnyUser(['examples/privilege-separation-worker.mjs']);
    worker = path.join(copy, 'examples', 'privilege-separation-worker.mjs');
    secretDir = mkdtempSync(path.join(tmpdir(), 'fdpass-privsep-')); // 0700, root's
  });
  afterAll(() => {
    rmSync(copy, { recursive: true, force: true });
    rmSync(secretDir, { recursive: true, force: true });
  });

  it('the worker, as uid 65534 without root groups, cannot open the file or bind the port, yet serves on that port with that content', async () => {
    const secret = path.join(secretDir, 'secret.txt');
    writeFileSync(secret, 'for root only\n', { mode: 0o600 });
    joinGroupForThisTest(EXTRA_GROUP);

    const listener = await listenOnLowPort();
    const { port } = listener.address() as net.AddressInfo;
    const socket = `socket:[${listeningInode(port)}]`;
    const file = openSync(secret, 'r');

    const started = forkWithChannel(worker, [secret, String(port)], {
      uid: NOBODY,
      gid: NOBODY,
      execArgv: [], // not vitest's loaders from the checkout
      env: envForAnyUser(copy),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    const done = outcome(started.child);
    const hello = JSON.parse((await within(started.channel.recv(), 20_000, "the worker's hello")).data.toString()) as unknown;
    expect(hello).toEqual({
      uid: NOBODY,
      gid: NOBODY,
      refused: { open: 'EACCES', bind: port < unprivilegedPortStart ? 'EACCES' : 'EADDRINUSE' },
    });
    // Who the worker is, as the kernel says: nobody in every uid and gid, and no group of root's.
    expect(credentials(statusOf(started.child.pid!))).toEqual({ Uid: ALL_NOBODY, Gid: ALL_NOBODY, Groups: '' });
    expect(credentials(statusOf('self')).Groups.split(' ')).toContain(String(EXTRA_GROUP));

    await started.channel.send({ fds: [listener, file] }, { close: true });
    expect((await within(started.channel.recv(), 20_000, 'the worker listening')).data.toString()).toBe('serving');
    // Ownership moved with the fds: root holds neither the listening socket nor the file now.
    expect([...openFds().values()]).not.toContain(socket);
    expect([...openFds().values()]).not.toContain(secret);
    expect([...openFds(started.child.pid).values()]).toEqual(expect.arrayContaining([socket, secret]));

    expect(await get(port)).toEqual({ status: 200, body: 'for root only\n' });
    expect(await get(port)).toEqual({ status: 200, body: 'for root only\n' });
    expect(listeningInode(port)).toBe(socket.slice(8, -1));

    await started.channel.close(); // the worker's cue to stop
    expect(await within(done, 20_000, 'the worker exiting')).toEqual({ code: 0, stdout: '', stderr: '' });
    expect(() => listeningInode(port)).toThrow(/nothing listens/);
  });

  it("spawn's uid and gid through spawnWithChannel: both drop root's groups; uid alone leaves gid 0", async () => {
    joinGroupForThisTest(EXTRA_GROUP);
    const credentialsAs = async (ids: { uid?: number; gid?: number }) => {
      const started = spawnWithChannel('cat', ['/proc/self/status'], { ...ids, stdio: ['ignore', 'pipe', 'pipe'] });
      const { code, stdout, stderr } = await outcome(started.child);
      expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
      await started.channel.close();
      return credentials(stdout);
    };
    expect(await credentialsAs({ uid: NOBODY, gid: NOBODY })).toEqual({ Uid: ALL_NOBODY, Gid: ALL_NOBODY, Groups: '' });
    expect(await credentialsAs({ uid: NOBODY })).toEqual({ Uid: ALL_NOBODY, Gid: '0 0 0 0', Groups: '' });
    expect((await credentialsAs({})).Groups.split(' ')).toContain(String(EXTRA_GROUP));
  });
});

/** This process (root) is in one more group until the test ends. */
function joinGroupForThisTest(gid: number): void {
  const groups = process.getgroups!();
  process.setgroups!([...groups, gid]);
  onTestFinished(() => process.setgroups!(groups));
}

/** A TCP listener on 127.0.0.1 at a free port from 600 to 999, where only root may bind. */
async function listenOnLowPort(): Promise<net.Server> {
  const first = 600 + Math.floor(Math.random() * 400);
  for (let i = 0; i < 400; i++) {
    const server = net.createServer();
    const port = 600 + ((first - 600 + i) % 400);
    const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      server.once('error', resolve).listen(port, '127.0.0.1', () => resolve(undefined));
    });
    if (error === undefined) return server;
    if (error.code !== 'EADDRINUSE') throw error;
  }
  throw new Error('no free port from 600 to 999');
}

/** The inode of the socket listening on 127.0.0.1:port, from the kernel's table. */
function listeningInode(port: number): string {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const line of readFileSync('/proc/net/tcp', 'utf8').trim().split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields[1] === local && fields[3] === '0A') return fields[9]!;
  }
  throw new Error(`nothing listens on 127.0.0.1:${port}`);
}

/** The Uid, Gid and Groups lines of a /proc/<pid>/status, white space folded. */
function credentials(status: string): { Uid: string; Gid: string; Groups: string } {
  const line = (name: string) => new RegExp(`^${name}:(.*)$`, 'm').exec(status)![1]!.trim().replace(/\s+/g, ' ');
  return { Uid: line('Uid'), Gid: line('Gid'), Groups: line('Groups') };
}

const statusOf = (pid: number | 'self'): string => readFileSync(`/proc/${pid}/status`, 'utf8');

/** What child prints, and its exit code once it has closed its stdio. */
function outcome(child: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const output = { stdout: '', stderr: '' };
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (output.stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (output.stderr += chunk));
  return once(child, 'close').then(([code]) => ({ code: code as number | null, ...output }));
}

/** GET / on a new connection (no keep-alive, so the worker's server has nothing left open). */
async function get(port: number): Promise<{ status: number | undefined; body: string }> {
  const response = await new Promise<http.IncomingMessage>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, agent: false }, resolve).on('error', reject);
  });
  return { status: response.statusCode, body: await text(response) };
}
