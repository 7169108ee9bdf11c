// Node objects out of received fds, and Node objects in: each kind of fd crosses to another
// process, becomes a Node object there in one call and behaves as itself; a conversion to
// the wrong kind fails and leaves the fd where it was; a net.Socket whose bytes Node has
// read (or may read) is refused at send. fds are counted in both processes.
import { execFileSync, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import {
  closeSync,
  constants as fs,
  fstatSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe as group, expect, it } from 'vitest';
import { binding } from '../lib/binding.js';
import {
  Channel,
  ReceivedMessage,
  describe,
  send,
  socketpair,
  toReadStream,
  toServer,
  toSocket,
  toUdpSocket,
  toWriteStream,
  type FdDescription,
} from '../lib/index.js';
import { countFds, expectNoFdLeakAroundEachTest, isNonBlocking, python, root, spawnNodePeer, within, type Peer } from './helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-convert-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

expectNoFdLeakAroundEachTest();

const WRONG_KIND = expect.objectContaining({ name: 'TypeError', code: 'ERR_FDPASS_WRONG_FD_KIND' });

/** The child's answer to a conversion: refused conversions (all wrong-kind), and what it saw. */
interface PeerResult {
  op: string;
  kind?: string;
  family?: string;
  refused?: Record<string, string>;
  left: number[];
  [detail: string]: unknown;
}

let peer: Peer;
let channel: Channel;

beforeAll(async () => {
  const [mine, theirs] = socketpair();
  peer = spawnNodePeer('convert-peer.mjs', [], [theirs]);
  closeSync(theirs);
  channel = new Channel(mine);
  expect(await within(peer.line(), 10_000, 'the peer starting')).toBe('ready');
});

afterAll(async () => {
  await channel.close();
  const { code, stderr } = await peer.exited;
  expect(stderr).toBe('');
  expect(code).toBe(0);
});

/**
 * Sends `fds` to the child with an op, runs `drive` (this side of the exchange) while the
 * child works, and returns the child's report once its fd count is back where it was.
 */
async function roundTrip(
  op: object,
  fds: Array<number | net.Socket | net.Server | dgram.Socket>,
  drive: () => Promise<void>,
): Promise<PeerResult> {
  const pid = peer.child.pid!;
  const before = countFds(pid);
  await channel.send({ data: JSON.stringify(op), fds });
  const report = peer.line();
  await within(drive(), 10_000, 'this side of the exchange');
  const result = JSON.parse(await within(report, 10_000, "the child's report")) as PeerResult;
  expect(countFds(pid)).toBe(before);
  // Every fd was taken by the object made of it: the message closed nothing.
  expect(result.left.every((fd) => fd === -1)).toBe(true);
  return result;
}

function refusedAllBut(...right: string[]): Record<string, string> {
  const all = ['toSocket', 'toServer', 'toUdpSocket', 'toReadStream', 'toWriteStream'];
  return Object.fromEntries(all.filter((name) => !right.includes(name)).map((name) => [name, 'ERR_FDPASS_WRONG_FD_KIND']));
}

/** The first chunk a socket reads. */
async function firstChunk(socket: net.Socket): Promise<string> {
  const [chunk] = (await once(socket, 'data')) as [Buffer];
  return chunk.toString();
}

async function tcpConnection(
  options: net.ServerOpts = { pauseOnConnect: true },
): Promise<{ server: net.Server; client: net.Socket; accepted: net.Socket }> {
  const server = net.createServer(options);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await once(client, 'connect');
  return { server, client, accepted: (await accepted)[0] };
}

async function destroy(socket: net.Socket): Promise<void> {
  if (socket.closed) return;
  socket.destroy();
  await once(socket, 'close');
}

const closeServer = (server: net.Server): Promise<unknown> => new Promise((resolve) => server.close(resolve));
const closeDgram = (socket: dgram.Socket): Promise<unknown> => new Promise((resolve) => socket.close(() => resolve(undefined)));

group('each kind crosses to another process and works there', () => {
  it('a TCP connection accepted paused: the child reads what the client sent before the handoff, and both ways after', async () => {
    const { server, client, accepted } = await tcpConnection();
    client.write('ping'); // waits in the kernel: pauseOnConnect means Node never read it here
    const result = await roundTrip({ op: 'echo' }, [accepted], async () => {
      await destroy(accepted); // the child has its own copy
      expect(await firstChunk(client)).toBe('echo ping');
      client.end();
      await once(client, 'close');
    });
    expect(result).toMatchObject({
      kind: 'tcp',
      family: 'IPv4',
      refused: refusedAllBut('toSocket'),
      received: ['ping'],
      closeOnExec: true,
    });
    await closeServer(server);
  });

  it('a Unix stream socket (a socketpair end): data both ways, and the fd stays close-on-exec', async () => {
    const [mine, theirs] = socketpair();
    const local = toSocket(mine);
    const result = await roundTrip({ op: 'echo' }, [theirs], async () => {
      closeSync(theirs);
      local.write('over unix');
      expect(await firstChunk(local)).toBe('echo over unix');
      local.end();
      await once(local, 'close');
    });
    expect(result).toMatchObject({
      kind: 'unix',
      family: 'unix',
      refused: refusedAllBut('toSocket'),
      received: ['over unix'],
      closeOnExec: true,
    });
  });

  it('a listening TCP socket: the child accepts and answers a connection made here', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as net.AddressInfo;
    const result = await roundTrip({ op: 'serve' }, [server], async () => {
      await closeServer(server); // only the child listens now
      const client = net.connect(port, '127.0.0.1');
      let answer = '';
      client.on('data', (chunk: Buffer) => (answer += chunk.toString()));
      await once(client, 'close');
      expect(answer).toBe(`served by ${peer.child.pid}`);
    });
    expect(result).toMatchObject({ kind: 'tcp-listener', family: 'IPv4', refused: refusedAllBut('toServer') });
  });

  it('a listening Unix socket becomes an http.Server in the child (options.server), which answers a request', async () => {
    // Made with the addon, not net.Server: closing a net.Server on a path removes its file.
    const socketPath = path.join(dir, 'http.sock');
    const listener = binding.unixSocket(binding.constants.SOCK_STREAM);
    expect(binding.bindUnix(listener, Buffer.from(socketPath), false, 0o600)).toBe(0);
    expect(binding.listen(listener, 8)).toBe(0);
    const result = await roundTrip({ op: 'serve', overHttp: true }, [listener], async () => {
      closeSync(listener);
      const response = await new Promise<http.IncomingMessage>((resolve, reject) =>
        http.get({ socketPath, path: '/hello', agent: false }, resolve).on('error', reject),
      );
      let body = '';
      for await (const chunk of response) body += String(chunk);
      expect(body).toBe(`served /hello by ${peer.child.pid}`);
    });
    expect(result).toMatchObject({ kind: 'unix-listener', family: 'unix', refused: refusedAllBut('toServer'), http: true });
  });

  it.each([
    ['udp4', '127.0.0.1', 'IPv4'],
    ['udp6', '::1', 'IPv6'],
  ] as const)('a %s socket (sent as a dgram.Socket): the child receives a datagram and answers it', async (type, address, family) => {
    const socket = dgram.createSocket(type);
    await new Promise<void>((resolve) => socket.bind(0, address, resolve));
    const { port } = socket.address();
    const client = dgram.createSocket(type);
    const result = await roundTrip({ op: 'udp-echo' }, [socket], async () => {
      await closeDgram(socket); // the child alone reads the socket now
      client.send('ping', port, address);
      const [answer] = (await once(client, 'message')) as [Buffer];
      expect(answer.toString()).toBe('echo ping');
    });
    expect(result).toMatchObject({ kind: 'udp', family, type, refused: refusedAllBut('toUdpSocket'), received: 'ping' });
    await closeDgram(client);
  });

  it('a file: the child reads from the offset this process left and writes where its read ended; this side then writes after that', async () => {
    const file = path.join(dir, 'shared-offset.txt');
    writeFileSync(file, 'abcdefghij');
    const fd = openSync(file, 'r+');
    const head = Buffer.alloc(4);
    expect(readSync(fd, head, 0, 4, null)).toBe(4); // the offset is 4 now, for every copy
    // The same open file twice: one copy for the read stream, one for the write stream.
    const result = await roundTrip({ op: 'file' }, [fd, fd], async () => {});
    expect(result).toMatchObject({ kind: 'file', refused: refusedAllBut('toReadStream', 'toWriteStream'), read: 'efghij' });
    expect(readFileSync(file, 'utf8')).toBe('abcdefghijXYZ');
    writeSync(fd, '!'); // at the offset the child's write left: 13
    expect(readFileSync(file, 'utf8')).toBe('abcdefghijXYZ!');
    closeSync(fd);
  });

  it("pipe ends: the child writes to one and reads the other; libuv's O_NONBLOCK shows on this side's copy", async () => {
    const fifoA = path.join(dir, 'from-child.fifo');
    const fifoB = path.join(dir, 'to-child.fifo');
    execFileSync('mkfifo', [fifoA, fifoB]);
    const readA = openSync(fifoA, fs.O_RDONLY | fs.O_NONBLOCK);
    const writeA = openSync(fifoA, fs.O_WRONLY);
    const readB = openSync(fifoB, fs.O_RDONLY | fs.O_NONBLOCK);
    const writeB = openSync(fifoB, fs.O_WRONLY);
    expect(isNonBlocking(writeA)).toBe(false);
    const fromChild = toSocket(readA).setEncoding('utf8');
    const toChild = toSocket(writeB);
    const result = await roundTrip({ op: 'pipe' }, [writeA, readB], async () => {
      closeSync(readB);
      const first = (await once(fromChild, 'data')) as [string];
      // The child's toSocket() has run: the description this side shares is non-blocking now.
      expect(isNonBlocking(writeA)).toBe(true);
      closeSync(writeA); // so the child's end() is the pipe's end
      let read = first[0];
      fromChild.on('data', (chunk: string) => (read += chunk));
      await new Promise<void>((resolve) => toChild.end('to the child', resolve));
      await Promise.all([once(fromChild, 'close'), toChild.closed ? undefined : once(toChild, 'close')]);
      expect(read).toBe('from the child');
    });
    const pipeKind = (readable: boolean): Partial<FdDescription> => ({ kind: 'pipe', readable, writable: !readable });
    expect(result).toMatchObject({
      kinds: [pipeKind(false), pipeKind(true)],
      refused: [refusedAllBut('toSocket'), refusedAllBut('toSocket')],
      read: 'to the child',
    });
  });
});

