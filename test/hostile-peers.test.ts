// Hostile peers in processes of their own (fdpass issue 9): floods of fds and of bytes that
// nobody reads, fds that no message declares, frames left half-sent, odd control messages and
// fd kinds, connection storms, and a seeded fuzzer. The peers are Python (test/fixtures/
// hostile-peer.py, no code of ours); the receiver is this process, or a Node child where its
// memory is the subject. Every fd either side holds is counted through /proc.
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { binding } from '../lib/binding';
import { Channel, closeFd, connect, listen, recv as recvFd, socketpair, type ChannelOptions, type ReceivedMessage } from '../lib/index';
import {
  contentOf,
  countFds,
  expectNoFdLeakAroundEachTest,
  fixtures,
  isCloexec,
  openFds,
  python,
  spawnNodePeer,
  spawnPeer,
  timeScale,
  within,
  type Peer,
} from './helpers';

expectNoFdLeakAroundEachTest();

const MiB = 1024 * 1024;
/** Linux's SCM_MAX_FD: the most fds one message brings, so the most a budget is exceeded by. */
const MAX_FDS = 253;
const DEFAULT_MAX_BUFFERED_FDS = 128;
/** What one buffered message costs on top of its payload, by the budget's own rule. */
const MESSAGE_OVERHEAD_BYTES = 256;
const FRAME_HEADER_BYTES = 8;
/** The most one message can put a byte budget over: its header, payload and overhead. */
const oneMessageBytes = (payloadBytes: number): number => FRAME_HEADER_BYTES + payloadBytes + MESSAGE_OVERHEAD_BYTES;
const hostilePeer = path.join(fixtures, 'hostile-peer.py');

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'fdpass-hostile-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let serial = 0;
const socketPath = (): string => path.join(dir, `s${serial++}.sock`);

// What a test started, undone after it even when an assertion failed half-way (this hook runs
// before the fd-leak check: vitest runs after-hooks in reverse order of registration).
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function stop(peer: Peer): Promise<void> {
  if (peer.child.exitCode === null && peer.child.signalCode === null) peer.child.kill();
  await peer.exited;
}

/**
 * Runs one attack of hostile-peer.py, on `socketFd` as its fd 3 when given. With waitForGo it
 * starts only after peerFdsBeforeAttack().
 */
function attack(command: string, args: Array<string | number>, socketFd?: number, waitForGo = false): Peer {
  const flags = waitForGo ? ['--wait-for-go'] : [];
  const peer = spawnPeer(python, [hostilePeer, ...flags, command, ...args.map(String)], socketFd === undefined ? [] : [socketFd]);
  cleanups.push(() => stop(peer));
  return peer;
}

/** A peer on the other end of a new socketpair; this process keeps `mine`, not yet a channel. */
function attackOverPair(
  type: 'stream' | 'seqpacket' | 'dgram',
  command: string,
  args: Array<string | number> = [],
  waitForGo = false,
): { mine: number; peer: Peer } {
  const [mine, theirs] = socketpair(type);
  const peer = attack(command, args, theirs, waitForGo);
  closeFd(theirs);
  return { mine, peer };
}

function own<T extends { close(): Promise<void> }>(closable: T): T {
  cleanups.push(() => closable.close());
  return closable;
}

async function expectLine(peer: Peer, expected: string, ms = 10_000): Promise<void> {
  expect(await within(peer.line(), ms, `the peer's "${expected}"`)).toBe(expected);
}

/**
 * The fds of a peer started with waitForGo, counted before its attack opens any (counted after
 * a bare "ready", they raced the attack's first fds); then the attack starts.
 */
async function peerFdsBeforeAttack(peer: Peer): Promise<number> {
  await expectLine(peer, 'ready');
  const fds = countFds(peer.child.pid);
  peer.child.kill('SIGUSR1');
  return fds;
}

/**
 * This process's open fds by a bare readdir: no readlink per fd, so cheap to sample while it
 * holds thousands. It sees its own readdir fd (and any fleeting one of the runtime's): compare
 * it only with a baseline taken the same way, and only against bounds, never for equality.
 */
const fdsNow = (): number => readdirSync('/proc/self/fd').length;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Samples every 10 ms until the value has not changed for quietMs (the receiver has read what
 * it will read); returns the last value and the highest seen on the way.
 */
async function settle(sample: () => number, quietMs = 300, maxMs = 8_000): Promise<{ value: number; peak: number }> {
  const start = Date.now();
  let value = sample();
  let peak = value;
  let since = Date.now();
  while (Date.now() - since < quietMs && Date.now() - start < maxMs) {
    await sleep(10);
    const now = sample();
    peak = Math.max(peak, now);
    if (now !== value) since = Date.now();
    value = now;
  }
  return { value, peak };
}

/** Polls until condition() holds or ms pass; says which. */
async function eventually(condition: () => boolean, ms: number): Promise<boolean> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > ms) return false;
    await sleep(10);
  }
  return true;
}

