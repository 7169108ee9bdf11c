// Children and worker threads started with a Channel to their parent, in Node, Python and Perl.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import { Channel, forkWithChannel, spawnWithChannel, spawnWorker, type ChildWithChannel } from '../lib/index.js';
import { countFds, expectNoFdLeakAroundEachTest, fixtures, openFds, python, root } from './helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-child-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const dist = path.join(root, 'dist', 'index.js');

expectNoFdLeakAroundEachTest();

function tempFile(name: string, content: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, content);
  return file;
}

function readAt0(fd: number): string {
  const buffer = Buffer.alloc(256);
  return buffer.toString('utf8', 0, readSync(fd, buffer, 0, 256, 0));
}

function exited({ child }: ChildWithChannel): Promise<{ code: number | null; stderr: string }> {
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stderr }));
  });
}

/** Sends the child a file's fd and returns what it says back (JSON) and reads through the fd it returns. */
async function roundTrip(started: ChildWithChannel, content: string): Promise<{ reply: Record<string, unknown>; returned: string }> {
  const file = openSync(tempFile(`${content}.txt`, content), 'r');
  try {
    await started.channel.send(file);
  } finally {
    closeSync(file);
  }
  const message = await started.channel.recv();
  try {
    return { reply: JSON.parse(message.data.toString() || '{}') as Record<string, unknown>, returned: readAt0(message.fd) };
  } finally {
    message.close();
  }
}