/**
 * One received message holding an fd of each kind, and what each is: the conversions that fit
 * it (none for some) and what describe() says.
 */
async function everyKind(): Promise<{
  message: ReceivedMessage;
  kinds: Array<{ description: Partial<FdDescription>; fits: string[] }>;
  cleanup: () => Promise<void>;
}> {
  const { server: tcpServer, client, accepted } = await tcpConnection();
  const udp = dgram.createSocket('udp6');
  await new Promise<void>((resolve) => udp.bind(0, '::1', resolve));
  const [streamA, streamB] = socketpair('stream');
  const [dgramA, dgramB] = socketpair('dgram');
  const [seqA, seqB] = socketpair('seqpacket');
  const unixListener = binding.unixSocket(binding.constants.SOCK_STREAM);
  expect(binding.bindUnix(unixListener, Buffer.from(path.join(dir, `kinds-${process.hrtime.bigint()}.sock`)), false, 0o600)).toBe(0);
  expect(binding.listen(unixListener, 1)).toBe(0);
  const fifo = path.join(dir, `kinds-${process.hrtime.bigint()}.fifo`);
  execFileSync('mkfifo', [fifo]);
  const pipeRead = openSync(fifo, fs.O_RDONLY | fs.O_NONBLOCK);
  const file = path.join(dir, 'kinds.txt');
  writeFileSync(file, 'kinds');
  const readOnly = openSync(file, 'r');
  const writeOnly = openSync(file, 'a');
  const directory = openSync(dir, 'r');
  const devNull = openSync('/dev/null', 'r+');
  const sent = [accepted, tcpServer, udp, streamA, unixListener, dgramA, seqA, pipeRead, readOnly, writeOnly, directory, devNull];
  const kinds = [
    { description: { kind: 'tcp', family: 'IPv4' }, fits: ['toSocket'] },
    { description: { kind: 'tcp-listener', family: 'IPv4' }, fits: ['toServer'] },
    { description: { kind: 'udp', family: 'IPv6' }, fits: ['toUdpSocket'] },
    { description: { kind: 'unix', family: 'unix', nonBlocking: true }, fits: ['toSocket'] },
    { description: { kind: 'unix-listener', family: 'unix' }, fits: ['toServer'] },
    { description: { kind: 'unix-dgram', family: 'unix' }, fits: [] },
    { description: { kind: 'unix-seqpacket', family: 'unix' }, fits: [] },
    { description: { kind: 'pipe', readable: true, writable: false, nonBlocking: true }, fits: ['toSocket'] },
    { description: { kind: 'file', readable: true, writable: false, nonBlocking: false }, fits: ['toReadStream'] },
    { description: { kind: 'file', readable: false, writable: true }, fits: ['toWriteStream'] },
    { description: { kind: 'directory' }, fits: [] },
    { description: { kind: 'character-device', readable: true, writable: true }, fits: [] },
  ] as Array<{ description: Partial<FdDescription>; fits: string[] }>;
  const [a, b] = Channel.pair();
  await a.send({ fds: sent });
  const message = await within(b.recv(), 2000, 'recv');
  await Promise.all([a.close(), b.close()]);
  const cleanup = async (): Promise<void> => {
    message.close();
    for (const fd of [streamA, streamB, dgramA, dgramB, seqA, seqB, unixListener, pipeRead, readOnly, writeOnly, directory, devNull])
      closeSync(fd);
    await Promise.all([destroy(client), destroy(accepted), closeServer(tcpServer), closeDgram(udp)]);
  };
  return { message, kinds, cleanup };
}