/** Receives (and closes) messages until a receive fails; a receive pending for ms is a failure too. */
async function readUntilError(channel: Channel, ms: number): Promise<{ messages: string[]; error: Error & { code?: string } }> {
  const messages: string[] = [];
  for (;;) {
    try {
      const message = await within(channel.recv(), ms, `recv() after ${messages.length} message(s)`);
      messages.push(message.data.toString());
      message.close();
    } catch (error) {
      return { messages, error: error as Error & { code?: string } };
    }
  }
}

describe('an fd flood nobody reads', () => {
  const cases = (['stream', 'seqpacket', 'dgram'] as const).flatMap((type) => [
    { type, maxBufferedFds: 1, label: '1' },
    { type, maxBufferedFds: undefined, label: 'default' },
  ]);
  it.each(cases)(
    '$type, maxBufferedFds $label: 64 messages of 253 fds leave at most the budget and one message in this process, and all arrive when read',
    async ({ type, maxBufferedFds }) => {
      const budget = maxBufferedFds ?? DEFAULT_MAX_BUFFERED_FDS;
      const { mine, peer } = attackOverPair(type, 'flood-fds', [64, MAX_FDS], true);
      const baseline = countFds();
      const rawBaseline = fdsNow();
      const channel = own(new Channel(mine, maxBufferedFds === undefined ? {} : { maxBufferedFds }));
      const peerFds = await peerFdsBeforeAttack(peer);
      await expectLine(peer, 'done');

      // Nobody reads: whatever the channel took from the kernel, it holds for nobody.
      const { peak } = await settle(() => fdsNow() - rawBaseline);
      const held = countFds() - baseline;
      expect.soft(peak, 'fds this process held beyond its baseline').toBeLessThanOrEqual(budget + MAX_FDS);
      expect.soft(held, 'fds read from the kernel before the budget stopped reading').toBeGreaterThanOrEqual(1);
      expect.soft(channel.bufferedFds, 'channel.bufferedFds, against the fds /proc shows').toBe(held);

      let fds = 0;
      let heldWhileReading = 0;
      for (let i = 0; i < 64; i++) {
        const message = await within(channel.recv(), 5_000, `message ${i}`);
        expect(message.data.readUInt32LE(0)).toBe(i);
        fds += message.fds.length;
        message.close();
        heldWhileReading = Math.max(heldWhileReading, fdsNow() - rawBaseline);
      }
      expect(fds).toBe(64 * MAX_FDS);
      expect.soft(heldWhileReading, 'fds held while the messages were read one by one').toBeLessThanOrEqual(budget + MAX_FDS);
      expect(countFds()).toBe(baseline);
      expect(countFds(peer.child.pid)).toBe(peerFds);
    },
  );
});

describe('fds no message declares', () => {
  it('frames declaring no fds but carrying 253 each: ERR_FDPASS_BAD_MESSAGE at the first, its fds closed while the peer is still there', async () => {
    const { mine, peer } = attackOverPair('stream', 'undeclared', [20]);
    const baseline = countFds();
    const channel = own(new Channel(mine));
    const { messages, error } = await readUntilError(channel, 2_000);
    expect(error).toMatchObject({ code: 'ERR_FDPASS_BAD_MESSAGE' });
    expect(messages.length, `messages delivered before the error: ${messages.join(' ')}`).toBeLessThanOrEqual(1);
    // Closed without waiting for EOF: the peer keeps its end open. The channel's own socket goes too.
    await eventually(() => countFds() === baseline - 1, 2_000);
    expect(countFds() - (baseline - 1), 'fds still held').toBe(0);
    expect(channel.closed).toBe(true);
    expect(peer.child.exitCode).toBeNull();
  });

  it("fds sent with the tail of a frame's payload: ERR_FDPASS_BAD_MESSAGE, and they are closed at once", async () => {
    const { mine, peer } = attackOverPair('stream', 'tail-fds');
    const baseline = countFds();
    const channel = own(new Channel(mine));
    await expectLine(peer, 'ready');
    await expectLine(peer, 'done');
    const { messages, error } = await readUntilError(channel, 2_000);
    expect(error).toMatchObject({ code: 'ERR_FDPASS_BAD_MESSAGE' });
    expect(messages.length, `messages delivered before the error: ${messages.length}`).toBeLessThanOrEqual(1);
    await eventually(() => countFds() === baseline - 1, 2_000);
    expect(countFds() - (baseline - 1), 'fds still held').toBe(0);
    expect(peer.child.exitCode).toBeNull();
  });

  it("frames declaring 2 fds and carrying 5, read by listeners: 'error' gets ERR_FDPASS_BAD_MESSAGE, the channel closes, nothing is held", async () => {
    const { mine, peer } = attackOverPair('stream', 'surplus', [20, 2, 5]);
    const baseline = countFds();
    const channel = own(new Channel(mine));
    const messages: string[] = [];
    const errors: string[] = [];
    channel.on('message', (message) => {
      messages.push(`${message.data.toString()} with ${message.fds.length} fds`);
      message.close();
    });
    channel.on('error', (error) => errors.push((error as Error & { code?: string }).code ?? String(error)));
    await expectLine(peer, 'ready');
    // The channel may hang up before the peer has sent its 20 frames: then the peer says "gone".
    const ending = await within(peer.line(), 10_000, 'the peer finishing');
    expect(['done', 'gone BrokenPipeError', 'gone ConnectionResetError']).toContain(ending);
    await eventually(() => channel.closed, 2_000);
    expect(errors).toEqual(['ERR_FDPASS_BAD_MESSAGE']);
    expect(messages.length, `messages delivered: ${messages.join(', ')}`).toBeLessThanOrEqual(1);
    expect(channel.closed).toBe(true);
    await eventually(() => countFds() === baseline - 1, 2_000);
    expect(countFds() - (baseline - 1), 'fds still held').toBe(0);
    // Closed without waiting for EOF: a peer that finished sending is still there.
    if (ending === 'done') expect(peer.child.exitCode).toBeNull();
  });
});

