// Servers and clients on socket paths: many real client processes, peer credentials,
// socket file safety, abstract names, close(), bad input.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, closeSync, existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { binding, constants } from '../lib/binding';
import { Channel, connect, listen, socketpair, type Server } from '../lib/index';
import {
  contentOf,
  copyForAnyUser,
  envForAnyUser,
  countFds,
  expectNoFdLeakAroundEachTest,
  fixtures,
  isCloexec,
  isNonBlocking,
  python,
  spawnNodePeer,
  spawnPeer,
  within,
} from './helpers';

expectNoFdLeakAroundEachTest();

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'fdpass-server-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let serial = 0;
const socketPath = (): string => path.join(dir, `s${serial++}.sock`);
const abstractName = (): string => `fdpass-test-${process.pid}-${serial++}`;

/** The server side of the exchange in fixtures/socket-client.mjs: a file's fd in, a socket's fd back. */
function serveExchanges(server: Server): { served: number; mismatches: string[]; errors: unknown[] } {
  const stats = { served: 0, mismatches: [] as string[], errors: [] as unknown[] };
  server.on('connection', (channel) => void serve(channel));
  const serve = async (channel: Channel): Promise<void> => {
    try {
      for await (const message of channel) {
        const id = message.data.toString();
        const content = contentOf(message.fd);
        message.close();
        if (content !== id) stats.mismatches.push(`${id}: ${content}`);
        const [mine, theirs] = socketpair();
        writeSync(mine, `ok ${id}`);
        closeSync(mine);
        await channel.send({ data: 'reply', fds: [theirs] }, { close: true });
        stats.served++;
      }
    } catch (error) {
      // A client killed mid-exchange: its channel fails; the server goes on.
      stats.errors.push(error);
    } finally {
      await channel.close();
    }
  };
  return stats;
}