const conversions = { toSocket, toServer, toUdpSocket, toReadStream, toWriteStream } as Record<
  string,
  (fd: number | ReceivedMessage, options?: { index?: number }) => unknown
>;

group('describe()', () => {
  it('names each kind of fd, with its family and open flags', async () => {
    const { message, kinds, cleanup } = await everyKind();
    expect(message.fds.map((fd) => describe(fd))).toEqual(kinds.map(({ description }): unknown => expect.objectContaining(description)));
    await cleanup();
  });

  it('takes what send() takes: a net.Socket, a net.Server, a dgram.Socket', async () => {
    const { server, client, accepted } = await tcpConnection();
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
    expect([describe(client), describe(server), describe(udp)].map(({ kind }) => kind)).toEqual(['tcp', 'tcp-listener', 'udp']);
    await Promise.all([destroy(client), destroy(accepted), closeServer(server), closeDgram(udp)]);
  });

  it("says 'socket' for any other socket (a listening seqpacket socket; Python's netlink socket), with its raw numbers", async () => {
    const listener = binding.unixSocket(binding.constants.SOCK_SEQPACKET);
    expect(binding.bindUnix(listener, Buffer.from(path.join(dir, 'seqpacket.sock')), false, 0o600)).toBe(0);
    expect(binding.listen(listener, 1)).toBe(0);
    expect(describe(listener)).toMatchObject({ kind: 'socket', family: 'unix', type: binding.constants.SOCK_SEQPACKET, listening: true });
    closeSync(listener);

    const [mine, theirs] = socketpair();
    const script =
      'import socket; s = socket.socket(fileno=3); n = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0); socket.send_fds(s, [b"\\0"], [n.fileno()])';
    const run = spawnSync(python, ['-c', script], { stdio: ['ignore', 'pipe', 'pipe', theirs], encoding: 'utf8' });
    closeSync(theirs);
    expect(run.stderr).toBe('');
    const b = new Channel(mine);
    const message = await within(b.recv(), 2000, 'recv');
    expect(describe(message.fd)).toMatchObject({ kind: 'socket', family: undefined, domain: 16, type: 3, listening: false });
    expect(() => toSocket(message)).toThrow(
      expect.objectContaining({ code: 'ERR_FDPASS_WRONG_FD_KIND', message: expect.stringMatching(/address family 16, type 3/) }),
    );
    message.close();
    await b.close();
  });

  it("says 'other' for an O_PATH fd of a symlink, and that an O_PATH fd of a file is neither readable nor writable", () => {
    const { O_PATH } = binding.constants;
    const file = path.join(dir, 'target.txt');
    const link = path.join(dir, 'link');
    writeFileSync(file, 'x');
    symlinkSync(file, link);
    const linkFd = openSync(link, O_PATH | fs.O_NOFOLLOW);
    const fileFd = openSync(file, O_PATH);
    expect(describe(linkFd)).toMatchObject({ kind: 'other', readable: false, writable: false });
    expect(describe(fileFd)).toMatchObject({ kind: 'file', readable: false, writable: false });
    expect(() => toReadStream(fileFd)).toThrow(
      expect.objectContaining({ code: 'ERR_FDPASS_WRONG_FD_KIND', message: expect.stringMatching(/neither reading nor writing/) }),
    );
    closeSync(linkFd);
    closeSync(fileFd);
  });

  it("a closed fd is a system error (EBADF from fstat); a wrong argument Node's TypeError", () => {
    const fd = openSync(__filename, 'r');
    closeSync(fd);
    expect(() => describe(fd)).toThrow(expect.objectContaining({ code: 'EBADF', errno: -9, syscall: 'fstat' }));
    expect(() => describe('3' as unknown as number)).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }));
  });
  it('the addon refuses an out array too short or of another type (EINVAL) rather than write past it', () => {
    const { FD_FACTS_LENGTH } = binding.constants;
    const fd = openSync(__filename, 'r');
    expect(binding.describeFd(fd, new Int32Array(FD_FACTS_LENGTH - 1))).toBe(-22);
    expect(binding.describeFd(fd, new Float64Array(FD_FACTS_LENGTH) as unknown as Int32Array)).toBe(-22);
    expect(binding.describeFd(fd, new Int32Array(FD_FACTS_LENGTH))).toBe(0);
    closeSync(fd);
  });
});