describe('a message refused, then honest ones', () => {
  it.each([
    { type: 'stream' as const, kind: 'oversized' },
    { type: 'stream' as const, kind: 'too-many-fds' },
    { type: 'seqpacket' as const, kind: 'oversized' },
    { type: 'seqpacket' as const, kind: 'malformed' },
    { type: 'dgram' as const, kind: 'malformed' },
  ])("$type, $kind: a 'message' listener with no 'error' listener still gets every later message", async ({ type, kind }) => {
    const { mine, peer } = attackOverPair(type, 'then-honest', [kind]);
    const baseline = countFds();
    const channel = own(new Channel(mine, { maxPayloadBytes: 1024, maxFdsPerMessage: 10 }));
    const messages: string[] = [];
    channel.on('message', (message) => {
      messages.push(`${message.data.toString()} with ${message.fds.length} fd(s)`);
      message.close();
    });
    await expectLine(peer, 'ready');
    await expectLine(peer, 'done');
    await eventually(() => messages.length === 5, 2_000);
    expect(messages).toEqual(['h0', 'h1', 'h2', 'h3', 'h4'].map((data) => `${data} with 1 fd(s)`));
    expect(countFds(), "fds held once the listener has closed what it got (the refused message's were closed)").toBe(baseline);
  });
});

describe('a frame left half-sent', () => {
  it.each([
    { where: 'payload', reader: 'a pending recv()' },
    { where: 'header', reader: "an 'error' listener" },
  ])(
    'cut in its $where, with its 253 fds: frameTimeout ends the channel with ERR_FDPASS_FRAME_TIMEOUT for $reader and closes the fds',
    async ({ where }) => {
      const frameTimeout = 300;
      const start = Date.now(); // before the peer exists: the frame starts later than this
      const { mine, peer } = attackOverPair('stream', 'partial', [where]);
      const baseline = countFds();
      const channel = own(new Channel(mine, { frameTimeout }));
      const ended =
        where === 'payload'
          ? channel.recv().then(
              (message) => {
                message.close();
                return new Error('a message arrived');
              },
              (error: Error) => error,
            )
          : new Promise<Error>((resolve) => channel.once('error', resolve));
      await expectLine(peer, 'ready');
      await expectLine(peer, 'stalled');
      const stalled = Date.now();
      const error = await within(ended, 4_000, 'the end of the channel');
      const end = Date.now();
      expect(error).toMatchObject({ code: 'ERR_FDPASS_FRAME_TIMEOUT' });
      expect(end - start).toBeGreaterThanOrEqual(frameTimeout);
      expect(end - stalled).toBeLessThanOrEqual(3_000);
      await eventually(() => countFds() === baseline - 1, 2_000);
      expect(countFds() - (baseline - 1), 'fds still held').toBe(0);
      expect(channel.closed).toBe(true);
      expect(peer.child.exitCode).toBeNull();
    },
  );
});

