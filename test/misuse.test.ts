// A careless caller: natural mistakes with fds fail with an error that names the problem,
// never abort the process, never close a file that is not theirs.
import { spawnSync } from 'node:child_process';
import { closeSync, fstatSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { constants as os, tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { binding } from '../lib/binding.js';
import { Channel, closeFd, socketpair } from '../lib/index.js';
import { expectNoFdLeakAroundEachTest, root, within } from './helpers.js';

expectNoFdLeakAroundEachTest();

const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-misuse-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const dist = JSON.stringify(path.join(root, 'dist', 'index.js'));

/** Runs `code` in a fresh Node process with `fdpass` in scope; a crash shows as a signal. */
function runNode(code: string): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
  const result = spawnSync(
    process.execPath,
    ['-e', `const fdpass = require(${dist});\n(async () => {\n${code}\n})().catch((e) => { console.error(e); process.exit(1); });`],
    {
      encoding: 'utf8',
      timeout: 20_000,
    },
  );
  return { status: result.status, signal: result.signal, stdout: result.stdout, stderr: result.stderr };
}

describe("closing a channel's fd behind its back", () => {
  it('try { new Channel(m.fd) } finally { m.close() } does not abort: the message leaves the channel its fd', () => {
    const run = runNode(`
      const [a, b] = fdpass.Channel.pair();
      const [x, y] = fdpass.socketpair();
      await a.send({ data: 'a socket', fds: [x] });
      const m = await b.recv();
      let channel;
      try { channel = new fdpass.Channel(m.fd); } finally { m.close(); }
      await new Promise((resolve) => setTimeout(resolve, 50)); // the loop polls the channel's fd
      // The channel still works: the fd is its own.
      const peer = new fdpass.Channel(y);
      await peer.send({ data: 'over the received socket' });
      const got = await channel.recv();
      console.log(JSON.stringify({ data: got.data.toString(), fds: m.fds.length }));
      require('node:fs').closeSync(x);
      await Promise.all([a.close(), b.close(), channel.close(), peer.close()]);
    `);
    expect(run.signal).toBeNull();
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual({ data: 'over the received socket', fds: 0 });
  });

  it("closeFd() refuses a live channel's fd with ERR_FDPASS_FD_OWNED_BY_CHANNEL, and the channel goes on", async () => {
    const [a, b] = Channel.pair();
    expect(() => closeFd(a.fd)).toThrow(expect.objectContaining({ code: 'ERR_FDPASS_FD_OWNED_BY_CHANNEL' }));
    await a.send({ data: 'still open' });
    expect((await b.recv()).data.toString()).toBe('still open');
    const fd = a.fd;
    await a.close();
    // Once the channel closed the fd, the number is nobody's: closeFd reports EBADF.
    expect(() => closeFd(fd)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'close' }));
    await b.close();
  });

  it('a paused channel whose fd was closed with fs.closeSync fails with EBADF when it resumes, instead of aborting', () => {
    const run = runNode(`
      const fs = require('node:fs');
      const [a, b] = fdpass.Channel.pair('stream', { maxBufferedFds: 1 });
      const file = fs.openSync(${JSON.stringify(__filename)}, 'r');
      for (let i = 0; i < 4; i++) await a.send(file);
      await new Promise((resolve) => setTimeout(resolve, 50)); // b buffers what it may, then stops reading
      fs.closeSync(b.fd); // misuse: outside fdpass's reach
      const errors = [];
      b.on('error', (error) => errors.push(error.code + ' ' + error.syscall));
      (await b.recv()).close(); // room again: the channel would watch its fd again
      await new Promise((resolve) => setTimeout(resolve, 50));
      console.log(JSON.stringify(errors));
      fs.closeSync(file);
      await Promise.all([a.close(), b.close()]);
    `);
    expect(run.signal).toBeNull();
    expect(run.status).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual(['EBADF uv_poll_start']);
  });

  it('a channel whose fd number was reused by another file never closes that file', () => {
    const run = runNode(`
      const fs = require('node:fs');
      const [a, b] = fdpass.Channel.pair('stream', { maxBufferedFds: 1 });
      const file = fs.openSync(${JSON.stringify(__filename)}, 'r');
      for (let i = 0; i < 4; i++) await a.send(file);
      await new Promise((resolve) => setTimeout(resolve, 50));
      const number = b.fd;
      fs.closeSync(number);
      const [x, y] = fdpass.socketpair(); // takes the lowest free number: b's
      if (x !== number) throw new Error('the number was not reused: ' + x + ' vs ' + number);
      (await b.recv()).close();
      await new Promise((resolve) => setTimeout(resolve, 50));
      await b.close();
      fs.fstatSync(x); // still open: b did not close it
      console.log('x open');
      fs.closeSync(x); fs.closeSync(y); fs.closeSync(file);
      await a.close();
    `);
    expect(run.signal).toBeNull();
    expect(run.stderr).not.toMatch(/Error:/); // warnings about the errors nobody heard are fine
    expect(run.stdout.trim()).toBe('x open');
  });
});