group('a conversion to the wrong kind', () => {
  it('fails for every kind it does not take, and leaves each fd in its message, open; nothing leaks', async () => {
    const { message, kinds, cleanup } = await everyKind();
    const fds = [...message.fds];
    const before = countFds();
    const outcomes: string[] = [];
    const expected: string[] = [];
    for (const [index, { fits }] of kinds.entries()) {
      for (const [name, convert] of Object.entries(conversions)) {
        if (fits.includes(name)) continue;
        expected.push(`${name}(#${index}) ERR_FDPASS_WRONG_FD_KIND`);
        try {
          await convert(message, { index });
          outcomes.push(`${name}(#${index}) converted`);
        } catch (error) {
          outcomes.push(`${name}(#${index}) ${(error as { code?: string }).code}`);
        }
      }
    }
    expect(outcomes).toEqual(expected);
    expect(message.fds).toEqual(fds);
    for (const fd of fds) expect(() => fstatSync(fd)).not.toThrow();
    expect(countFds()).toBe(before);
    await cleanup();
  });

  it('names what the fd is and what the call takes', async () => {
    const file = path.join(dir, 'named.txt');
    writeFileSync(file, 'x');
    const readOnly = openSync(file, 'r');
    await expect(toServer(readOnly)).rejects.toThrow(
      expect.objectContaining({
        message: `toServer(): fd ${readOnly} is a file opened read-only; it takes a listening TCP or Unix stream socket`,
      }),
    );
    expect(() => toWriteStream(readOnly)).toThrow(
      `toWriteStream(): fd ${readOnly} is a file opened read-only; it takes a regular file opened for writing`,
    );
    closeSync(readOnly);
  });
});