describe('a byte flood nobody reads', () => {
  interface Report {
    rssBefore: number;
    rssPeak: number;
    bufferedBytes: number | null;
    bufferedBytesPeak: number | null;
    gaveUp: boolean;
  }
  interface Drained {
    messages: number;
    intact: number;
    errors: string[];
  }

  /** The channel read (> 0) and kept to its budget; NaN where the receiver found no bufferedBytes getter. */
  function expectBufferedBytes(report: Report, bound: number): void {
    expect.soft(report.bufferedBytes ?? NaN, 'channel.bufferedBytes once the flood stalled').toBeGreaterThan(0);
    expect.soft(report.bufferedBytesPeak ?? NaN, 'the highest channel.bufferedBytes seen during the flood').toBeLessThanOrEqual(bound);
  }

  /**
   * The receiver (a Node child, flooded-receiver.mjs) and a flooding peer on one socketpair.
   * The receiver reports once `until` says the flood is over (or it gave up), then drains.
   */
  async function flood(receiverArgs: string[], nodeFlags: string[], attackArgs: [string, ...Array<string | number>], until: string[]) {
    const [forReceiver, forPeer] = socketpair('stream');
    const receiver = spawnPeer(
      process.execPath,
      [...nodeFlags, path.join(fixtures, 'flooded-receiver.mjs'), ...receiverArgs],
      [forReceiver],
    );
    cleanups.push(() => stop(receiver));
    closeFd(forReceiver);
    await within(receiver.line(), 10_000, 'the receiver starting');
    const peer = attack(attackArgs[0], attackArgs.slice(1), forPeer);
    closeFd(forPeer);
    await expectLine(peer, 'ready');
    const reportLine = receiver.line();
    const peerState = (async () => {
      for (;;) {
        const line = await peer.line();
        if (until.includes(line)) return line;
      }
    })();
    const first = await within(Promise.race([reportLine.then(() => 'receiver'), peerState]), 20_000, 'the flood');
    if (first !== 'receiver') receiver.child.kill('SIGUSR2');
    const report = JSON.parse(await within(reportLine, 10_000, 'the receiver report')) as Report;
    return { receiver, peer, report };
  }

  it('500 frames of 1 MiB: the receiver grows by less than 64 MiB and buffers at most its budget and one message; then all 500 arrive intact', async () => {
    // Defaults: maxPayloadBytes 1 MiB, so maxBufferedBytes is 4 MiB, and one message may take it
    // past that by its header, 1 MiB and 256 bytes: about 5 MiB in all. The receive buffers
    // exist before the flood. 64 MiB leaves the runtime room for its own growth (JIT, heap
    // sizing) and is an eighth of the flood, which the receiver would otherwise hold whole.
    const maxBufferedBytes = 4 * MiB;
    const { receiver, peer, report } = await flood(['frames', '500', String(MiB)], [], ['byte-flood', 500, MiB], ['blocked', 'done']);
    expect.soft(report.rssPeak - report.rssBefore, `RSS growth in bytes (gave up: ${report.gaveUp})`).toBeLessThan(64 * MiB);
    expectBufferedBytes(report, maxBufferedBytes + oneMessageBytes(MiB));
    expect(report.gaveUp).toBe(false);
    const drained = JSON.parse(await within(receiver.line(), 20_000, 'the receiver draining')) as Drained;
    expect(drained).toMatchObject({ messages: 500, intact: 500, errors: [] });
    expect((await peer.exited).code).toBe(0);
    expect((await receiver.exited).code).toBe(0);
  });

  it('3 s of empty frames to a receiver with a 64 MiB heap: no crash, RSS bounded, and every frame arrives', async () => {
    // Each empty message costs 256 bytes of the 4 MiB default budget: at most 16,384 of them
    // (and one) wait, a few MiB of heap. Without a budget the receiver grew by 500 MiB in 3 s
    // here, or died of it under the 64 MiB heap.
    const maxBufferedBytes = 4 * MiB;
    const { receiver, peer, report } = await flood(['empty'], ['--max-old-space-size=64'], ['empty-flood', 3], ['stopping']);
    expect.soft(report.rssPeak - report.rssBefore, `RSS growth in bytes (gave up: ${report.gaveUp})`).toBeLessThan(64 * MiB);
    expectBufferedBytes(report, maxBufferedBytes + oneMessageBytes(0));
    expect(report.gaveUp).toBe(false);
    const sent = await within(peer.line(), 10_000, 'the peer finishing');
    expect(sent).toMatch(/^sent \d+$/);
    const drained = JSON.parse(await within(receiver.line(), 10_000, 'the receiver draining')) as Drained;
    const count = Number(sent.split(' ')[1]);
    expect(drained).toMatchObject({ messages: count, intact: count, errors: [] });
    expect(await receiver.exited).toMatchObject({ code: 0, signal: null });
  });
});

describe('a deep queue', () => {
  it('2 MB of frames queued before the first read, to a channel with a 64 MiB byte budget: each read stays within its receive buffer, and every frame arrives intact', async () => {
    // The peer raises its SO_SNDBUF (no privilege needed, up to net.core.wmem_max), so the
    // queue is deeper than the receive buffers (64 slots of 4 KiB): at least 400 KB even where
    // wmem_max is Linux's default. A wake-up may read more than a slot only where it has room.
    const count = 64;
    const size = 32_000;
    const [forReceiver, forPeer] = socketpair('stream');
    const receiver = spawnNodePeer('deep-queue-receiver.mjs', [String(count), String(size), String(64 * MiB)], [forReceiver], {}, 'pipe');
    cleanups.push(() => stop(receiver));
    closeFd(forReceiver);
    await expectLine(receiver, 'waiting');
    const peer = attack('byte-flood', [count, size, 4 * MiB], forPeer);
    closeFd(forPeer);
    await expectLine(peer, 'ready');
    // Everything queued ("done"), or as much as the socket takes ("blocked").
    expect(['blocked', 'done']).toContain(await within(peer.line(), 10_000, 'the peer filling the queue'));
    receiver.child.stdin!.end('read\n');
    const drained = JSON.parse(await within(receiver.line(), 20_000, 'the receiver draining')) as object;
    expect(drained).toMatchObject({ messages: count, intact: count, errors: [] });
    expect(await receiver.exited).toMatchObject({ code: 0, signal: null });
  });
});