describe('send(channel.fd, { close: true })', () => {
  it("is refused with ERR_FDPASS_FD_OWNED_BY_CHANNEL: a channel's socket is not the caller's to hand over", async () => {
    const [a, b] = Channel.pair();
    const [c, d] = Channel.pair();
    expect(() => c.send(b.fd, { close: true })).toThrow(expect.objectContaining({ code: 'ERR_FDPASS_FD_OWNED_BY_CHANNEL' }));
    await a.send({ data: 'b still works' });
    expect((await b.recv()).data.toString()).toBe('b still works');
    // Without close, the channel's socket may be sent (a copy travels).
    await c.send(b.fd);
    (await d.recv()).close();
    await Promise.all([a.close(), b.close(), c.close(), d.close()]);
  });
});

describe('ReceivedMessage.close()', () => {
  it('a second close() closes nothing, even when the numbers were reused in between', async () => {
    const [a, b] = Channel.pair();
    const file = path.join(dir, 'once.txt');
    writeFileSync(file, 'once');
    const fds = [openSync(file, 'r'), openSync(file, 'r')];
    await a.send({ data: 'two', fds });
    const message = await b.recv();
    const numbers = [...message.fds];
    message.close();
    // The lowest free numbers are the ones just closed: these files take them.
    const reused = [openSync(file, 'r'), openSync(file, 'r')];
    expect(reused.sort()).toEqual(numbers.sort());
    message.close();
    for (const fd of reused) expect(fstatSync(fd).isFile()).toBe(true);
    expect(message.fds).toEqual([]);
    expect(message.fd).toBe(-1);
    for (const fd of [...reused, ...fds]) closeSync(fd);
    await Promise.all([a.close(), b.close()]);
  });
});

describe('new Channel(fd) on the wrong kind of fd', () => {
  it("a TCP socket is refused with a TypeError that names it, and the fd stays the caller's", async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await new Promise((resolve) => client.once('connect', resolve));
    client.pause();
    const fd = (client as unknown as { _handle: { fd: number } })._handle.fd;
    expect(() => new Channel(fd)).toThrow(
      expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(/not a Unix socket/) }),
    );
    expect(fstatSync(fd).isSocket()).toBe(true);
    client.destroy();
    (await accepted).on('error', () => {}).destroy();
    await new Promise((resolve) => server.close(resolve));
  });

  it('a listening Unix socket and an unconnected one are refused', () => {
    const listener = binding.unixSocket(binding.constants.SOCK_STREAM);
    expect(binding.bindUnix(listener, Buffer.from(path.join(dir, 'listening.sock')), false, 0o600)).toBe(0);
    expect(binding.listen(listener, 1)).toBe(0);
    expect(() => new Channel(listener)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(/listening/) }),
    );
    closeSync(listener);

    const unconnected = binding.unixSocket(binding.constants.SOCK_STREAM);
    expect(() => new Channel(unconnected)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(/not connected/) }),
    );
    closeSync(unconnected);
  });

  it('a regular file is refused as not a socket', () => {
    const fd = openSync(__filename, 'r');
    expect(() => new Channel(fd)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(/not a socket/) }),
    );
    closeSync(fd);
  });

  it('an fd that a net.Socket is reading from is refused with a message that says so', async () => {
    const [x, y] = socketpair();
    const socket = new net.Socket({ fd: x, readable: true, writable: true });
    socket.resume();
    await new Promise((resolve) => setImmediate(resolve));
    expect(() => new Channel(x)).toThrow(expect.objectContaining({ code: 'EEXIST', message: expect.stringMatching(/already watched/) }));
    socket.destroy();
    closeSync(y);
  });

  it('an fd another channel owns is refused, in this thread or any other', async () => {
    const [a, b] = Channel.pair();
    expect(() => new Channel(a.fd)).toThrow(expect.objectContaining({ code: 'EEXIST', message: expect.stringMatching(/another Channel/) }));
    await Promise.all([a.close(), b.close()]);
  });
});