/** A message (over a fresh pair) holding `fds`, received in this process. */
async function receivedMessage(fds: Array<number | net.Socket | net.Server | dgram.Socket>): Promise<ReceivedMessage> {
  const [a, b] = Channel.pair();
  await a.send({ fds });
  const message = await within(b.recv(), 2000, 'recv');
  await Promise.all([a.close(), b.close()]);
  return message;
}

group('ownership', () => {
  it('message.take(index) hands one fd over: its place reads -1 and close() leaves it open', async () => {
    const file = path.join(dir, 'take.txt');
    writeFileSync(file, 'take');
    const fd = openSync(file, 'r');
    const message = await receivedMessage([fd, fd, fd]);
    const [first, second, third] = message.fds as [number, number, number];
    expect(message.take(1)).toBe(second);
    expect(message.fds).toEqual([first, -1, third]);
    expect(message.take()).toBe(first);
    expect(message.fd).toBe(-1);
    expect(() => message.take(1)).toThrow(
      expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(/already taken/) }),
    );
    expect(() => message.take(3)).toThrow(expect.objectContaining({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }));
    const before = countFds();
    message.close(); // closes the third alone
    expect(countFds()).toBe(before - 1);
    expect(fstatSync(first).isFile() && fstatSync(second).isFile()).toBe(true);
    expect(() => message.take(0)).toThrow(
      expect.objectContaining({ code: 'ERR_OUT_OF_RANGE', message: expect.stringMatching(/the message has none/) }),
    );
    for (const taken of [fd, first, second]) closeSync(taken);
  });

  it("a conversion takes its fd from the message; message.close() then leaves the new object's fd alone", async () => {
    const [mine, theirs] = socketpair();
    const message = await receivedMessage([theirs, theirs]);
    closeSync(theirs);
    const socket = toSocket(message, { index: 1 });
    expect(message.fds[1]).toBe(-1);
    message.close();
    const local = toSocket(mine);
    local.write('still open');
    expect(await firstChunk(socket)).toBe('still open');
    await Promise.all([destroy(socket), destroy(local)]);
  });

  it("a number is converted as it is, and stays the caller's when the conversion fails", () => {
    const file = path.join(dir, 'number.txt');
    writeFileSync(file, 'number');
    const fd = openSync(file, 'r');
    expect(() => toSocket(fd)).toThrow(WRONG_KIND);
    expect(() => toReadStream(fd, { index: 0 })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(/options.index/) }),
    );
    expect(() => toReadStream('3' as unknown as number)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(fstatSync(fd).isFile()).toBe(true);
    closeSync(fd);
  });

  it("a Channel's own socket is refused (ERR_FDPASS_FD_OWNED_BY_CHANNEL), and the channel goes on", async () => {
    const [a, b] = Channel.pair();
    expect(() => toSocket(a.fd)).toThrow(expect.objectContaining({ code: 'ERR_FDPASS_FD_OWNED_BY_CHANNEL' }));
    await a.send({ data: 'still working' });
    expect((await within(b.recv(), 2000, 'recv')).data.toString()).toBe('still working');
    await Promise.all([a.close(), b.close()]);
  });

  it('toServer(): a server that listens already, or options for a new one beside options.server, are refused before the fd is taken', async () => {
    const { server: tcpServer, client, accepted } = await tcpConnection();
    const message = await receivedMessage([tcpServer]);
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    await expect(toServer(message, { server: busy })).rejects.toThrow(expect.objectContaining({ code: 'ERR_SERVER_ALREADY_LISTEN' }));
    await expect(toServer(message, { server: net.createServer(), pauseOnConnect: true })).rejects.toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(/pauseOnConnect/) }),
    );
    expect(message.fds[0]).toBeGreaterThan(0);
    const server = await toServer(message, { backlog: 4 });
    expect(server.listening).toBe(true);
    expect(message.fds).toEqual([-1]);
    await Promise.all([closeServer(server), closeServer(busy), closeServer(tcpServer), destroy(client), destroy(accepted)]);
  });
  it("in a worker thread, a file stream closes its fd without Node's warning about fds fs did not open", () => {
    const file = path.join(dir, 'worker.txt');
    writeFileSync(file, 'read in a worker');
    const dist = JSON.stringify(path.join(root, 'dist', 'index.js'));
    const code = `
      const { Channel, toReadStream } = require(${dist});
      const { openSync } = require('node:fs');
      (async () => {
        const [a, b] = Channel.pair();
        await a.send(openSync(${JSON.stringify(file)}, 'r'), { close: true });
        const message = await b.recv();
        let text = '';
        for await (const chunk of toReadStream(message, { encoding: 'utf8' })) text += chunk;
        console.log(text);
        await Promise.all([a.close(), b.close()]);
      })();`;
    const host = `const { Worker } = require('node:worker_threads'); new Worker(${JSON.stringify(code)}, { eval: true }).on('error', (e) => { console.error(e); process.exitCode = 1; });`;
    const run = spawnSync(process.execPath, ['-e', host], { encoding: 'utf8', timeout: 20_000 });
    expect(run.stderr).toBe('');
    expect(run.stdout).toBe('read in a worker\n');
  });
});