describe("a server's untaken channels", () => {
  it('64 clients each sending 253 fds to channels nobody took: the server holds at most one budget and one message, then every fd arrives', async () => {
    const before = countFds();
    const server = own(await listen(socketPath()));
    const peer = attack('connect-flood', [server.path, 64, MAX_FDS]);
    await expectLine(peer, 'ready');
    const rawBaseline = fdsNow();
    peer.child.kill('SIGUSR1'); // go
    await expectLine(peer, 'done');
    const { peak } = await settle(() => fdsNow() - rawBaseline);
    // Beyond the 64 accepted sockets: one budget shared by every untaken channel, plus one message.
    expect.soft(peak - 64, 'received fds held by the server for untaken channels').toBeLessThanOrEqual(DEFAULT_MAX_BUFFERED_FDS + MAX_FDS);

    const iterator = server[Symbol.asyncIterator]();
    const channels: Channel[] = [];
    for (let i = 0; i < 64; i++) {
      const { value } = await within(iterator.next(), 5_000, `accepted channel ${i}`);
      channels.push(own(value as Channel));
    }
    await iterator.return!();
    const messages = await Promise.all(channels.map((channel, i) => within(channel.recv(), 5_000, `channel ${i}'s message`)));
    expect(messages.map((message) => message.data.toString()).sort()).toEqual(Array.from({ length: 64 }, (_, i) => `c${i}`).sort());
    expect(messages.reduce((sum, message) => sum + message.fds.length, 0)).toBe(64 * MAX_FDS);
    for (const message of messages) message.close();
    await Promise.all(channels.map((channel) => channel.close()));
    await stop(peer);
    await server.close();
    expect(countFds()).toBe(before);
  });
});

describe("a server's untaken channels racing the shared budget", () => {
  const none = new Int32Array(0);
  /** Raw client sockets connected to path, in this process (the test plays the hostile peer). */
  function rawClients(serverPath: string, count: number): number[] {
    return Array.from({ length: count }, () => {
      const sock = binding.unixSocket(binding.constants.SOCK_STREAM);
      expect(binding.connectUnix(sock, Buffer.from(serverPath), false)).toBe(0);
      cleanups.push(() => closeSync(sock));
      return sock;
    });
  }
  const sendRaw = (sock: number, bytes: number[] | Buffer, fds: Int32Array = none): number =>
    binding.sendmsg(sock, Uint8Array.from(bytes), 0, bytes.length, fds, fds.length);

  it('frames begun on every untaken channel while there was room do not each add a message of fds once the budget is full', async () => {
    const server = own(await listen({ path: socketPath(), channel: { maxBufferedFds: 4 } }));
    const clients = rawClients(server.path, 20);
    const devnull = openSync('/dev/null', 'r');
    cleanups.push(() => closeSync(devnull));
    await sleep(100);
    for (const sock of clients) sendRaw(sock, [1, 0]); // a frame header begins on each, no fds yet
    await sleep(100);
    const base = fdsNow();
    expect(sendRaw(clients[0]!, [4, 0, 0, 0, 0, 0], new Int32Array(4).fill(devnull))).toBe(6); // fills the shared budget
    await sleep(100);
    for (const sock of clients.slice(1)) sendRaw(sock, [100, 0, 1, 0, 0, 0, 0x61], new Int32Array(100).fill(devnull));
    const { peak } = await settle(() => fdsNow() - base);
    expect(peak, 'received fds held for untaken channels').toBeLessThanOrEqual(4 + MAX_FDS);
    await server.close();
  });

  it('frames begun on every untaken channel do not each hold their payload past the shared byte budget', async () => {
    const server = own(await listen({ path: socketPath(), channel: { maxBufferedBytes: 64 * 1024 } }));
    const clients = rawClients(server.path, 16);
    await sleep(100);
    const header = Buffer.alloc(8);
    header.writeUInt8(1, 0);
    header.writeUInt32LE(256 * 1024, 4);
    for (const sock of clients) sendRaw(sock, header); // each announces 256 KiB
    await sleep(100);
    const chunk = Buffer.alloc(64 * 1024, 0x62);
    for (let i = 0; i < 4; i++) for (const sock of clients) sendRaw(sock, chunk);
    await sleep(300);
    const held = await within(
      (async () => {
        const iterator = server[Symbol.asyncIterator]();
        const taken: Channel[] = [];
        for (let i = 0; i < 16; i++) taken.push(own((await iterator.next()).value as Channel));
        await iterator.return!();
        return taken.reduce((sum, channel) => sum + channel.bufferedBytes, 0);
      })(),
      5000,
      'taking the 16 channels',
    );
    // Counted as the channels were handed out: no more than the budget and one message.
    expect(held, 'bytes the untaken channels held').toBeLessThanOrEqual(64 * 1024 + oneMessageBytes(256 * 1024));
    await server.close();
  });

  it('an untaken channel whose peer sends while others filled the budget does not spin the loop', async () => {
    const server = own(await listen({ path: socketPath(), channel: { maxBufferedFds: 4 } }));
    const [a, b] = rawClients(server.path, 2) as [number, number];
    const devnull = openSync('/dev/null', 'r');
    cleanups.push(() => closeSync(devnull));
    await sleep(50);
    for (let i = 0; i < 4; i++) expect(sendRaw(b, [0], Int32Array.of(devnull))).toBe(1); // b fills the shared budget
    await sleep(100);
    expect(sendRaw(a, [0], Int32Array.of(devnull))).toBe(1); // a's channel watched while there was room
    await sleep(20);
    const start = process.cpuUsage();
    await sleep(500);
    const used = process.cpuUsage(start);
    expect((used.user + used.system) / 1000, 'CPU ms used in 500 ms of waiting').toBeLessThan(150);
    await server.close();
  });
});