describe('the addon refuses bad buffer offsets', () => {
  it('closeLedgerFds and sendmsg with offsets and lengths whose sum wraps are EINVAL, not a crash', () => {
    const run = spawnSync(
      process.execPath,
      [
        '-e',
        `const { binding } = require(${JSON.stringify(path.join(root, 'dist', 'binding.js'))});
        const poll = new binding.PollWrap(() => {}, new Uint8Array(16), new Int32Array(3), 16, binding.constants.RECEIVE_STREAM);
        poll.setLedger(new Int32Array(new ArrayBuffer(4 * 16)));
        const results = [poll.closeLedgerFds(2 ** 62, 2 ** 62), poll.closeLedgerFds(0, 2 ** 62), poll.closeLedgerFds(-1, 1)];
        const data = new Uint8Array(16);
        results.push(binding.sendmsg(0, data, 2 ** 62, 2 ** 62, new Int32Array(0), 0));
        console.log(JSON.stringify(results));`,
      ],
      { encoding: 'utf8', timeout: 10_000 },
    );
    expect(run.signal).toBeNull();
    expect(JSON.parse(run.stdout)).toEqual([-22, -22, -22, -22]);
  });

  it('sendmsg with a negative offset or length is EINVAL, not a read outside the buffer', () => {
    const [x, y] = socketpair();
    const data = new Uint8Array(16);
    const noFds = new Int32Array(0);
    expect(binding.sendmsg(x, data, -1, 2, noFds, 0)).toBe(-22);
    expect(binding.sendmsg(x, data, 0, -1, noFds, 0)).toBe(-22);
    expect(binding.sendmsg(x, data, 2 ** 31 - 1, 2, noFds, 0)).toBe(-22);
    expect(binding.sendmsg(x, data, 0, 4, noFds, -1)).toBe(-22);
    expect(binding.sendmsg(x, data, 0, 4, noFds, 0)).toBe(4);
    // null: the fds registered for this thread (MAX_FDS_PER_MESSAGE of them), no more.
    expect(binding.sendmsg(x, data, 0, 4, null, binding.constants.MAX_FDS_PER_MESSAGE + 1)).toBe(-22);
    expect(binding.sendmsg(x, data, 0, 4, null, 0)).toBe(4);
    closeSync(x);
    closeSync(y);
  });

  it('sendmsg never blocks, even on a blocking socket: a full socket is EAGAIN', () => {
    // In a child: were it to block, the test could not interrupt it, but a timeout can.
    const run = spawnSync(
      process.execPath,
      [
        '-e',
        `const { binding } = require(${JSON.stringify(path.join(root, 'dist', 'binding.js'))});
        const pair = new Int32Array(2);
        binding.socketpair(binding.constants.SOCK_STREAM, pair);
        binding.setNonBlocking(pair[0], false);
        const data = new Uint8Array(65536);
        let sent;
        while ((sent = binding.sendmsg(pair[0], data, 0, data.length, new Int32Array(0), 0)) > 0);
        console.log(JSON.stringify(sent));`,
      ],
      { encoding: 'utf8', timeout: 10_000 },
    );
    expect(run.signal).toBeNull();
    expect(JSON.parse(run.stdout)).toBe(-os.errno.EAGAIN);
  });
});

describe("sending Node's own objects", () => {
  it("a net.Socket and a net.Server are sent by their own fd (Node's private _handle.fd still says where it is)", async () => {
    const [a, b] = Channel.pair();
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    client.pause(); // before it connects, so Node never reads from it (a socket it reads is refused)
    await new Promise((resolve) => client.once('connect', resolve));

    await a.send({ fds: [client, server] });
    const message = await within(b.recv(), 2000, 'recv');
    const [socketCopy, serverCopy] = message.fds as [number, number];
    // The received fds are the same sockets: same inode as the originals.
    expect(fstatSync(socketCopy).ino).toBe(fstatSync((client as unknown as { _handle: { fd: number } })._handle.fd).ino);
    expect(fstatSync(serverCopy).ino).toBe(fstatSync((server as unknown as { _handle: { fd: number } })._handle.fd).ino);
    message.close();
    client.destroy();
    (await accepted).on('error', () => {}).destroy();
    await new Promise((resolve) => server.close(resolve));
    await Promise.all([a.close(), b.close()]);
  });
});
