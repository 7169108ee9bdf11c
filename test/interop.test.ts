// Interop with the real peers: Perl's IO::FDPass and Python's socket.send_fds/recv_fds.
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Channel, lastError, recv, send, setBlocking, socketpair } from '../lib/index.js';
import { countFds, expectNoFdLeakAroundEachTest, fixtures, python, root, spawnPeer, within, type Peer } from './helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-interop-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

expectNoFdLeakAroundEachTest();

const peers = [
  { name: 'Perl IO::FDPass', command: 'perl', script: 'peer.pl', wrote: 'perl-wrote;' },
  { name: 'Python send_fds', command: python, script: 'peer.py', wrote: 'python-wrote;' },
];

interface Running {
  peer: Peer;
  socket: number;
  /** The peer's open fd count once it is ready (blocked on its first recv). */
  peerFds: number;
}

async function start(command: string, script: string, args: string[]): Promise<Running> {
  const [mine, theirs] = socketpair();
  const peer = spawnPeer(command, [path.join(fixtures, script), ...args], [theirs]);
  closeSync(theirs);
  expect(await peer.line()).toBe('ready');
  return { peer, socket: mine, peerFds: countFds(peer.child.pid) };
}

/** The peer finished its work holding the fds it held at the start; then it sees our close. */
async function expectPeerDone(running: Running): Promise<void> {
  expect(await running.peer.line()).toBe('done');
  expect(countFds(running.peer.child.pid)).toBe(running.peerFds);
}

async function expectPeerExit(running: Running): Promise<void> {
  const { code, stderr } = await running.peer.exited;
  expect(stderr).toBe('');
  expect(code).toBe(0);
}

function tempFile(name: string, content: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, content);
  return file;
}

describe.each(peers)('$name', ({ command, script, wrote }) => {
  it('receives fds from a Channel and writes through them into our open files', async () => {
    const files = [0, 1, 2].map((i) => tempFile(`${script}-to-peer-${i}.txt`, `content ${i};`));
    const fds = files.map((file) => openSync(file, 'r+'));
    const running = await start(command, script, ['recv-read', '3']);
    const channel = new Channel(running.socket);
    for (const fd of fds) await channel.send(fd);
    for (let i = 0; i < 3; i++) expect(JSON.parse(await running.peer.line())).toEqual({ content: `content ${i};` });
    await expectPeerDone(running);
    for (const [i, fd] of fds.entries()) {
      // The peer's write moved the offset we share with it: nothing is left to read here.
      expect(readSync(fd, Buffer.alloc(16), 0, 16, null)).toBe(0);
      expect(readFileSync(files[i]!, 'utf8')).toBe(`content ${i};${wrote}`);
      closeSync(fd);
    }
    await channel.close();
    await expectPeerExit(running);
  });

  it('receives fds from the blocking seed send()', async () => {
    const file = tempFile(`${script}-seed.txt`, 'seed;');
    const fd = openSync(file, 'r+');
    const running = await start(command, script, ['recv-read', '1']);
    setBlocking(running.socket, true);
    expect(send(running.socket, fd)).toBe(true);
    expect(JSON.parse(await running.peer.line())).toEqual({ content: 'seed;' });
    await expectPeerDone(running);
    expect(readFileSync(file, 'utf8')).toBe(`seed;${wrote}`);
    closeSync(fd);
    closeSync(running.socket);
    await expectPeerExit(running);
  });

  it('sends fds that a Channel receives and reads', async () => {
    const files = [0, 1].map((i) => tempFile(`${script}-from-peer-${i}.txt`, `from peer ${i}`));
    const running = await start(command, script, ['send-files', ...files]);
    const channel = new Channel(running.socket);
    for (let i = 0; i < 2; i++) {
      const message = await channel.recv();
      expect(message.fds).toHaveLength(1);
      expect(message.data.length).toBe(0);
      const buf = Buffer.alloc(64);
      const n = readSync(message.fd, buf, 0, buf.length, 0);
      expect(buf.subarray(0, n).toString()).toBe(`from peer ${i}`);
      message.close();
    }
    await expectPeerDone(running);
    await channel.close();
    await expectPeerExit(running);
  });

  it('sends fds that the blocking seed recv() takes', async () => {
    const file = tempFile(`${script}-from-peer-seed.txt`, 'seed from peer');
    const running = await start(command, script, ['send-files', file]);
    setBlocking(running.socket, true);
    const fd = recv(running.socket);
    if (fd < 0) throw lastError() ?? new Error('recv failed');
    const buf = Buffer.alloc(64);
    expect(buf.subarray(0, readSync(fd, buf, 0, 64, 0)).toString()).toBe('seed from peer');
    closeSync(fd);
    await expectPeerDone(running);
    // Then the peer has nothing more to send: the next recv sees the peer's close as EOF.
    const closed = running.peer.exited;
    closeSync(running.socket);
    await closed;
    await expectPeerExit(running);
  });

  it('echoes fds back: what returns is the same open file', async () => {
    const files = [0, 1, 2, 3].map((i) => tempFile(`${script}-echo-${i}.txt`, `echo ${i}`));
    const fds = files.map((file) => openSync(file, 'r'));
    const running = await start(command, script, ['echo', String(fds.length)]);
    const channel = new Channel(running.socket);
    await Promise.all(fds.map((fd) => channel.send(fd)));
    for (const fd of fds) {
      const back = await channel.recv();
      expect(back.fd).not.toBe(fd);
      expect(fstatSync(back.fd).ino).toBe(fstatSync(fd).ino);
      back.close();
      closeSync(fd);
    }
    await expectPeerDone(running);
    await channel.close();
    await expectPeerExit(running);
  });
});

describe('the reference peer (examples/reference_peer.py) speaks the message format', () => {
  const peerScript = path.join(root, 'examples', 'reference_peer.py');

  it.each(['stream', 'seqpacket', 'dgram'] as const)(
    'over %s it echoes bare fds, frames with data and fds, and empty frames',
    async (type) => {
      const files = [0, 1, 2].map((i) => {
        const file = path.join(dir, `reference-${type}-${i}`);
        writeFileSync(file, `file ${i}`);
        return openSync(file, 'r');
      });
      const inodes = files.map((fd) => fstatSync(fd).ino);
      const [mine, theirs] = socketpair(type);
      const peer = spawnPeer(python, [peerScript, '3', type, 'echo'], [theirs]);
      closeSync(theirs);
      const channel = new Channel(mine);
      const messages = [
        { data: Buffer.alloc(0), fds: [files[0]!] }, // a bare fd
        { data: Buffer.from('five!'), fds: [files[1]!, files[2]!] },
        { data: Buffer.alloc(0), fds: [] },
        { data: Buffer.alloc(100_000, 7), fds: [files[2]!] },
        { data: Buffer.from('no fds'), fds: [] },
      ];
      for (const message of messages) {
        await channel.send(message);
        const echoed = await within(channel.recv(), 10_000, 'the echo');
        expect(echoed.data.equals(message.data)).toBe(true);
        expect(echoed.fds.map((fd) => fstatSync(fd).ino)).toEqual(message.fds.map((fd) => inodes[files.indexOf(fd)]));
        echoed.close();
      }
      if (type === 'dgram') {
        await channel.send({ data: 'bye' }); // a datagram peer sees no EOF
        (await within(channel.recv(), 10_000, "the echo of 'bye'")).close();
      }
      await channel.close();
      const { code, stderr } = await peer.exited;
      expect(code, stderr).toBe(0);
      for (const fd of files) closeSync(fd);
    },
  );
});