describe('control messages', () => {
  // A socket with SO_PASSCRED (systemd's PassCredentials=, for one) gets SCM_CREDENTIALS on
  // every read, ahead of the fds. The option belongs to the socket, so a helper process sets
  // it on our end as its fd 3.
  function passCredentials(fd: number): void {
    const script = 'import socket; socket.socket(fileno=3).setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)';
    const result = spawnSync(python, ['-c', script], { stdio: ['ignore', 'pipe', 'pipe', fd] });
    expect(result.status, result.stderr.toString()).toBe(0);
  }

  it.each([
    { type: 'stream' as const, passcred: false },
    { type: 'seqpacket' as const, passcred: false },
    { type: 'stream' as const, passcred: true },
    { type: 'seqpacket' as const, passcred: true },
  ])(
    '$type, SO_PASSCRED on the receiver: $passcred: fds beside SCM_CREDENTIALS, and split over two SCM_RIGHTS, arrive in order; the channel goes on',
    async ({ type, passcred }) => {
      const { mine, peer } = attackOverPair(type, 'cmsg', [], true);
      if (passcred) passCredentials(mine);
      const baseline = countFds();
      const channel = own(new Channel(mine));
      const peerFds = await peerFdsBeforeAttack(peer);
      const received: Array<{ data: string; contents: string[] }> = [];
      for (let i = 0; i < 4; i++) {
        const message = await within(channel.recv(), 5_000, `message ${i}`);
        received.push({ data: message.data.toString(), contents: message.fds.map((fd) => contentOf(fd)) });
        message.close();
      }
      expect(received).toEqual([
        { data: '', contents: ['A'] },
        { data: 'creds', contents: ['B', 'C', 'D'] },
        { data: 'two-rights', contents: ['E', 'F', 'G', 'H', 'I'] },
        { data: 'after', contents: [] },
      ]);
      await expectLine(peer, 'done');
      expect(countFds()).toBe(baseline);
      expect(countFds(peer.child.pid)).toBe(peerFds);
    },
  );
});