group("an fd Node cannot open (this thread's event loop watches it already)", () => {
  it("toSocket() throws Node's EEXIST, toServer() rejects with it, toUdpSocket() throws it; each fd stays in its message", async () => {
    const { server: tcpServer, client, accepted } = await tcpConnection();
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
    const message = await receivedMessage([accepted, tcpServer, udp]);
    const [socketFd, serverFd, udpFd] = message.fds as [number, number, number];
    // Someone opened these numbers with Node already (the mistake fdpass cannot see).
    const first = new net.Socket({ fd: socketFd, readable: true, writable: true });
    const firstServer = net.createServer().listen({ fd: serverFd });
    await once(firstServer, 'listening');
    const firstUdp = dgram.createSocket('udp4').bind({ fd: udpFd });
    const before = countFds();

    expect(() => toSocket(message)).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    await expect(toServer(message, { index: 1 })).rejects.toThrow(expect.objectContaining({ code: 'EEXIST', syscall: 'listen' }));
    expect(() => toUdpSocket(message, { index: 2 })).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    expect(message.fds).toEqual([socketFd, serverFd, udpFd]);
    expect(countFds()).toBe(before);

    // Those first objects own the fds: take them out of the message, unclosed.
    for (const index of [0, 1, 2]) message.take(index);
    await Promise.all([destroy(first), closeServer(firstServer), closeDgram(firstUdp)]);
    await Promise.all([destroy(client), destroy(accepted), closeServer(tcpServer), closeDgram(udp)]);
  });
});

