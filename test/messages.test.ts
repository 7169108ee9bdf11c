// Messages — a payload with any number of fds — across two processes on stream, seqpacket
// and dgram sockets: randomized round trips through an echoing peer, checked byte for byte
// and fd for fd, with both processes' fd counts equal before and after.
import { spawnSync } from 'node:child_process';
import { closeSync, fstatSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { binding } from '../lib/binding.js';
import { encodeHeader } from '../lib/framing.js';
import { Channel, socketpair, type SocketType } from '../lib/index.js';
import { countFds, expectNoFdLeakAroundEachTest, python, spawnNodePeer, within } from './helpers.js';

expectNoFdLeakAroundEachTest();

const SEED = Number(process.env.FDPASS_TEST_SEED ?? 20261125);
const MESSAGES = 2000;
const WINDOW = 8; // messages in flight at once
const STREAM_MAX_PAYLOAD = 256 * 1024;

const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-messages-'));
// 253 distinct files: an echoed fd is checked by the inode it refers to.
const pool = Array.from({ length: 253 }, (_, i) => {
  const file = path.join(dir, `f${i}`);
  writeFileSync(file, String(i));
  return openSync(file, 'r');
});
const inodeOf = new Map(pool.map((fd) => [fd, fstatSync(fd).ino]));
afterAll(() => {
  for (const fd of pool) closeSync(fd);
  rmSync(dir, { recursive: true, force: true });
});

/** mulberry32: a small seeded PRNG, so a failure can be replayed with FDPASS_TEST_SEED. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The largest packet a fresh socketpair of this type takes (the kernel's own limit). */
async function largestPacket(type: SocketType): Promise<number> {
  const [a, b] = Channel.pair(type, { maxPayloadBytes: 4 * 1024 * 1024 });
  let low = 0;
  let high = 4 * 1024 * 1024;
  while (low < high) {
    const size = Math.ceil((low + high) / 2);
    try {
      await a.send({ data: Buffer.alloc(size) });
      await b.recv();
      low = size;
    } catch (error) {
      if ((error as { code?: string }).code !== 'EMSGSIZE') throw error;
      high = size - 1;
    }
  }
  await Promise.all([a.close(), b.close()]);
  return low;
}

function randomMessage(next: () => number, maxPayload: number): { data: Buffer; fds: number[] } {
  const size = next() < 0.6 ? Math.floor(next() * 64) : next() < 0.75 ? Math.floor(next() * 4096) : Math.floor(next() * (maxPayload + 1));
  const data = Buffer.alloc(size);
  for (let i = 0; i < size; i += 997) data[i] = Math.floor(next() * 256); // sparse, cheap, position-dependent
  const r = next();
  const nfds = r < 0.7 ? Math.floor(next() * 5) : r < 0.95 ? Math.floor(next() * 33) : Math.floor(next() * 254);
  const fds = Array.from({ length: nfds }, () => pool[Math.floor(next() * pool.length)]!);
  return { data, fds };
}

/** SO_SNDBUF as small as the kernel allows (Node cannot set it: Python does, on the same socket). */
function shrinkSendBuffer(fd: number): void {
  const script = 'import socket; s = socket.socket(fileno=3); s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1); s.detach()';
  const result = spawnSync(python, ['-c', script], { stdio: ['ignore', 'inherit', 'inherit', fd] });
  expect(result.status).toBe(0);
}

describe.each(['stream', 'seqpacket', 'dgram'] as const)('messages over %s', (type) => {
  it(`${MESSAGES} random messages (0..max payload, 0..253 fds) go out and come back intact, in order`, async () => {
    const maxPayload = type === 'stream' ? STREAM_MAX_PAYLOAD : (await largestPacket(type)) - 8;
    console.log(`messages over ${type}: seed ${SEED}, payloads up to ${maxPayload} bytes`);
    const next = random(SEED);
    const [mine, theirs] = socketpair(type);
    const peer = spawnNodePeer('node-peer.mjs', ['echo-messages', String(MESSAGES)], [theirs]);
    closeSync(theirs);
    expect(await peer.line()).toBe('ready');
    const peerFdsBefore = countFds(peer.child.pid);
    const channel = new Channel(mine, { maxPayloadBytes: 4 * 1024 * 1024 });

    const sent: Array<{ data: Buffer; fds: number[] }> = [];
    let checked = 0;
    let fdsChecked = 0;
    const receiving = (async () => {
      for (; checked < MESSAGES; checked++) {
        const message = await channel.recv();
        const expected = sent[checked]!;
        try {
          if (!message.data.equals(expected.data))
            throw new Error(`message ${checked}: payload differs (${message.data.length} vs ${expected.data.length} bytes)`);
          const inodes = message.fds.map((fd) => fstatSync(fd).ino);
          const wanted = expected.fds.map((fd) => inodeOf.get(fd));
          if (inodes.join() !== wanted.join()) throw new Error(`message ${checked}: fds differ`);
          fdsChecked += inodes.length;
        } finally {
          message.close();
        }
      }
    })();
    const inFlight = new Set<Promise<void>>();
    for (let i = 0; i < MESSAGES; i++) {
      const message = randomMessage(next, maxPayload);
      sent.push(message);
      const sending = channel.send(message).finally(() => inFlight.delete(sending));
      inFlight.add(sending);
      // Keep a bounded window: wait for the echo of the message WINDOW places back.
      while (i - checked >= WINDOW) await Promise.race([receiving, new Promise((resolve) => setImmediate(resolve))]);
    }
    // A peer that dies would leave a dgram channel waiting for good: fail with its stderr.
    const died = peer.exited.then(({ code, stderr }) => {
      throw new Error(`the peer exited (${code}) before echoing everything: ${stderr}`);
    });
    await within(Promise.race([receiving, died]), 60_000, 'the echoes');
    await Promise.all(inFlight);
    expect(checked).toBe(MESSAGES);
    expect(fdsChecked).toBe(sent.reduce((total, message) => total + message.fds.length, 0));
    expect(await peer.line()).toBe('done');
    expect(countFds(peer.child.pid)).toBe(peerFdsBefore);
    await channel.send({ data: 'bye' }); // a dgram peer sees no EOF: this lets it go
    await channel.close();
    expect((await peer.exited).code).toBe(0);
    died.catch(() => {});
  });
});

describe('messages in one process', () => {
  it('a stream payload larger than the socket buffer arrives whole, and later messages wait their turn', async () => {
    // The receiving end stays a bare socket until both sends have had time to go: a
    // channel would read in the background, and the send might finish on a fast machine.
    const [mine, theirs] = socketpair('stream');
    const a = new Channel(mine);
    const big = Buffer.alloc(2 * 1024 * 1024);
    for (let i = 0; i < big.length; i += 4096) big[i] = (i / 4096) & 0xff;
    const order: string[] = [];
    const sendingBig = a.send({ data: big, fds: [pool[0]!] }).then(() => order.push('big sent'));
    const sendingSmall = a.send({ data: 'after', fds: [pool[1]!] }).then(() => order.push('small sent'));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(order).toEqual([]); // the socket is full: both wait
    const b = new Channel(theirs, { maxPayloadBytes: 4 * 1024 * 1024 });
    const first = await within(b.recv(), 10_000, 'the big message');
    expect(first.data.equals(big)).toBe(true);
    expect(first.fds.map((fd) => fstatSync(fd).ino)).toEqual([inodeOf.get(pool[0]!)]);
    first.close();
    const second = await within(b.recv(), 10_000, 'the small message');
    expect(second.data.toString()).toBe('after');
    expect(second.fds.map((fd) => fstatSync(fd).ino)).toEqual([inodeOf.get(pool[1]!)]);
    second.close();
    await Promise.all([sendingBig, sendingSmall]);
    expect(order).toEqual(['big sent', 'small sent']);
    await Promise.all([a.close(), b.close()]);
  });

  it.each([
    ['stream', 'a default send buffer'],
    ['stream', "the kernel's smallest send buffer, where frames over 2 KiB go in parts"],
    ['seqpacket', 'a default send buffer'],
  ] as const)(
    'over %s with %s, a backlog of frames small and large, and bare fds, each buffer overwritten once send() returns, arrives intact and in order',
    async (type, sendBuffer) => {
      // What waits is copied at the call (small frames side by side in a shared slab, large
      // ones alone) and goes out a sendmmsg at a time: the caller's bytes are theirs again at
      // once. Half the messages are sent before anyone reads, half while the backlog drains,
      // so that new frames are copied while older ones still wait.
      const next = random(SEED + 1);
      const [mine, theirs] = socketpair(type);
      if (sendBuffer !== 'a default send buffer') shrinkSendBuffer(mine);
      const a = new Channel(mine);
      const sent: Array<{ data: string; fds: number[] }> = [];
      const sending: Array<Promise<void>> = [];
      const scratch = Buffer.alloc(64 * 1024);
      const sendOne = (i: number): void => {
        const r = next();
        const fds = [pool[i % pool.length]!];
        if (r < 0.2) {
          sent.push({ data: '', fds });
          sending.push(a.send(fds[0]!));
          return;
        }
        const size =
          r < 0.7 ? Math.floor(next() * 100) : r < 0.95 ? 1024 + Math.floor(next() * 8192) : 20_000 + Math.floor(next() * 40_000);
        const data = scratch.subarray(0, size).fill(`${i},`);
        sent.push({ data: data.toString('latin1'), fds: r < 0.5 ? [] : fds });
        sending.push(a.send({ data, fds: r < 0.5 ? [] : fds }));
        scratch.fill(0, 0, size); // what waits for the socket was copied at the call
      };
      for (let i = 0; i < 300; i++) sendOne(i);
      const b = new Channel(theirs, { maxPayloadBytes: 64 * 1024 });
      const kept: Buffer[] = [];
      const received = (async () => {
        for (let i = 0; i < 600; i++) {
          const message = await within(b.recv(), 10_000, `message ${i}`);
          const expected = sent[i]!; // pushed before it was sent
          kept.push(message.data);
          try {
            expect.soft(message.data.toString('latin1') === expected.data, `message ${i}'s payload`).toBe(true);
            expect(message.fds.map((fd) => fstatSync(fd).ino)).toEqual(expected.fds.map((fd) => inodeOf.get(fd)));
          } finally {
            message.close();
          }
        }
      })();
      for (let i = 300; i < 600; i++) {
        sendOne(i);
        if (i % 10 === 0) await new Promise((resolve) => setImmediate(resolve));
      }
      await received;
      // Received payloads share slabs as Node's small Buffers share its pool: none was overwritten.
      expect(kept.filter((data, i) => data.toString('latin1') !== sent[i]!.data).length).toBe(0);
      await Promise.all(sending);
      await Promise.all([a.close(), b.close()]);
    },
  );

  it.each(['stream', 'seqpacket'] as const)(
    "over %s, a message over the receiver's limits is dropped with its fds closed; the next one arrives",
    async (type) => {
      const before = countFds();
      const [sender, receiver] = Channel.pair(type, { maxPayloadBytes: 100, maxFdsPerMessage: 2 });
      await sender.send({ data: Buffer.alloc(101), fds: [pool[0]!] });
      await sender.send({ data: 'ok', fds: [pool[0]!, pool[1]!, pool[2]!] });
      await sender.send({ data: 'fits', fds: [pool[3]!, pool[4]!] });
      await expect(receiver.recv()).rejects.toMatchObject({ code: 'ERR_FDPASS_MESSAGE_TOO_LARGE' });
      await expect(receiver.recv()).rejects.toMatchObject({ code: 'ERR_FDPASS_TOO_MANY_FDS' });
      const fits = await within(receiver.recv(), 2000, 'the message within the limits');
      expect(fits.data.toString()).toBe('fits');
      expect(fits.fds.map((fd) => fstatSync(fd).ino)).toEqual([inodeOf.get(pool[3]!), inodeOf.get(pool[4]!)]);
      fits.close();
      await Promise.all([sender.close(), receiver.close()]);
      expect(countFds()).toBe(before);
    },
  );

  it('more than 253 fds in one message is a RangeError at the call, and nothing is sent', async () => {
    const [a, b] = Channel.pair();
    expect(() => a.send({ fds: new Array<number>(254).fill(pool[0]!) })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    await a.send({ data: 'next' });
    expect((await within(b.recv(), 2000, 'recv')).data.toString()).toBe('next');
    await Promise.all([a.close(), b.close()]);
  });
});

describe('a frame cut short', () => {
  it('close() in the middle of a frame closes the fds that came with its start', async () => {
    const before = countFds();
    const [x, y] = socketpair();
    const receiver = new Channel(y);
    // The start of a frame of 1,000 bytes with 2 fds: its header, 10 bytes and the fds.
    const start = Buffer.concat([encodeHeader(1000, 2), Buffer.alloc(10)]);
    expect(binding.sendmsg(x, start, 0, start.length, Int32Array.of(pool[0]!, pool[1]!), 2)).toBe(start.length);
    const pending = receiver.recv().then(
      () => 'delivered',
      (error: { code?: string }) => error.code,
    );
    await new Promise((resolve) => setTimeout(resolve, 50)); // the channel reads the start
    await receiver.close();
    expect(await pending).toBe('ERR_FDPASS_CHANNEL_CLOSED');
    closeSync(x);
    expect(countFds()).toBe(before);
  });
});
