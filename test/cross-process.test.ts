// fds passed between real processes refer to the same open file description.
import { execFileSync } from 'node:child_process';
import { closeSync, constants, fstatSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Channel, socketpair } from '../lib/index.js';
import { expectNoFdLeakAroundEachTest, spawnNodePeer, type Peer } from './helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-xproc-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

expectNoFdLeakAroundEachTest();

/** A Channel to a child running test/fixtures/node-peer.mjs, which owns the other end. */
async function startPeer(mode: string, arg: string): Promise<{ channel: Channel; peer: Peer }> {
  const [mine, theirs] = socketpair();
  const peer = spawnNodePeer('node-peer.mjs', [mode, arg], [theirs]);
  closeSync(theirs);
  const channel = new Channel(mine);
  expect(await peer.line()).toBe('ready');
  return { channel, peer };
}

/** Closes the channel (the peer sees EOF and exits) and checks the peer ended cleanly. */
async function finish(channel: Channel, peer: Peer): Promise<void> {
  await channel.close();
  const { code, stderr } = await peer.exited;
  expect(stderr).toBe('');
  expect(code).toBe(0);
}

function tempFile(name: string, content: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, content);
  return file;
}

describe('parent to child', () => {
  it('a regular file: the child reads from the shared offset and its write lands after it', async () => {
    const file = tempFile('shared-offset.txt', 'first;second;');
    const fd = openSync(file, 'r+');
    // Move the shared offset: the child must continue from here, not from 0.
    const head = Buffer.alloc(6);
    readSync(fd, head, 0, 6, null);
    const { channel, peer } = await startPeer('use', '1');
    await channel.send(fd);
    expect(JSON.parse(await peer.line())).toEqual({ kind: 'file', read: 'second;' });
    expect(await peer.line()).toBe('done');
    expect(readFileSync(file, 'utf8')).toBe('first;second;child-wrote;');
    // The child's read and write moved our offset too: one open file description.
    expect(readSync(fd, Buffer.alloc(8), 0, 8, null)).toBe(0);
    closeSync(fd);
    await finish(channel, peer);
  });

  it('a pipe end: the child writes into the pipe we read', async () => {
    const fifo = path.join(dir, 'pipe');
    execFileSync('mkfifo', [fifo]);
    const readEnd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const writeEnd = openSync(fifo, constants.O_WRONLY);
    const { channel, peer } = await startPeer('use', '1');
    await channel.send(writeEnd, { close: true });
    expect(JSON.parse(await peer.line())).toEqual({ kind: 'pipe' });
    const buf = Buffer.alloc(64);
    const n = readSync(readEnd, buf, 0, buf.length, null);
    expect(buf.subarray(0, n).toString()).toBe('through-pipe');
    expect(await peer.line()).toBe('done');
    closeSync(readEnd);
    await finish(channel, peer);
  });

  it('a TCP socket: the child answers our client on the connection we accepted', async () => {
    const server = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    const connection = await accepted;

    const { channel, peer } = await startPeer('use', '1');
    await channel.send(connection);
    connection.destroy(); // the child holds its own copy now

    const reply = new Promise<string>((resolve) => {
      let text = '';
      client.on('data', (d) => (text += d.toString()));
      client.on('end', () => resolve(text));
    });
    client.write('ping');
    expect(await reply).toBe('child got ping');
    expect(JSON.parse(await peer.line())).toEqual({ kind: 'socket', read: 'ping' });
    client.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    expect(await peer.line()).toBe('done');
    await finish(channel, peer);
  });
});

describe('child to parent', () => {
  it('the child opens a file and passes it: we read and write through it', async () => {
    const file = tempFile('from-child.txt', 'made by the test;');
    const { channel, peer } = await startPeer('send-file', file);
    const message = await channel.recv();
    expect(message.fds).toHaveLength(1);
    const buf = Buffer.alloc(64);
    const n = readSync(message.fd, buf, 0, buf.length, 0);
    expect(buf.subarray(0, n).toString()).toBe('made by the test;');
    writeSync(message.fd, 'parent-wrote;', 0);
    expect(readFileSync(file, 'utf8')).toBe('parent-wrote;est;');
    message.close();
    expect(await peer.line()).toBe('done');
    await finish(channel, peer);
  });

  it('an fd sent and sent back is the same open file description (same inode, shared offset)', async () => {
    const file = tempFile('echo.txt', '0123456789');
    const fd = openSync(file, 'r');
    const { channel, peer } = await startPeer('echo', '1');
    await channel.send(fd);
    const back = await channel.recv();
    expect(back.fd).not.toBe(fd);
    expect(fstatSync(back.fd).ino).toBe(fstatSync(fd).ino);
    readSync(back.fd, Buffer.alloc(4), 0, 4, null);
    const rest = Buffer.alloc(16);
    const n = readSync(fd, rest, 0, rest.length, null);
    expect(rest.subarray(0, n).toString()).toBe('456789');
    back.close();
    closeSync(fd);
    await finish(channel, peer);
  });
});