describe('child processes', () => {
  it('a Node child opens its end with parentChannel(): the fd after stdio, close-on-exec, the variable removed', async () => {
    const started = forkWithChannel(path.join(fixtures, 'channel-child.mjs'), [], { stdio: ['ignore', 'ignore', 'pipe'] });
    const done = exited(started);
    const { reply, returned } = await roundTrip(started, 'to-node');
    expect(reply).toEqual({ variable: '3', fd: 3, closeOnExec: true, variableAfter: null, content: 'to-node' });
    expect(returned).toBe('to-node');
    await started.channel.close();
    expect(await done).toEqual({ code: 0, stderr: '' });
  });

  it('the channel fd follows a longer stdio array, and the variable names it', async () => {
    const started = forkWithChannel(path.join(fixtures, 'channel-child.mjs'), [], {
      stdio: ['ignore', 'ignore', 'pipe', 'ignore', 'ignore'],
    });
    const done = exited(started);
    const { reply } = await roundTrip(started, 'fd-five');
    expect(reply).toMatchObject({ variable: '5', fd: 5 });
    await started.channel.close();
    expect((await done).code).toBe(0);
  });

  // A child under another uid cannot load what the parent's execArgv names (tsx's or vitest's
  // loaders in a checkout only root can read): execArgv, as with fork, says what it gets.
  it.each([
    ["this process's by default", undefined],
    ['execArgv when given, as fork takes it', ['--no-warnings']],
  ])('forkWithChannel starts node with %s', async (_name, execArgv) => {
    const fixture = path.join(fixtures, 'channel-child.mjs');
    const started = forkWithChannel(fixture, ['an-arg'], { stdio: ['ignore', 'ignore', 'pipe'], ...(execArgv && { execArgv }) });
    const done = exited(started);
    // spawn returned after the exec, and the child waits for our message: its command line is final.
    const commandLine = readFileSync(`/proc/${started.child.pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
    expect(commandLine).toEqual([process.execPath, ...(execArgv ?? process.execArgv), fixture, 'an-arg']);
    expect((await roundTrip(started, 'exec-argv')).returned).toBe('exec-argv');
    await started.channel.close();
    expect(await done).toEqual({ code: 0, stderr: '' });
  });

  it('forkWithChannel refuses an execArgv that is not an array of strings, opening nothing', () => {
    const before = countFds();
    for (const execArgv of ['--no-warnings', [42]]) {
      expect(() => forkWithChannel(path.join(fixtures, 'channel-child.mjs'), [], { execArgv } as never)).toThrow(
        expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }),
      );
    }
    expect(countFds()).toBe(before);
  });

  // socket.recv_fds and IO::FDPass do not retry on EAGAIN: a non-blocking end would make them
  // fail when they call before the parent has sent, which the delay below makes certain.
  const pythonChild = `
import fcntl, json, os, socket, sys
fd = int(os.environ['FDPASS_CHANNEL_FD'])
blocking = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK == 0
sock = socket.socket(fileno=fd)
data, fds, _, _ = socket.recv_fds(sock, 1, 1)
content = os.pread(fds[0], 64, 0).decode()
print(json.dumps({'fd': fd, 'blocking': blocking, 'content': content}), flush=True)
socket.send_fds(sock, [b'\\0'], fds)
os.close(fds[0])
sock.recv(1)
`;
  const perlChild = `
use IO::FDPass; use Fcntl qw(F_GETFL O_NONBLOCK);
my $fd = $ENV{FDPASS_CHANNEL_FD};
open(my $sock, '+<&=', $fd) or die "fd $fd: $!";
my $blocking = (fcntl($sock, F_GETFL, 0) & O_NONBLOCK) ? 0 : 1;
my $received = IO::FDPass::recv($fd);
die "recv: $!" if $received < 0;
open(my $fh, '<&=', $received) or die "fdopen: $!";
sysread($fh, my $content, 64);
print "$blocking $content\\n";
IO::FDPass::send($fd, $received) or die "send: $!";
close($fh);
sysread($sock, my $eof, 1);
`;

  it.each([
    ['Python (socket.recv_fds)', python, ['-c', pythonChild]],
    ['Perl (IO::FDPass)', 'perl', ['-e', perlChild]],
  ])('a %s child gets its end in blocking mode and passes fds with its own calls', async (_name, command, args) => {
    const started = spawnWithChannel(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    started.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    const done = exited(started);
    await new Promise((resolve) => setTimeout(resolve, 200));
    const { reply, returned } = await roundTrip(started, 'polyglot');
    expect(returned).toBe('polyglot');
    expect(reply).toEqual({});
    await started.channel.close();
    expect(await done).toEqual({ code: 0, stderr: '' });
    expect(stdout).toBe(command === python ? '{"fd": 3, "blocking": true, "content": "polyglot"}\n' : '1 polyglot\n');
  });

  it('a program that cannot start: child emits error, the channel ends, nothing leaks', async () => {
    const started = spawnWithChannel(path.join(dir, 'no-such-program'), [], { stdio: 'ignore' });
    const failed = new Promise<NodeJS.ErrnoException>((resolve) => started.child.once('error', resolve));
    await expect(started.channel.recv()).rejects.toMatchObject({ code: 'EOF' });
    expect((await failed).code).toBe('ENOENT');
    await started.channel.close();
  });

  it('bad arguments are refused before anything is opened', () => {
    const before = countFds();
    expect(() => spawnWithChannel(42 as unknown as string)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => spawnWithChannel('true', [], 'x' as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(countFds()).toBe(before);
  });

  it('a process started without a channel gets ERR_FDPASS_NO_PARENT_CHANNEL, and a bad variable too', () => {
    const script = `
      const { parentChannel } = require(${JSON.stringify(dist)});
      try { parentChannel(); } catch (e) { console.log(e.code + ': ' + e.message); }`;
    const run = (env: NodeJS.ProcessEnv) =>
      execFileSync(process.execPath, ['-e', script], { env: { ...process.env, ...env }, encoding: 'utf8' });
    delete process.env.FDPASS_CHANNEL_FD;
    expect(run({})).toMatch(/^ERR_FDPASS_NO_PARENT_CHANNEL: .*FDPASS_CHANNEL_FD is not set/);
    expect(run({ FDPASS_CHANNEL_FD: '3x' })).toMatch(/^ERR_FDPASS_NO_PARENT_CHANNEL: FDPASS_CHANNEL_FD must be an fd number/);
    expect(run({ FDPASS_CHANNEL_FD: '99' })).toMatch(/^EBADF: /);
  });
});

describe('worker threads', () => {
  const workerCode = (body: string) => `
    const { parentPort, workerData } = require('node:worker_threads');
    const { parentChannel, Channel } = require(${JSON.stringify(dist)});
    (async () => { ${body} })().catch((e) => parentPort.postMessage({ error: e.code + ': ' + e.message }));`;

  function workerExit(worker: Worker): Promise<number> {
    return new Promise((resolve) => worker.once('exit', resolve));
  }

  /** The worker's first message; a worker that fails or exits before it sends one says why. */
  function firstMessage(worker: Worker): Promise<unknown> {
    return new Promise((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new Error(`the worker exited with code ${code} before it sent a message`)));
    });
  }

  it('spawnWorker: the worker opens its end in one call, reads through a passed fd and sends one back', async () => {
    const { worker, channel } = spawnWorker(
      workerCode(`
        const channel = parentChannel();
        const message = await channel.recv();
        const buffer = Buffer.alloc(64);
        const text = buffer.toString('utf8', 0, require('node:fs').readSync(message.fd, buffer, 0, 64, 0));
        await channel.send({ data: text, fds: [message.fd] });
        message.close();
        await channel.close();`),
      { eval: true },
    );
    const file = openSync(tempFile('to-worker.txt', 'to-worker'), 'r');
    await channel.send(file, { close: true });
    const reply = await channel.recv();
    expect(reply.data.toString()).toBe('to-worker');
    expect(readAt0(reply.fd)).toBe('to-worker');
    reply.close();
    expect(await workerExit(worker)).toBe(0);
    await channel.close();
  });

  it('a worker that never opens its end: the parent closes it when the worker exits', async () => {
    // Sockets only: the worker's own event loop opens (and closes) fds of its own meanwhile.
    const sockets = () => [...openFds().values()].filter((target) => target.startsWith('socket:')).length;
    const before = sockets();
    const { worker, channel } = spawnWorker(workerCode(`parentPort.postMessage('up');`), { eval: true });
    expect(sockets()).toBe(before + 2);
    expect(await workerExit(worker)).toBe(0);
    expect(sockets()).toBe(before + 1);
    await expect(channel.recv()).rejects.toMatchObject({ code: 'EOF' });
    await channel.close();
  });

  it('a second parentChannel() in the worker is an error, and the workers it starts do not see its end', async () => {
    const { worker, channel } = spawnWorker(
      workerCode(`
        const mine = parentChannel();
        const errors = [];
        try { parentChannel(); } catch (e) { errors.push(e.code); }
        const nested = new (require('node:worker_threads').Worker)(
          "const { parentPort } = require('node:worker_threads');" +
          "try { require(" + JSON.stringify(${JSON.stringify(dist)}) + ").parentChannel(); parentPort.postMessage('opened'); }" +
          "catch (e) { parentPort.postMessage(e.code); }",
          { eval: true });
        errors.push(await new Promise((resolve) => nested.once('message', resolve)));
        parentPort.postMessage({ errors });
        await mine.close();`),
      { eval: true },
    );
    const reply = await firstMessage(worker);
    expect(await workerExit(worker)).toBe(0);
    await channel.close();
    expect(reply).toEqual({ errors: ['ERR_FDPASS_NO_PARENT_CHANNEL', 'ERR_FDPASS_NO_PARENT_CHANNEL'] });
  });

  it("a Channel's fd handed to a worker by number is refused there (EEXIST), not a silent hang", async () => {
    const [here, there] = Channel.pair();
    const worker = new Worker(
      workerCode(`
        try { new Channel(workerData.fd); parentPort.postMessage('opened'); }
        catch (e) { parentPort.postMessage(e.code + ': ' + e.message); }`),
      { eval: true, workerData: { fd: there.fd } },
    );
    const reply = await firstMessage(worker);
    await workerExit(worker);
    expect(reply).toMatch(/^EEXIST: .*already owned by another Channel/);
    await Promise.all([here.close(), there.close()]);
  });
});
