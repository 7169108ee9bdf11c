// Received fds are close-on-exec, whatever the sender's flags; socketpair() ends are
// close-on-exec and non-blocking. Flags are read from /proc/self/fdinfo, and checked once
// for real: a child process does not inherit what we received.
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Channel, lastError, recv, send, setBlocking, socketpair, type SocketType } from '../lib/index.js';
import { contentOf, countFds, expectNoFdLeakAroundEachTest, isCloexec, isNonBlocking, python, spawnPeer, within } from './helpers.js';

const types: SocketType[] = ['stream', 'seqpacket', 'dgram'];

const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-received-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = path.join(dir, 'content.txt');
writeFileSync(file, 'received');

expectNoFdLeakAroundEachTest();

describe('received fds are close-on-exec', () => {
  it.each(types)('Channel.recv() over a %s pair', async (type) => {
    const fd = openSync(file, 'r');
    const [a, b] = Channel.pair(type);
    await a.send(fd);
    const message = await within(b.recv(), 2000, 'recv');
    expect(contentOf(message.fd)).toBe('received');
    expect(isCloexec(message.fd)).toBe(true);
    message.close();
    await within(Promise.all([a.close(), b.close()]), 2000, 'close()');
    closeSync(fd);
  });

  it("the 'message' event and for await", async () => {
    const fd = openSync(file, 'r');
    const [a, b] = Channel.pair();
    const viaEvent = new Promise<boolean>((resolve) =>
      b.once('message', (message) => {
        resolve(isCloexec(message.fd));
        message.close();
      }),
    );
    await a.send(fd);
    expect(await within(viaEvent, 2000, "'message'")).toBe(true);

    await a.send(fd);
    await a.close();
    const viaIterator: boolean[] = [];
    await within(
      (async () => {
        for await (const message of b) {
          viaIterator.push(isCloexec(message.fd));
          message.close();
        }
      })(),
      2000,
      'for await',
    );
    expect(viaIterator).toEqual([true]);
    await within(b.close(), 2000, 'close()');
    closeSync(fd);
  });

  it.each(types)('seed recv() over a %s socketpair', (type) => {
    const fd = openSync(file, 'r');
    const [x, y] = socketpair(type);
    expect(send(x, fd)).toBe(true);
    const got = recv(y);
    expect(got, String(lastError())).toBeGreaterThan(2);
    expect(contentOf(got)).toBe('received');
    expect(isCloexec(got)).toBe(true);
    for (const each of [got, fd, x, y]) closeSync(each);
  });

  it('when the sender made its fds inheritable (a Python peer): seed recv() and Channel', async () => {
    const [mine, theirs] = socketpair();
    const peer = spawnPeer(
      python,
      [
        '-c',
        [
          'import os, socket, sys',
          's = socket.socket(fileno=3)',
          'fd = os.open(sys.argv[1], os.O_RDONLY)',
          'os.set_inheritable(fd, True)',
          "socket.send_fds(s, [b'\\x00'], [fd])",
          "socket.send_fds(s, [b'\\x00'], [fd])",
          "print('sent', os.get_inheritable(fd), flush=True)",
        ].join('\n'),
        file,
      ],
      [theirs],
    );
    closeSync(theirs);
    expect(await within(peer.line(), 5000, 'the Python peer')).toBe('sent True');

    const got = recv(mine);
    expect(got, String(lastError())).toBeGreaterThan(2);
    expect(contentOf(got)).toBe('received');
    expect(isCloexec(got)).toBe(true);
    closeSync(got);

    const channel = new Channel(mine);
    const message = await within(channel.recv(), 2000, 'recv');
    expect(contentOf(message.fd)).toBe('received');
    expect(isCloexec(message.fd)).toBe(true);
    message.close();

    const { code, stderr } = await within(peer.exited, 5000, 'the Python peer');
    expect(stderr).toBe('');
    expect(code).toBe(0);
    await within(channel.close(), 2000, 'close()');
  });

  it('a child process started after the receive does not inherit the received fd', async () => {
    const fd = openSync(file, 'r');
    const [a, b] = Channel.pair();
    await a.send(fd);
    const message = await within(b.recv(), 2000, 'recv');
    // The shell looks at its own fd table: what it inherited from us, nothing more.
    const probe = (n: number): string =>
      execFileSync('sh', ['-c', `readlink /proc/$$/fd/${n} || echo closed`], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim();
    expect(probe(message.fd)).toBe('closed');
    // The check can tell: an fd given to the child on purpose is seen.
    const seen = execFileSync('sh', ['-c', 'readlink /proc/$$/fd/3'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore', message.fd],
    }).trim();
    expect(seen).toBe(file);
    message.close();
    await within(Promise.all([a.close(), b.close()]), 2000, 'close()');
    closeSync(fd);
  });
});

describe('socketpair() ends are close-on-exec and non-blocking', () => {
  it.each(types)('socketpair(%s)', (type) => {
    const before = countFds();
    const ends = socketpair(type);
    expect(countFds()).toBe(before + 2);
    for (const end of ends) {
      expect(isCloexec(end)).toBe(true);
      expect(isNonBlocking(end)).toBe(true);
    }
    for (const end of ends) closeSync(end);
  });

  it('socketpair() defaults to stream', () => {
    const [x, y] = socketpair();
    const a = new Channel(x);
    expect(a.type).toBe('stream');
    closeSync(y);
    return within(a.close(), 2000, 'close()');
  });

  it.each(types)('Channel.pair(%s) ends', async (type) => {
    const [a, b] = Channel.pair(type);
    for (const end of [a.fd, b.fd]) {
      expect(isCloexec(end)).toBe(true);
      expect(isNonBlocking(end)).toBe(true);
    }
    await within(Promise.all([a.close(), b.close()]), 2000, 'close()');
  });

  it('setBlocking() clears and sets O_NONBLOCK and keeps close-on-exec; new Channel() makes an fd non-blocking', async () => {
    const [x, y] = socketpair();
    setBlocking(x, true);
    expect(isNonBlocking(x)).toBe(false);
    expect(isCloexec(x)).toBe(true);
    setBlocking(x, false);
    expect(isNonBlocking(x)).toBe(true);
    expect(isCloexec(x)).toBe(true);

    setBlocking(x, true);
    const channel = new Channel(x);
    expect(isNonBlocking(x)).toBe(true);
    expect(isCloexec(x)).toBe(true);
    closeSync(y);
    await within(channel.close(), 2000, 'close()');
  });

  it("setBlocking() on a closed fd is 'EBADF', syscall 'fcntl'", () => {
    const [x, y] = socketpair();
    closeSync(x);
    closeSync(y);
    expect(() => setBlocking(x, true)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'fcntl' }));
  });
});