async function until(condition: () => boolean, what: string, ms = 10_000): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > ms) throw new Error(`${what}: not after ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('many clients', () => {
  it('serves 200 clients from 4 processes at once, and goes on while killed clients come and go', async () => {
    const fdsBefore = countFds();
    const server = await listen(socketPath());
    const stats = serveExchanges(server);

    const exchanges = (n: number) => spawnNodePeer('socket-client.mjs', ['exchange', server.path, dir, String(n)]);
    const hangers = [1, 2].map(() => spawnNodePeer('socket-client.mjs', ['hang', server.path, dir, '6']));
    const clients = [1, 2, 3, 4].map(() => exchanges(50));
    // The killed clients die while the others are mid-exchange.
    await Promise.all(hangers.map((hanger) => hanger.line()));
    for (const hanger of hangers) hanger.child.kill('SIGKILL');

    const results = await within(Promise.all(clients.map((client) => client.exited)), 60_000, 'clients');
    const late = await within(exchanges(20).exited, 30_000, 'a client after the kills');
    for (const { code, stdout, stderr } of [...results, late]) {
      expect(code, stderr).toBe(0);
      const report = JSON.parse(stdout) as { ok: number; errors: string[]; fdsBefore: number; fdsAfter: number };
      expect(report.errors).toEqual([]);
      expect(report.fdsAfter).toBe(report.fdsBefore);
    }
    expect(results.map((r) => (JSON.parse(r.stdout) as { ok: number }).ok)).toEqual([50, 50, 50, 50]);
    expect((JSON.parse(late.stdout) as { ok: number }).ok).toBe(20);
    await Promise.all(hangers.map((hanger) => hanger.exited));

    expect(stats.served).toBeGreaterThanOrEqual(220);
    expect(stats.mismatches).toEqual([]);
    // Every channel, the killed clients' too, ends and is closed by the server's handler.
    await until(() => server.connections === 0, 'the server closing every channel');
    await server.close();
    expect(countFds()).toBe(fdsBefore);
  });
});

describe('new sockets', () => {
  it('accepted and connected sockets are close-on-exec and non-blocking from the start', async () => {
    const server = await listen(socketPath());
    const accepted = new Promise<Channel>((resolve) => server.once('connection', resolve));
    const client = await connect(server.path);
    const channel = await accepted;
    for (const fd of [client.fd, channel.fd]) {
      expect(isCloexec(fd)).toBe(true);
      expect(isNonBlocking(fd)).toBe(true);
    }
    await Promise.all([client.close(), channel.close()]);
    await server.close();
  });
});

describe('peer credentials', () => {
  it("channel.peer is the client process's pid, uid and gid, and the client sees the server's", async () => {
    const server = await listen(socketPath());
    const seen = new Promise<Channel>((resolve) => server.once('connection', resolve));
    const client = spawnNodePeer('socket-client.mjs', ['peer', server.path]);
    const channel = await within(seen, 20_000, 'the connection');
    expect(channel.peer).toEqual({ pid: client.child.pid, uid: process.getuid!(), gid: process.getgid!() });
    const { self, peer } = JSON.parse(await client.line()) as Record<string, unknown>;
    expect(self).toEqual(channel.peer);
    expect(peer).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    const hello = await channel.recv();
    expect(hello.data.toString()).toBe('hello');
    await channel.send({ data: 'bye' });
    expect(await client.line()).toBe('received bye');
    await client.exited;
    await channel.close();
    await server.close();
  });

  it.skipIf(process.getuid?.() !== 0)('allow() refuses a client running under another uid before user code sees it', async () => {
    // A world-reachable socket, so that uid 65534 can connect at all: allow() is the guard.
    const open = mkdtempSync(path.join(tmpdir(), 'fdpass-open-'));
    chmodSync(open, 0o755);
    const server = await listen({ path: path.join(open, 's.sock'), mode: 0o666, allow: (peer) => peer.uid === process.getuid!() });
    const connections: Channel[] = [];
    server.on('connection', (channel) => connections.push(channel));
    const refused = new Promise((resolve) => server.once('refused', resolve));

    // The stranger loads fdpass from a copy it can read, wherever the checkout lives.
    const anyUserRoot = copyForAnyUser();
    onTestFinished(() => rmSync(anyUserRoot, { recursive: true }));
    const stranger = spawn(process.execPath, [path.join(anyUserRoot, 'test', 'fixtures', 'socket-client.mjs'), 'peer', server.path], {
      uid: 65534,
      gid: 65533, // not the uid: a uid/gid mix-up shows
      env: envForAnyUser(anyUserRoot),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    stranger.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    stranger.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exitCode = new Promise((resolve) => stranger.on('close', resolve));

    await within(exitCode, 20_000, 'the stranger exiting');
    expect(output).toMatch(/(send EPIPE\n)?recv (EOF|ECONNRESET)\n$/);
    expect(await within(refused, 20_000, 'the refusal')).toEqual({ pid: stranger.pid, uid: 65534, gid: 65533 });
    // The stranger connected, then found its channel closed at once: nothing was served.
    expect(await exitCode).toBe(0);
    expect(server.refusedCount).toBe(1);
    expect(connections).toEqual([]);

    // Our own uid still gets in.
    const own = spawnNodePeer('socket-client.mjs', ['peer', server.path]);
    await until(() => connections.length === 1, 'our own client');
    await connections[0]!.send({ data: 'welcome' });
    await own.line();
    expect(await own.line()).toBe('received welcome');
    await own.exited;
    await connections[0]!.close();
    await server.close();
    expect(server.refusedCount).toBe(1);
    rmSync(open, { recursive: true });
  });
});

describe('socket files', () => {
  it('the file has mode 0600 from the moment it exists, as seen by a process racing the listen', async () => {
    const rounds = 40;
    const prefix = `race${serial++}-`;
    const watcher = spawnPeer(python, [path.join(fixtures, 'watch-socket-mode.py'), dir, prefix, String(rounds)]);
    expect(await watcher.line()).toBe('ready');
    const firstSeen: string[] = [];
    for (let k = 0; k < rounds; k++) {
      const server = await listen(path.join(dir, `${prefix}${k}`));
      firstSeen.push(await within(watcher.line(), 20_000, `the watcher seeing round ${k}`));
      expect(lstatSync(server.path).mode & 0o777).toBe(0o600);
      await server.close();
    }
    expect(firstSeen).toEqual(Array.from({ length: rounds }, (_, k) => `${k} 600`));
    expect((await watcher.exited).code).toBe(0);
  });

  it('bind creates the file with the mode already set, before any chmod could run', () => {
    // The race above can miss a short window on a busy machine; this cannot: no chmod here.
    const file = socketPath();
    const sock = binding.unixSocket(constants.SOCK_STREAM);
    try {
      expect(binding.bindUnix(sock, Buffer.from(file), false, 0o600)).toBe(0);
      expect(lstatSync(file).mode & 0o777).toBe(0o600);
    } finally {
      binding.close(sock);
      rmSync(file, { force: true });
    }
  });

  it('takes the mode asked for, whatever the umask', async () => {
    const server = await listen({ path: socketPath(), mode: 0o666 });
    expect(lstatSync(server.path).mode & 0o777).toBe(0o666);
    await server.close();
  });

  it("replaces a dead server's file", async () => {
    const file = socketPath();
    // A socket bound and left behind by a process that is gone.
    const dead = spawnSync(python, ['-c', 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen()', file]);
    expect(dead.status).toBe(0);
    const stale = lstatSync(file);
    expect(stale.isSocket()).toBe(true);
    await expect(connect(file)).rejects.toMatchObject({ code: 'ECONNREFUSED', syscall: 'connect' });

    const server = await listen(file);
    const client = await connect(file);
    await client.close();
    await server.close();
  });

  it('refuses the path of a live server, in another process or this one, and leaves its file alone', async () => {
    const file = socketPath();
    const live = spawnPeer(python, [
      '-c',
      'import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(); print("ready", flush=True); time.sleep(60)',
      file,
    ]);
    try {
      expect(await live.line()).toBe('ready');
      const theirs = lstatSync(file).ino;
      await expect(listen(file)).rejects.toMatchObject({
        code: 'EADDRINUSE',
        syscall: 'bind',
        message: expect.stringContaining('a server is listening there'),
      });
      expect(lstatSync(file).ino).toBe(theirs);
    } finally {
      live.child.kill();
      await live.exited;
    }
    const server = await listen(file); // the file is stale now
    await expect(listen(file)).rejects.toMatchObject({ code: 'EADDRINUSE' });
    await expect(listen({ path: file, type: 'seqpacket' })).rejects.toMatchObject({ code: 'EADDRINUSE' });
    expect(server.listening).toBe(true);
    await server.close();
  });

  it('refuses the path of a server that has bound but not yet called listen(), though it refuses connections', async () => {
    const file = socketPath();
    const starting = spawnPeer(python, [
      '-c',
      'import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); print("bound", flush=True); time.sleep(60)',
      file,
    ]);
    try {
      expect(await starting.line()).toBe('bound');
      const theirs = lstatSync(file).ino;
      await expect(connect(file)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
      await expect(listen(file)).rejects.toMatchObject({
        code: 'EADDRINUSE',
        syscall: 'bind',
        message: expect.stringContaining('not yet listening'),
      });
      expect(lstatSync(file).ino).toBe(theirs);
    } finally {
      starting.child.kill();
      await starting.exited;
    }
    const server = await listen(file); // its process is gone: the file is stale
    await server.close();
  });

  it('removes its file on close(), but not a file another server has put at its path since', async () => {
    const file = socketPath();
    const first = await listen(file);
    expect(existsSync(file)).toBe(true);
    await first.close();
    expect(existsSync(file)).toBe(false);

    const old = await listen(file);
    rmSync(file);
    const successor = await listen(file);
    await old.close();
    expect(lstatSync(file).isSocket()).toBe(true);
    const client = await connect(file);
    await client.close();
    await successor.close();
    expect(existsSync(file)).toBe(false);
  });
});

describe('abstract names', () => {
  const listedInProcNetUnix = (name: string): boolean =>
    readFileSync('/proc/net/unix', 'utf8')
      .split('\n')
      .some((line) => line.endsWith(` @${name}`));

  it('listen and connect on an abstract name, which never appears in the filesystem', async () => {
    const name = abstractName();
    const server = await listen({ path: name, abstract: true });
    expect(server.abstract).toBe(true);
    expect(listedInProcNetUnix(name)).toBe(true);
    expect(existsSync(name)).toBe(false);
    expect(existsSync(path.join(dir, name))).toBe(false);

    const accepted = new Promise<Channel>((resolve) => server.once('connection', resolve));
    const client = await connect({ path: name, abstract: true });
    const channel = await accepted;
    await client.send({ data: 'over an abstract name', fds: [0] });
    const message = await channel.recv();
    expect(message.data.toString()).toBe('over an abstract name');
    expect(message.fds).toHaveLength(1);
    message.close();
    await Promise.all([client.close(), channel.close()]);
    await server.close();
    expect(listedInProcNetUnix(name)).toBe(false);
    await expect(connect({ path: name, abstract: true })).rejects.toMatchObject({ code: 'ECONNREFUSED', syscall: 'connect' });
  });

  it('allow() is the guard on an abstract name', async () => {
    const server = await listen({ path: abstractName(), abstract: true, allow: (peer) => peer.pid !== process.pid });
    const refused = new Promise((resolve) => server.once('refused', resolve));
    const client = await connect({ path: server.path, abstract: true });
    expect(await refused).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    await expect(client.recv()).rejects.toMatchObject({ code: expect.stringMatching(/^(EOF|ECONNRESET)$/) });
    await client.close();
    expect(server.refusedCount).toBe(1);
    expect(server.connections).toBe(0);
    await server.close();
  });

  it('a second listener on the same abstract name gets EADDRINUSE', async () => {
    const server = await listen({ path: abstractName(), abstract: true });
    await expect(listen({ path: server.path, abstract: true })).rejects.toMatchObject({ code: 'EADDRINUSE', syscall: 'bind' });
    await server.close();
  });
});

describe('server.close()', () => {
  it('closes channels nobody took, and leaves no fd and no file', async () => {
    const server = await listen(socketPath());
    const clients = await Promise.all([connect(server.path), connect(server.path), connect(server.path)]);
    const taken = (await server[Symbol.asyncIterator]().next()).value as Channel;
    await new Promise((resolve) => setTimeout(resolve, 100)); // the other two: accepted, or still in the backlog
    const closing = server.close();
    expect(server.listening).toBe(false);
    await closing;
    expect(existsSync(server.path)).toBe(false);
    // Nobody took the other two: the server closed them, and their clients see the end.
    for (const client of clients.slice(1))
      await expect(client.recv()).rejects.toMatchObject({ code: expect.stringMatching(/^(EOF|ECONNRESET)$/) });
    // The taken channel is its taker's: still open.
    await clients[0].send({ data: 'still here' });
    expect((await taken.recv()).data.toString()).toBe('still here');
    await taken.close();
    await Promise.all(clients.map((client) => client.close()));
  });

  it('ends an iterator waiting for a connection', async () => {
    const server = await listen(socketPath());
    const iterator = server[Symbol.asyncIterator]();
    const waiting = iterator.next();
    await server.close();
    expect(await waiting).toEqual({ done: true, value: undefined });
    expect(await iterator.next()).toEqual({ done: true, value: undefined });
  });

  it("an iterator's return() ends its waiting next(), so the next client is not handed to nobody", async () => {
    const server = await listen(socketPath());
    const iterator = server[Symbol.asyncIterator]();
    const waiting = iterator.next();
    expect(await iterator.return!()).toEqual({ done: true, value: undefined });
    expect(await within(waiting, 5000, 'the waiting next()')).toEqual({ done: true, value: undefined });
    expect(await iterator.next()).toEqual({ done: true, value: undefined });
    // The client waits for a taker; close() closes its channel, and nothing waits on it.
    const client = await connect(server.path);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(server.connections).toBe(0);
    await within(server.close({ waitForChannels: true }), 5000, 'close({ waitForChannels: true })');
    await expect(client.recv()).rejects.toMatchObject({ code: expect.stringMatching(/^(EOF|ECONNRESET)$/) });
    await client.close();
  });

  it('an allow() that closes the server: the client it let in is closed too, not left open with no owner', async () => {
    let closing: Promise<void> | undefined;
    const server: Server = await listen({ path: socketPath(), allow: () => ((closing = server.close()), true) });
    const connections: Channel[] = [];
    server.on('connection', (channel) => connections.push(channel));
    const client = await connect(server.path);
    await until(() => closing !== undefined, 'allow() running', 5000);
    await closing;
    await expect(within(client.recv(), 5000, 'the client seeing the end')).rejects.toMatchObject({
      code: expect.stringMatching(/^(EOF|ECONNRESET)$/),
    });
    expect(connections).toEqual([]);
    expect(server.connections).toBe(0);
    await client.close();
  });

  it('with waitForChannels, resolves once every channel it handed out has closed', async () => {
    const server = await listen(socketPath());
    const accepted = new Promise<Channel>((resolve) => server.once('connection', resolve));
    const client = await connect(server.path);
    const channel = await accepted;
    let closed = false;
    const closing = server.close({ waitForChannels: true }).then(() => (closed = true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(closed).toBe(false);
    expect(server.connections).toBe(1);
    await client.close(); // the peer leaves; the server's channel reads EOF and closes itself
    await within(closing, 5000, 'close({ waitForChannels: true })');
    expect(channel.closed).toBe(true);
    expect(server.connections).toBe(0);
  });

  it("emits 'close' once, and close() again returns the same outcome", async () => {
    const server = await listen(socketPath());
    let closes = 0;
    server.on('close', () => closes++);
    await Promise.all([server.close(), server.close()]);
    await server.close();
    expect(closes).toBe(1);
  });

  it('for await over a server ends when it closes', async () => {
    const server = await listen(socketPath());
    const clients = await Promise.all([connect(server.path), connect(server.path)]);
    const seen: Channel[] = [];
    let closing: Promise<void> | undefined;
    for await (const channel of server) {
      seen.push(channel);
      if (seen.length === 2) closing = server.close();
    }
    await closing;
    expect(seen).toHaveLength(2);
    await Promise.all([...seen, ...clients].map((channel) => channel.close()));
  });

  it('a listening server keeps the process alive; after close() or unref() it exits by itself', () => {
    const script = (ending: string) => `
      const { listen } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
      listen(${JSON.stringify(socketPath())}).then((server) => { ${ending} });`;
    const run = (ending: string, timeout: number) => spawnSync(process.execPath, ['-e', script(ending)], { timeout });
    expect(run('server.close()', 15_000).status).toBe(0);
    expect(run('server.unref()', 15_000).status).toBe(0);
    expect(run('', 3000).signal).toBe('SIGTERM'); // still listening when the timeout killed it
  });
});

describe('out of fds', () => {
  it('a server at its fd limit reports EMFILE, pauses, and accepts the waiting clients once fds are free', async () => {
    const file = socketPath();
    const server = spawnPeer('sh', [
      '-c',
      `ulimit -n 40 && exec "$0" "$1" "$2"`,
      process.execPath,
      path.join(fixtures, 'server-fd-limit.mjs'),
      file,
    ]);
    try {
      expect(await server.line()).toBe('listening');
      const clients: Channel[] = [];
      for (let i = 0; i < 60; i++) clients.push(await connect(file));
      expect(await within(server.line(), 10_000, 'EMFILE')).toBe('error EMFILE');
      await clients[0]!.send({ data: 'release' });
      const released = /^released (\d+)$/.exec(await within(server.line(), 10_000, 'the release'));
      expect(released).not.toBeNull();
      const held = Number(released![1]);
      expect(held).toBeGreaterThan(5);
      expect(held).toBeLessThan(40);
      // Every client that waited in the backlog is accepted now.
      let last = '';
      for (let k = 1; k <= 60 - held; k++) last = await within(server.line(), 10_000, `connection ${k}`);
      expect(last).toBe(`connection ${60 - held}`);
      await Promise.all(clients.map((client) => client.close()));
    } finally {
      server.child.kill();
      await server.exited;
    }
  });
});

describe('channels waiting to be taken', () => {
  it('a client that left before anyone took its channel is dropped, not handed out closed', async () => {
    const server = await listen(socketPath());
    const gone = await connect(server.path);
    await gone.close();
    await new Promise((resolve) => setTimeout(resolve, 100));
    const staying = await connect(server.path);
    const { value: channel } = await server[Symbol.asyncIterator]().next();
    expect((channel as Channel).closed).toBe(false);
    await staying.send({ data: 'me' });
    expect((await (channel as Channel).recv()).data.toString()).toBe('me');
    await Promise.all([staying.close(), (channel as Channel).close()]);
    await server.close();
  });

  it('stops accepting at maxPendingChannels, and goes on once they are taken', async () => {
    const server = await listen({ path: socketPath(), maxPendingChannels: 2 });
    const before = countFds();
    const clients = await Promise.all(Array.from({ length: 5 }, () => connect(server.path)));
    await new Promise((resolve) => setTimeout(resolve, 200));
    // Five client sockets, and only two accepted: the other three wait in the kernel's backlog.
    expect(countFds() - before).toBe(5 + 2);
    const taken: Channel[] = [];
    server.on('connection', (channel) => taken.push(channel));
    await until(() => taken.length === 5, 'all five channels');
    await Promise.all([...taken, ...clients].map((channel) => channel.close()));
    await server.close();
  });
});

describe('seqpacket', () => {
  it('serves a seqpacket client, message boundaries and all', async () => {
    const server = await listen({ path: socketPath(), type: 'seqpacket' });
    const accepted = new Promise<Channel>((resolve) => server.once('connection', resolve));
    const client = await connect({ path: server.path, type: 'seqpacket' });
    const channel = await accepted;
    expect(channel.type).toBe('seqpacket');
    await client.send({ data: 'one' });
    await client.send({ data: 'two', fds: [0, 1] });
    expect((await channel.recv()).data.toString()).toBe('one');
    const two = await channel.recv();
    expect(two.data.toString()).toBe('two');
    expect(two.fds).toHaveLength(2);
    two.close();
    await expect(connect({ path: server.path })).rejects.toMatchObject({ code: 'EPROTOTYPE' });
    await Promise.all([client.close(), channel.close()]);
    await server.close();
  });
});

describe('bad input', () => {
  it('a path too long for sun_path: ENAMETOOLONG', async () => {
    const long = path.join(dir, 'x'.repeat(120));
    await expect(listen(long)).rejects.toMatchObject({ code: 'ENAMETOOLONG', syscall: 'bind' });
    await expect(connect(long)).rejects.toMatchObject({ code: 'ENAMETOOLONG', syscall: 'connect' });
    await expect(listen({ path: 'y'.repeat(108), abstract: true })).rejects.toMatchObject({ code: 'ENAMETOOLONG' });
    expect(existsSync(long)).toBe(false);
  });

  it('a directory that does not exist: ENOENT', async () => {
    const missing = path.join(dir, 'no-such-dir', 's.sock');
    await expect(listen(missing)).rejects.toMatchObject({ code: 'ENOENT', syscall: 'bind' });
    await expect(connect(missing)).rejects.toMatchObject({ code: 'ENOENT', syscall: 'connect' });
  });

  it('a path that is a regular file: EADDRINUSE for listen, ECONNREFUSED for connect, the file untouched', async () => {
    const file = path.join(dir, `regular${serial++}`);
    writeFileSync(file, 'keep me');
    await expect(listen(file)).rejects.toMatchObject({ code: 'EADDRINUSE', message: expect.stringContaining('not a socket') });
    await expect(connect(file)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(readFileSync(file, 'utf8')).toBe('keep me');
  });

  it('connecting to nothing: ENOENT', async () => {
    await expect(connect(path.join(dir, 'nobody-here'))).rejects.toMatchObject({
      code: 'ENOENT',
      errno: expect.any(Number),
      syscall: 'connect',
    });
  });

  it('wrong argument types and values: TypeError or RangeError, no fd left open', async () => {
    const file = socketPath();
    await expect(listen(123 as never)).rejects.toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    await expect(listen(undefined as never)).rejects.toMatchObject({ name: 'TypeError' });
    await expect(listen({} as never)).rejects.toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    await expect(listen('')).rejects.toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' });
    await expect(listen('a\0b')).rejects.toMatchObject({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' });
    await expect(listen({ path: file, mode: 0o1777 })).rejects.toMatchObject({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    await expect(listen({ path: file, mode: '600' as never })).rejects.toMatchObject({ name: 'TypeError' });
    await expect(listen({ path: 'x', abstract: true, mode: 0o600 })).rejects.toMatchObject({
      name: 'TypeError',
      code: 'ERR_INVALID_ARG_VALUE',
    });
    await expect(listen({ path: file, backlog: -1 })).rejects.toMatchObject({ name: 'RangeError' });
    await expect(listen({ path: file, type: 'dgram' as never })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    await expect(listen({ path: file, allow: true as never })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(listen({ path: file, abstract: 'yes' as never })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(listen({ path: file, channel: { maxBufferedFds: 0 } })).rejects.toMatchObject({ name: 'RangeError' });
    await expect(connect({ path: file, signal: 'stop' as never })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(connect({ path: file, maxPayloadBytes: -1 })).rejects.toMatchObject({ name: 'RangeError' });
    await expect(connect({ path: file, signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'ABORT_ERR' });
    expect(existsSync(file)).toBe(false);
    const server = await listen(file);
    expect(() => server.close({ waitForChannels: 1 as never })).toThrow(TypeError);
    await server.close();
  });

  it('an allow() that throws refuses the client, and the error goes to error listeners', async () => {
    const server = await listen({
      path: socketPath(),
      allow: () => {
        throw new Error('policy failed');
      },
    });
    const errors: Error[] = [];
    server.on('error', (error) => errors.push(error));
    const refused = new Promise((resolve) => server.once('refused', resolve));
    const client = await connect(server.path);
    await refused;
    expect(errors.map((error) => error.message)).toEqual(['policy failed']);
    await client.close();
    await server.close();
  });
});