describe('exotic fds', () => {
  const linkOf: Record<string, RegExp> = {
    eventpoll: /^anon_inode:\[eventpoll\]$/,
    eventfd: /^anon_inode:\[eventfd\]$/,
    pidfd: /^(anon_inode:\[pidfd\]|pidfd:\[\d+\])$/, // pidfs (Linux 6.9+) names its own
    signalfd: /^anon_inode:\[signalfd\]$/,
    path: /^\/$/,
    'socket-with-fd-in-flight': /^socket:\[\d+\]$/,
  };

  it('epoll, eventfd, pidfd, signalfd, O_PATH and a socket with an fd in flight arrive as what they are, bare and in one frame', async () => {
    const { mine, peer } = attackOverPair('stream', 'exotic');
    const baseline = countFds();
    const channel = own(new Channel(mine));
    await expectLine(peer, 'ready');
    const kinds = JSON.parse(await within(peer.line(), 5_000, 'the kinds')) as string[];
    expect(kinds).toEqual(expect.arrayContaining(['eventpoll', 'eventfd', 'pidfd', 'path', 'socket-with-fd-in-flight']));

    const check = (fd: number, kind: string): void => {
      expect(openFds().get(fd), kind).toMatch(linkOf[kind]!);
      expect(isCloexec(fd), `${kind} is close-on-exec`).toBe(true);
      if (kind === 'pidfd') expect(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8')).toMatch(new RegExp(`^Pid:\\s+${peer.child.pid}$`, 'm'));
    };
    const messages: ReceivedMessage[] = [];
    for (const kind of kinds) {
      const message = await within(channel.recv(), 5_000, `the bare ${kind}`);
      messages.push(message);
      expect(message.data.length).toBe(0);
      expect(message.fds.length).toBe(1);
      check(message.fd, kind);
    }
    const frame = await within(channel.recv(), 5_000, 'the frame');
    messages.push(frame);
    expect(frame.data.toString()).toBe('all');
    expect(frame.fds.length).toBe(kinds.length);
    kinds.forEach((kind, i) => check(frame.fds[i]!, kind));
    // The socket works, and what was in flight in it is ours too.
    const inFlight = recvFd(frame.fds[kinds.indexOf('socket-with-fd-in-flight')]!);
    expect(openFds().get(inFlight)).toBe('/dev/null');
    closeFd(inFlight);
    await expectLine(peer, 'done');
    for (const message of messages) message.close();
    expect(countFds()).toBe(baseline);
  });

  it('a channel sent its own socket gets one more fd for it; closing, read or left in the kernel, leaks nothing and does not hang', async () => {
    const before = countFds();
    const [a, b] = Channel.pair('stream', { maxBufferedFds: 1 });
    own(a);
    own(b);
    await a.send(b.fd);
    const ownEnd = await within(b.recv(), 2_000, 'its own end');
    expect(openFds().get(ownEnd.fd)).toBe(openFds().get(b.fd));
    ownEnd.close();
    // Fill b's budget, then send b its own end and a's: those stay queued in b's socket.
    const devnull = openSync('/dev/null', 'r');
    await a.send({ data: 'fill', fds: new Array<number>(MAX_FDS).fill(devnull) });
    await a.send({ data: 'own ends', fds: [b.fd, a.fd] });
    await b.send(b.fd); // and b's end in a's socket, read by a into its inbox
    closeSync(devnull);
    await sleep(50);
    await within(Promise.all([a.close(), b.close()]), 2_000, 'closing both');
    expect(countFds()).toBe(before);
  });
});

describe('connection storms', () => {
  it('2,000 idle connections and a connect-and-leave loop: 20 honest round trips each answer within the 2 s the storm lasts, and the server ends with the fds it started with', async () => {
    const serverPath = socketPath();
    const server = spawnNodePeer('echo-server.mjs', [serverPath]);
    cleanups.push(() => stop(server));
    await expectLine(server, 'listening');
    const serverPid = server.child.pid!;
    const serverBaseline = countFds(serverPid);

    const idle = attack('idle', [serverPath, 2000]);
    await expectLine(idle, 'ready');
    await expectLine(idle, 'connected');
    // The honest round trips run while the storm lasts: a bound as long as the storm could not
    // tell a server that serves during it from one that serves only after it.
    const stormSeconds = 2 * timeScale;
    const resets = attack('reset-loop', [serverPath, stormSeconds]);
    await expectLine(resets, 'ready');

    const devnull = openSync('/dev/null', 'r');
    cleanups.push(() => closeSync(devnull));
    let slowest = 0;
    for (let i = 0; i < 20; i++) {
      const start = Date.now();
      const client = own(await within(connect(serverPath), 2_000 * timeScale, `connect ${i}`));
      await within(client.send({ data: `ping ${i}`, fds: [devnull] }), 2_000 * timeScale, `send ${i}`);
      const reply = await within(client.recv(), 2_000 * timeScale, `reply ${i}`);
      expect(reply.data.toString()).toBe(`ping ${i}`);
      expect(openFds().get(reply.fd)).toBe('/dev/null');
      reply.close();
      await client.close();
      slowest = Math.max(slowest, Date.now() - start);
      await sleep(50);
    }
    expect(slowest, 'the slowest round trip, in ms').toBeLessThan(1_000 * stormSeconds);
    const iterations = await within(resets.line(), 10_000, 'the reset loop');
    expect(iterations).toMatch(/^iterations [1-9]\d*$/);
    await expectLine(resets, 'done');

    // The idle connections are the server's only extra fds; once they close, it has none.
    expect(
      await eventually(() => countFds(serverPid) === serverBaseline + 2000, 5_000),
      `server fds: ${countFds(serverPid)}, baseline ${serverBaseline} + 2000`,
    ).toBe(true);
    await stop(idle);
    expect(
      await eventually(() => countFds(serverPid) === serverBaseline, 5_000),
      `server fds: ${countFds(serverPid)}, baseline ${serverBaseline}`,
    ).toBe(true);

    server.child.kill('SIGUSR2');
    const { served, errors } = JSON.parse(await within(server.line(), 5_000, 'the server stats')) as {
      served: number;
      errors: Record<string, number>;
    };
    expect(served).toBeGreaterThanOrEqual(20);
    // Clients that leave make their own connection fail, in these ways and no other (a channel
    // closes itself once the peer's EOF is read and its messages taken: the reply finds it closed).
    const leaving = ['EOF', 'ECONNRESET', 'EPIPE', 'ERR_FDPASS_BAD_MESSAGE', 'ERR_FDPASS_CHANNEL_CLOSED'];
    expect(Object.keys(errors).filter((code) => !leaving.includes(code))).toEqual([]);
  });
});

describe('live-channel fuzz', () => {
  const options: ChannelOptions = {
    maxBufferedFds: 16,
    maxBufferedBytes: 64 * 1024,
    maxPayloadBytes: 4096,
    maxFdsPerMessage: 128,
    frameTimeout: 500,
  };
  const fdLimit = options.maxBufferedFds! + MAX_FDS;
  const reported = new Set([
    'ERR_FDPASS_BAD_MESSAGE',
    'ERR_FDPASS_MESSAGE_TOO_LARGE',
    'ERR_FDPASS_TOO_MANY_FDS',
    'ERR_FDPASS_FRAME_TIMEOUT',
    'ERR_FDPASS_TRUNCATED',
    'EOF',
    'ECONNRESET',
  ]);
  const perMessage = new Set(['ERR_FDPASS_MESSAGE_TOO_LARGE', 'ERR_FDPASS_TOO_MANY_FDS']);
  const rounds = 5;
  const seed = Number(process.env.FDPASS_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));

  /** A small seeded generator (mulberry32): the consumer's choices replay with the seed. */
  function generator(state: number): () => number {
    return () => {
      state = (state + 0x6d2b79f5) | 0;
      let t = Math.imul(state ^ (state >>> 15), 1 | state);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
    };
  }

  /** One round: the codes it reported, and whether it ended on its own. */
  async function round(
    roundSeed: number,
    violations: Map<string, number>,
    gc: () => void,
    heapStart: number,
  ): Promise<{ codes: string[]; ended: boolean }> {
    const before = countFds();
    const { mine, peer } = attackOverPair('stream', 'fuzz', [roundSeed]);
    const baseline = countFds();
    const channel = own(new Channel(mine, options));
    const random = generator(roundSeed);
    const mode = (['recv', 'iterate', 'listen'] as const)[Math.floor(random() * 3)]!;
    const note = (what: string): void => {
      const key = `seed ${roundSeed} (${mode}): ${what}`;
      violations.set(key, (violations.get(key) ?? 0) + 1);
    };
    const codes: string[] = [];
    let closedByTest = false;
    /** Records a reported error; true if the channel goes on after it. */
    const seen = (error: unknown): boolean => {
      const code = (error as { code?: unknown }).code;
      if (closedByTest && code === 'ERR_FDPASS_CHANNEL_CLOSED') return false; // a hang, noted already
      if (
        !(error instanceof Error) ||
        error instanceof TypeError ||
        error instanceof RangeError ||
        typeof code !== 'string' ||
        !reported.has(code)
      ) {
        note(`reported ${String(error)} (code ${String(code)})`);
      }
      codes.push(String(code));
      return perMessage.has(String(code));
    };
    const sampler = setInterval(() => {
      const held = countFds() - baseline;
      if (held > fdLimit) note(`held ${held} fds`);
      const buffered = channel.bufferedFds;
      if (typeof buffered !== 'number' || buffered > fdLimit) note(`channel.bufferedFds is ${String(buffered)}`);
    }, 5);
    const closed = new Promise<void>((resolve) => channel.once('close', resolve));
    // A reader that starts late and stops now and then lets the budgets fill.
    const take = async (message: ReceivedMessage): Promise<void> => {
      message.close();
      if (random() < 0.1) await sleep(random() < 0.2 ? 100 : 10);
    };
    const lateStart = sleep(random() * 300);

    if (mode === 'listen') {
      channel.on('message', (message) => message.close());
      channel.on('error', seen);
      channel.on('end', () => codes.push('EOF'));
    } else if (mode === 'recv') {
      void (async () => {
        await lateStart;
        for (;;) {
          try {
            await take(await channel.recv());
          } catch (error) {
            if (!seen(error)) return;
          }
        }
      })();
    } else {
      void (async () => {
        await lateStart;
        for (;;) {
          try {
            for await (const message of channel) await take(message);
            codes.push('EOF');
            return;
          } catch (error) {
            if (!seen(error)) return;
          }
        }
      })();
    }

    // The peer is done within about 2 s (pauses, a final silence); frameTimeout adds 0.5 s.
    let ended = true;
    try {
      await within(closed, 5_000, 'the channel ending');
    } catch (error) {
      note(String(error));
      ended = false;
    }
    clearInterval(sampler);
    closedByTest = true;
    await channel.close();
    await stop(peer);
    const after = countFds();
    if (after !== before) note(`${after - before} fds left after the round`);
    gc();
    const heapGrowth = process.memoryUsage().heapUsed - heapStart;
    if (heapGrowth > 16 * MiB) note(`heap grew by ${heapGrowth} bytes`);
    return { codes, ended };
  }

  it(`${rounds} rounds of random streams, from seed ${seed} (FDPASS_FUZZ_SEED=${seed} replays): only the codes listed, within the budget, nothing left`, async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    gc();
    const heapStart = process.memoryUsage().heapUsed;
    const violations = new Map<string, number>();
    const seenCodes = new Set<string>();
    for (let i = 0; i < rounds; i++) {
      const { codes, ended } = await round(seed + i, violations, gc, heapStart);
      for (const code of codes) seenCodes.add(code);
      if (!ended) break; // one hang says enough, and more would outlast the test's timeout
    }
    const found = [...violations].slice(0, 40).map(([what, times]) => (times > 1 ? `${what} (${times} times)` : what));
    expect(found, `codes seen: ${[...seenCodes].join(', ')}`).toEqual([]);
  });
});