group('Node objects in: send() refuses a net.Socket whose bytes Node has read or may read', () => {
  it("Node's private _handle.reading still says whether libuv reads a socket (the refusal relies on it)", async () => {
    const reading = (socket: net.Socket): unknown => (socket as unknown as { _handle: { reading: unknown } })._handle.reading;
    const plain = await tcpConnection({});
    const paused = await tcpConnection({ pauseOnConnect: true });
    expect([reading(plain.accepted), reading(paused.accepted)]).toEqual([true, false]);
    paused.accepted.resume(); // starts reading on the next tick
    await new Promise((resolve) => setImmediate(resolve));
    expect(reading(paused.accepted)).toBe(true);
    for (const { server, client, accepted } of [plain, paused])
      await Promise.all([destroy(client), destroy(accepted), closeServer(server)]);
  });

  it('a socket Node reads (accepted without pauseOnConnect): ERR_FDPASS_SOCKET_IN_USE, from Channel.send() and send(); nothing is sent', async () => {
    const { server, client, accepted } = await tcpConnection({});
    const [a, b] = Channel.pair();
    const inUse = expect.objectContaining({
      code: 'ERR_FDPASS_SOCKET_IN_USE',
      message: expect.stringMatching(/Node is reading from.*pauseOnConnect: true/),
    });
    expect(() => a.send(accepted)).toThrow(inUse);
    expect(() => a.send({ data: 'x', fds: [accepted] })).toThrow(inUse);
    expect(() => send(a.fd, accepted)).toThrow(inUse);
    await a.send({ data: 'the next message' });
    const next = await within(b.recv(), 2000, 'recv');
    expect([next.data.toString(), next.fds]).toEqual(['the next message', []]);
    await Promise.all([a.close(), b.close(), destroy(client), destroy(accepted), closeServer(server)]);
  });

  it('bytes Node has read and nobody consumed: the error counts them', async () => {
    const { server, client, accepted } = await tcpConnection({});
    client.write('hello');
    while (accepted.readableLength < 5) await new Promise((resolve) => setTimeout(resolve, 5));
    const [a, b] = Channel.pair();
    expect(() => a.send(accepted)).toThrow(
      expect.objectContaining({ code: 'ERR_FDPASS_SOCKET_IN_USE', message: expect.stringMatching(/holds 5 bytes Node has read/) }),
    );
    await Promise.all([a.close(), b.close(), destroy(client), destroy(accepted), closeServer(server)]);
  });

  it('a socket still connecting, and one with writes Node has not handed to the kernel', async () => {
    const server = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const accepted: net.Socket[] = [];
    server.on('connection', (socket: net.Socket) => accepted.push(socket));
    const [a, b] = Channel.pair();
    const connecting = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    connecting.pause();
    expect(() => a.send(connecting)).toThrow(
      expect.objectContaining({ code: 'ERR_FDPASS_SOCKET_IN_USE', message: expect.stringMatching(/still connecting/) }),
    );
    await once(connecting, 'connect');
    await a.send(connecting); // paused before it connected: Node never read from it
    (await within(b.recv(), 2000, 'recv')).close();
    // The server side reads nothing, so a large write waits in Node once the kernel is full.
    connecting.write(Buffer.alloc(16 * 1024 * 1024));
    expect(connecting.writableLength).toBeGreaterThan(0);
    expect(() => a.send(connecting)).toThrow(
      expect.objectContaining({
        code: 'ERR_FDPASS_SOCKET_IN_USE',
        message: expect.stringMatching(/bytes written to it that Node has not yet handed to the kernel/),
      }),
    );
    await Promise.all([a.close(), b.close(), destroy(connecting), ...accepted.map(destroy), closeServer(server)]);
  });

  it('a dgram.Socket is sent by its fd without a deprecation warning (Node 20 has no public fd; fdpass reads its state symbol)', () => {
    const dist = JSON.stringify(path.join(root, 'dist', 'index.js'));
    const code = `
      const { Channel, toUdpSocket } = require(${dist});
      const dgram = require('node:dgram');
      (async () => {
        const socket = dgram.createSocket('udp4');
        await new Promise((resolve) => socket.bind(0, '127.0.0.1', resolve));
        const [a, b] = Channel.pair();
        await a.send(socket);
        const received = toUdpSocket(await b.recv());
        console.log(JSON.stringify([socket.address().port, received.address().port]));
        socket.close(); received.close();
        await Promise.all([a.close(), b.close()]);
      })().catch((error) => { console.error(error); process.exit(1); });`;
    // --throw-deprecation: a deprecation warning (DEP0112: socket._handle) would end the process.
    const run = spawnSync(process.execPath, ['--throw-deprecation', '-e', code], { encoding: 'utf8', timeout: 20_000 });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    const [port, receivedPort] = JSON.parse(run.stdout) as [number, number];
    expect(receivedPort).toBe(port);
  });

  it('an unbound dgram.Socket has no fd yet: a TypeError that says to wait for it to be bound', async () => {
    const socket = dgram.createSocket('udp4');
    const [a, b] = Channel.pair();
    expect(() => a.send(socket)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE', message: expect.stringMatching(/a bound dgram.Socket/) }),
    );
    socket.close();
    await Promise.all([a.close(), b.close()]);
  });
});
