// Channel in one process over real socketpairs, and the seed send/recv; every received fd is
// proven to work by reading its file, and every test counts this process's fds around it.
import { spawnSync } from 'node:child_process';
import { getEventListeners, once as eventOnce } from 'node:events';
import { promises as fsPromises } from 'node:fs';
import net from 'node:net';
import { closeSync, existsSync, fstatSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { constants as os, tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { binding } from '../lib/binding.js';
import { Channel, ReceivedMessage, closeFd, lastError, recv, send, setBlocking, socketpair } from '../lib/index.js';
import { contentOf, countFds, expectNoFdLeakAroundEachTest, isNonBlocking, openFds, python, root, spawnPeer, within } from './helpers.js';

type Failure = Error & { code?: string; errno?: number; syscall?: string; cause?: unknown };

// Thousands of small files: on tmpfs that takes milliseconds, on a disk-backed /tmp seconds.
const dir = mkdtempSync(path.join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'fdpass-channel-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

expectNoFdLeakAroundEachTest();

const created = new Set<number>();
/** Opens temp file number i, whose content is its index: reading it tells which fd arrived. */
function openTagged(i: number): number {
  const file = path.join(dir, `tag-${i}`);
  if (!created.has(i)) {
    writeFileSync(file, String(i));
    created.add(i);
  }
  return openSync(file, 'r');
}

function openTaggedRange(n: number): number[] {
  return Array.from({ length: n }, (_, i) => openTagged(i));
}

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) closeSync(fd);
}

/** Reads a received message's file and closes its fds. */
function consume(message: ReceivedMessage): string {
  // A plain check, not expect(): this runs thousands of times.
  if (message.fds.length !== 1) throw new Error(`expected one fd, got ${message.fds.length}`);
  const content = contentOf(message.fd);
  message.close();
  return content;
}

const range = (n: number): string[] => Array.from({ length: n }, (_, i) => String(i));

const tick = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The error fn throws or its promise rejects with (either is accepted). */
async function errorOf(fn: () => unknown): Promise<Failure> {
  let result: unknown;
  try {
    result = fn();
  } catch (error) {
    return error as Failure;
  }
  try {
    await result;
  } catch (error) {
    return error as Failure;
  }
  throw new Error('expected the call to fail, but it succeeded');
}

function once(channel: Channel, event: 'end' | 'close'): Promise<void> {
  return new Promise((resolve) => channel.once(event, () => resolve()));
}

async function closeBoth(a: Channel, b: Channel): Promise<void> {
  await within(Promise.all([a.close(), b.close()]), 2000, 'close()');
}

describe('round trip', () => {
  it('send() and recv() over Channel.pair(), both ways: each received fd reads its file', async () => {
    const fds = openTaggedRange(2);
    const [a, b] = Channel.pair();
    await a.send(fds[0]!);
    const there = await within(b.recv(), 2000, 'recv');
    expect(there).toBeInstanceOf(ReceivedMessage);
    expect(there.data).toHaveLength(0);
    expect(there.fd).not.toBe(fds[0]);
    expect(consume(there)).toBe('0');

    await b.send(fds[1]!);
    expect(consume(await within(a.recv(), 2000, 'recv'))).toBe('1');
    // The sender keeps its fd.
    expect(contentOf(fds[0]!)).toBe('0');
    await closeBoth(a, b);
    closeAll(fds);
  });

  it.each(['stream', 'seqpacket', 'dgram'] as const)('new Channel(fd) over socketpair(%s)', async (type) => {
    const fd = openTagged(3);
    const [x, y] = socketpair(type);
    const a = new Channel(x);
    const b = new Channel(y);
    expect(a.type).toBe(type);
    expect(a.fd).toBe(x);
    expect(b.fd).toBe(y);
    await a.send(fd);
    expect(consume(await within(b.recv(), 2000, 'recv'))).toBe('3');
    await closeBoth(a, b);
    expect(a.fd).toBe(-1);
    closeSync(fd);
  });

  it('for await yields every message and ends when the peer closes', async () => {
    const fds = openTaggedRange(3);
    const [a, b] = Channel.pair();
    for (const fd of fds) await a.send(fd);
    await a.close();
    const contents: string[] = [];
    await within(
      (async () => {
        for await (const message of b) contents.push(consume(message));
      })(),
      2000,
      'for await over a channel whose peer closed',
    );
    expect(contents).toEqual(['0', '1', '2']);
    await within(b.close(), 2000, 'close()');
    closeAll(fds);
  });

  it("for await skips a message dropped for a limit (an 'error' listener sees it) and throws the error that breaks the stream", async () => {
    const fds = openTaggedRange(2);
    const [a, b] = Channel.pair('stream', { maxPayloadBytes: 10 });
    const errors: string[] = [];
    b.on('error', (error) => errors.push((error as Failure).code!));
    await a.send(fds[0]!);
    await a.send({ data: Buffer.alloc(11), fds: [fds[1]!] }); // over b's limit: an error in its place
    await a.send(fds[0]!);
    expect(binding.sendmsg(a.fd, Buffer.from([0x7f]), 0, 1, new Int32Array(0), 0)).toBe(1); // no message at all
    const contents: string[] = [];
    const thrown = await within(
      (async () => {
        try {
          for await (const message of b) contents.push(consume(message));
        } catch (error) {
          return error;
        }
        return undefined;
      })(),
      2000,
      'for await over a message too large',
    );
    expect(contents).toEqual(['0', '0']);
    expect(thrown).toMatchObject({ code: 'ERR_FDPASS_BAD_MESSAGE' });
    expect(errors).toEqual(['ERR_FDPASS_MESSAGE_TOO_LARGE', 'ERR_FDPASS_BAD_MESSAGE']);
    expect(b.hasRef()).toBe(false); // the iteration that threw no longer holds the process
    await Promise.all([a.close(), b.close()]);
    closeAll(fds);
  });

  it('a waiting next() ends at close(); next() after that is done', async () => {
    const [a, b] = Channel.pair();
    const iterator = b[Symbol.asyncIterator]();
    const waiting = iterator.next();
    expect(b.hasRef()).toBe(true);
    await b.close();
    expect(await within(waiting, 2000, 'next() across close()')).toEqual({ done: true, value: undefined });
    expect(await iterator.next()).toEqual({ done: true, value: undefined });
    expect(await b[Symbol.asyncIterator]().next()).toEqual({ done: true, value: undefined });
    await a.close();
  });

  it("'message' listeners receive what arrives; 'end' comes at the peer's close, then 'close'", async () => {
    const fds = openTaggedRange(3);
    const [a, b] = Channel.pair();
    const events: string[] = [];
    const contents: string[] = [];
    const gotAll = new Promise<void>((resolve) => {
      b.on('message', (message) => {
        contents.push(consume(message));
        if (contents.length === fds.length) resolve();
      });
    });
    b.on('end', () => events.push('end'));
    const closed = new Promise<void>((resolve) =>
      b.on('close', () => {
        events.push('close');
        resolve();
      }),
    );
    for (const fd of fds) await a.send(fd);
    await within(gotAll, 2000, "'message' events");
    expect(contents).toEqual(['0', '1', '2']);
    expect(events).toEqual([]);

    await a.close();
    await within(closed, 2000, "'close' after the peer's EOF");
    expect(events).toEqual(['end', 'close']);
    expect(b.closed).toBe(true);
    expect(b.fd).toBe(-1);
    closeAll(fds);
  });

  it("messages buffered before 'end' can still be received; then recv() rejects with code 'EOF'", async () => {
    const fds = openTaggedRange(2);
    const [a, b] = Channel.pair();
    const ended = once(b, 'end');
    let ends = 0;
    b.on('end', () => ends++);
    for (const fd of fds) await a.send(fd);
    await a.close();
    await within(ended, 2000, "'end'");
    await tick(20); // the messages and the EOF come in one batch: a second 'end' would be here by now
    expect(b.closed).toBe(false);
    expect(consume(await b.recv())).toBe('0');
    expect(consume(await b.recv())).toBe('1');
    await expect(b.recv()).rejects.toMatchObject({ code: 'EOF', syscall: 'recvmsg' });
    expect(ends).toBe(1);
    await within(b.close(), 2000, 'close()');
    closeAll(fds);
  });

  it("'close' is emitted once, after close(), whose promise is the same on every call", async () => {
    const [a, b] = Channel.pair();
    let closes = 0;
    a.on('close', () => closes++);
    const closing = a.close();
    expect(a.close()).toBe(closing);
    expect(a.closed).toBe(true);
    await within(closing, 2000, 'close()');
    expect(closes).toBe(1);
    await a.close();
    expect(closes).toBe(1);
    await within(b.close(), 2000, 'close()');
  });
  it('send(x, { close: true }) closes a FileHandle, a net.Socket and a net.Server through their own close', async () => {
    const [a, b] = Channel.pair();
    closeSync(openTagged(0)); // creates the file
    const handle = await fsPromises.open(path.join(dir, 'tag-0'), 'r');
    await a.send(handle, { close: true });
    expect(handle.fd).toBe(-1); // the FileHandle knows: it will not close the number again
    expect(consume(await within(b.recv(), 2000, 'recv'))).toBe('0');

    const server = net.createServer({ pauseOnConnect: true }); // a socket Node reads from is refused
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const client = net.connect(port, '127.0.0.1');
    const [accepted] = (await eventOnce(server, 'connection')) as [net.Socket];
    const destroyed = eventOnce(accepted, 'close');
    await a.send(accepted, { close: true });
    await within(destroyed, 2000, "the sent socket's 'close'");
    const { fd } = await within(b.recv(), 2000, 'recv');
    writeSync(fd, 'through the passed socket'); // the connection lives on in the received fd
    closeSync(fd);
    const [reply] = (await eventOnce(client, 'data')) as [Buffer];
    expect(reply.toString()).toBe('through the passed socket');
    client.destroy();

    await a.send(server, { close: true });
    expect(server.listening).toBe(false);
    (await within(b.recv(), 2000, 'recv')).close();
    await closeBoth(a, b);
  });
});

describe('ordering', () => {
  it('1,000 concurrent send()s arrive, and resolve, in call order while the receiver consumes', async () => {
    const N = 1000;
    const fds = openTaggedRange(N);
    const [a, b] = Channel.pair();
    const contents: string[] = [];
    const consumer = (async () => {
      for await (const message of b) {
        contents.push(consume(message));
        if (contents.length === N) break;
      }
    })();
    const resolved: number[] = [];
    // More than the socket buffer holds: most of these wait in the send queue.
    const sends = fds.map((fd, i) => a.send(fd).then(() => resolved.push(i)));
    await within(Promise.all(sends), 10_000, '1,000 sends');
    await within(consumer, 10_000, 'receiving 1,000 fds');
    expect(contents).toEqual(range(N));
    expect(resolved).toEqual(range(N).map(Number));
    await closeBoth(a, b);
    closeAll(fds);
  });

  it('a send() made while earlier ones wait goes after them, even when the socket has room again', async () => {
    const QUEUED = 600;
    const LATE = 100;
    const fds = openTaggedRange(QUEUED + LATE);
    const [a, b] = Channel.pair();
    const sends = fds.slice(0, QUEUED).map((fd) => a.send(fd));
    const contents: string[] = [];
    await within(
      (async () => {
        for await (const message of b) {
          contents.push(consume(message));
          // The receiver just made room: a send now must still queue behind the waiting ones.
          if (contents.length <= LATE) sends.push(a.send(fds[QUEUED + contents.length - 1]!));
          if (contents.length === QUEUED + LATE) break;
        }
      })(),
      10_000,
      'receiving',
    );
    await within(Promise.all(sends), 2000, 'sends');
    expect(contents).toEqual(range(QUEUED + LATE));
    await closeBoth(a, b);
    closeAll(fds);
  });

  it('concurrent recv()s resolve in call order', async () => {
    const N = 20;
    const fds = openTaggedRange(N);
    const [a, b] = Channel.pair();
    const order: number[] = [];
    const recvs = Array.from({ length: N }, (_, i) =>
      b.recv().then((message) => {
        order.push(i);
        return consume(message);
      }),
    );
    await Promise.all(fds.map((fd) => a.send(fd)));
    expect(await within(Promise.all(recvs), 5000, 'recvs')).toEqual(range(N));
    expect(order).toEqual(range(N).map(Number));
    await closeBoth(a, b);
    closeAll(fds);
  });
});

describe('a full socket (EAGAIN)', () => {
  it('sends past the socket buffer wait, then all arrive in order once the receiver reads', async () => {
    const N = 2000;
    const fds = openTaggedRange(N);
    // The receiver stops reading after one batch: the socket buffer fills.
    const [a, b] = Channel.pair('stream', { maxBufferedFds: 1 });
    const done: boolean[] = new Array<boolean>(N).fill(false);
    const sends = fds.map((fd, i) =>
      a.send(fd).then(() => {
        done[i] = true;
      }),
    );
    await tick(50);
    const resolved = done.filter(Boolean).length;
    expect(resolved).toBeGreaterThan(0);
    expect(resolved).toBeLessThan(N);
    // What resolved is a prefix of the calls.
    expect(done.slice(0, resolved).every(Boolean)).toBe(true);

    const contents = await within(
      (async () => {
        const out: string[] = [];
        for (let i = 0; i < N; i++) out.push(consume(await b.recv()));
        return out;
      })(),
      10_000,
      'receiving 2,000 fds',
    );
    expect(contents).toEqual(range(N));
    await within(Promise.all(sends), 2000, 'the queued sends');
    await closeBoth(a, b);
    closeAll(fds);
  });

  it('sends queued behind a full socket, when the peer goes away, each reject and have their fds closed', async () => {
    const before = countFds();
    const N = 600;
    const [a, b] = Channel.pair('stream', { maxBufferedFds: 1 });
    const sends = Array.from({ length: N }, () =>
      a.send(openTagged(0), { close: true }).then(
        () => 'sent',
        (error: Failure) => error.code,
      ),
    );
    await tick(50);
    expect(countFds()).toBeGreaterThan(before + 2); // queued and in-flight fds
    await b.close(); // takes the in-flight fds with it
    const outcomes = await within(Promise.all(sends), 5000, 'the queued sends');
    const sent = outcomes.filter((outcome) => outcome === 'sent').length;
    expect(sent).toBeGreaterThan(0);
    expect(sent).toBeLessThan(N);
    // A prefix was sent; every send after it failed on the dead peer.
    expect(outcomes.slice(0, sent).every((outcome) => outcome === 'sent')).toBe(true);
    for (const code of outcomes.slice(sent)) expect(['EPIPE', 'ECONNRESET', 'ERR_FDPASS_CHANNEL_CLOSED']).toContain(code);
    await within(a.close(), 2000, 'close()');
    expect(countFds()).toBe(before);
  });

  it('recv() on an empty channel waits, and resolves when an fd arrives later', async () => {
    const fd = openTagged(5);
    const [a, b] = Channel.pair();
    let settled = false;
    const pending = b.recv().finally(() => (settled = true));
    await tick(50);
    expect(settled).toBe(false);
    setTimeout(() => void a.send(fd), 20);
    expect(consume(await within(pending, 2000, 'recv'))).toBe('5');
    await closeBoth(a, b);
    closeSync(fd);
  });
});

describe('AbortSignal', () => {
  it("an already aborted signal rejects with code 'ABORT_ERR' and the reason as cause; nothing is taken", async () => {
    const fd = openTagged(1);
    const [a, b] = Channel.pair();
    await a.send(fd);
    const reason = new Error('stop');
    const error = await errorOf(() => b.recv({ signal: AbortSignal.abort(reason) }));
    expect(error).toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    expect(error.cause).toBe(reason);
    // The message waiting in the channel goes to the next recv().
    expect(consume(await within(b.recv(), 2000, 'recv'))).toBe('1');
    await closeBoth(a, b);
    closeSync(fd);
  });

  it('aborting a pending recv() rejects it, and the next message goes to the next recv()', async () => {
    const fds = openTaggedRange(2);
    const [a, b] = Channel.pair();
    const controller = new AbortController();
    const reason = new Error('no longer wanted');
    const first = b.recv({ signal: controller.signal });
    const second = b.recv();
    controller.abort(reason);
    const error = await errorOf(() => first);
    expect(error).toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    expect(error.cause).toBe(reason);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);

    await a.send(fds[0]!);
    expect(consume(await within(second, 2000, 'the recv() after the aborted one'))).toBe('0');

    // A signal that never aborts: its listener is removed once the call settles.
    const idle = new AbortController();
    const third = b.recv({ signal: idle.signal });
    expect(getEventListeners(idle.signal, 'abort')).toHaveLength(1);
    await a.send(fds[1]!);
    expect(consume(await within(third, 2000, 'recv'))).toBe('1');
    expect(getEventListeners(idle.signal, 'abort')).toHaveLength(0);
    await closeBoth(a, b);
    closeAll(fds);
  });

  it('a signal that is not an AbortSignal is a TypeError with a code', async () => {
    const [a, b] = Channel.pair();
    const error = await errorOf(() => b.recv({ signal: 'soon' as unknown as AbortSignal }));
    expect(error).toBeInstanceOf(TypeError);
    expect(error.code).toBe('ERR_INVALID_ARG_TYPE');
    await closeBoth(a, b);
  });
});

describe('a peer that resets the connection', () => {
  it.each(['stream', 'seqpacket'] as const)(
    'over %s, closing with our data unread: what it sent first arrives, then recv() rejects with ECONNRESET',
    async (type) => {
      const [x, y] = socketpair(type);
      const a = new Channel(x);
      const fd = openTagged(7);
      expect(send(y, fd)).toBe(true); // queued for a
      await a.send({ data: 'never read' });
      closeSync(y); // with a's message unread: the kernel resets a's end (and polls it as POLLERR)
      expect(consume(await within(a.recv(), 2000, 'the fd sent before the reset'))).toBe('7');
      await expect(within(a.recv(), 2000, 'recv() after the reset')).rejects.toMatchObject({ code: 'ECONNRESET', syscall: 'recvmsg' });
      await expect(a.send(fd)).rejects.toMatchObject({ code: 'ERR_FDPASS_CHANNEL_CLOSED' });
      closeSync(fd);
      await a.close();
    },
  );
});

describe('close()', () => {
  it('settles every pending call, closes buffered and owned fds, and is idempotent', async () => {
    const N = 400;
    const fds = openTaggedRange(N);
    const before = countFds();
    const [a, b] = Channel.pair('stream', { maxBufferedFds: 1 });
    const sends = fds.map((fd) => a.send(fd));
    // Sends queued behind a full socket, with ownership handed over: close() must close these.
    const owned = Array.from({ length: 5 }, () => openSync(path.join(dir, 'tag-0'), 'r'));
    for (const fd of owned) sends.push(a.send(fd, { close: true }));
    const sent = Promise.allSettled(sends);
    const recvA = Promise.allSettled([a.recv()]); // nothing ever comes from b
    await tick(50);

    const buffered = countFds() - before - 2 - owned.length;
    expect(buffered).toBeGreaterThan(0); // b read a batch, then stopped

    const closingA = a.close();
    expect(a.close()).toBe(closingA);
    const results = await within(sent, 1000, 'the pending sends after close()');
    const fulfilled = results.findIndex((r) => r.status === 'rejected');
    expect(fulfilled).toBeGreaterThan(0);
    expect(fulfilled).toBeLessThan(N);
    for (const result of results.slice(fulfilled)) {
      expect(result).toMatchObject({ status: 'rejected', reason: { code: 'ERR_FDPASS_CHANNEL_CLOSED' } });
    }
    expect(results.slice(0, fulfilled).every((r) => r.status === 'fulfilled')).toBe(true);
    expect(await within(recvA, 1000, 'the pending recv after close()')).toMatchObject([
      { status: 'rejected', reason: { code: 'ERR_FDPASS_CHANNEL_CLOSED' } },
    ]);
    await within(closingA, 2000, 'close()');
    expect(a.fd).toBe(-1);
    // a's socket and the owned fds are closed; b still holds its socket and what it buffered.
    expect(countFds()).toBe(before + 1 + buffered);

    const closingB = b.close();
    expect(b.close()).toBe(closingB);
    await within(closingB, 2000, 'close()');
    expect(b.fd).toBe(-1);
    expect(countFds()).toBe(before);

    for (const channel of [a, b]) {
      await expect(channel.send(fds[0]!)).rejects.toMatchObject({ code: 'ERR_FDPASS_CHANNEL_CLOSED' });
      await expect(channel.recv()).rejects.toMatchObject({ code: 'ERR_FDPASS_CHANNEL_CLOSED' });
      expect(channel.close()).toBe(channel === a ? closingA : closingB);
    }
    // send({ close: true }) on a closed channel still takes ownership.
    const late = openSync(path.join(dir, 'tag-0'), 'r');
    await expect(a.send(late, { close: true })).rejects.toMatchObject({ code: 'ERR_FDPASS_CHANNEL_CLOSED' });
    expect(countFds()).toBe(before);
    closeAll(fds);
  });
});

describe('backpressure', () => {
  it('with maxBufferedFds 8 and no reader, the receiver holds at most 8 + one batch (64) fds', async () => {
    const N = 100;
    const fds = openTaggedRange(N);
    const ofOurFiles = (): number => [...openFds().values()].filter((target) => target.startsWith(dir)).length;
    const before = ofOurFiles();
    const [a, b] = Channel.pair('stream', { maxBufferedFds: 8 });
    await within(Promise.all(fds.map((fd) => a.send(fd))), 2000, '100 sends'); // they fit in the socket buffer
    await tick(50);
    const held = ofOurFiles() - before;
    expect(held).toBeGreaterThanOrEqual(8);
    expect(held).toBeLessThanOrEqual(8 + 64);

    const contents = await within(
      (async () => {
        const out: string[] = [];
        for (let i = 0; i < N; i++) out.push(consume(await b.recv()));
        return out;
      })(),
      5000,
      'receiving 100 fds',
    );
    expect(contents).toEqual(range(N));
    await closeBoth(a, b);
    closeAll(fds);
  });
});

describe('bad input', () => {
  it.each([
    ['x', TypeError, 'ERR_INVALID_ARG_TYPE'],
    [null, TypeError, 'ERR_INVALID_ARG_TYPE'],
    [undefined, TypeError, 'ERR_INVALID_ARG_TYPE'],
    [{}, TypeError, 'ERR_INVALID_ARG_TYPE'],
    [{ fd: 'x' }, TypeError, 'ERR_INVALID_ARG_TYPE'],
    [-1, RangeError, 'ERR_OUT_OF_RANGE'],
    [1.5, RangeError, 'ERR_OUT_OF_RANGE'],
    [NaN, RangeError, 'ERR_OUT_OF_RANGE'],
    [2 ** 40, RangeError, 'ERR_OUT_OF_RANGE'],
  ])('send(%o) is a %o with code %s, and the channel goes on working', async (value, type, code) => {
    const fd = openTagged(2);
    const [a, b] = Channel.pair();
    const error = await errorOf(() => a.send(value as number));
    expect(error).toBeInstanceOf(type);
    expect(error.code).toBe(code);
    await a.send(fd);
    expect(consume(await within(b.recv(), 2000, 'recv'))).toBe('2');
    await closeBoth(a, b);
    closeSync(fd);
  });

  it("sending a closed fd number rejects with code 'EBADF', syscall 'sendmsg'", async () => {
    const fd = openTagged(4);
    const [a, b] = Channel.pair();
    const gone = openSync(path.join(dir, 'tag-4'), 'r');
    closeSync(gone);
    const error = await errorOf(() => a.send(gone));
    expect(error).toMatchObject({ code: 'EBADF', errno: -os.errno.EBADF, syscall: 'sendmsg' });
    await a.send(fd);
    expect(consume(await within(b.recv(), 2000, 'recv'))).toBe('4');
    await closeBoth(a, b);
    closeSync(fd);
  });

  it("new Channel() on a regular file is a TypeError that says it is not a socket, on a closed fd 'EBADF'; the fd stays the caller's", () => {
    const file = openTagged(0);
    expect(() => new Channel(file)).toThrow(
      expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: expect.stringMatching(/not a socket/) }),
    );
    expect(fstatSync(file).isFile()).toBe(true);
    closeSync(file);
    const gone = file;
    expect(() => new Channel(gone)).toThrow(expect.objectContaining({ code: 'EBADF', errno: -os.errno.EBADF }));
  });

  it('new Channel() with a bad fd or bad options is a TypeError/RangeError with a code; the fd stays open', () => {
    const [x, y] = socketpair();
    for (const [args, type, code] of [
      [['3'], TypeError, 'ERR_INVALID_ARG_TYPE'],
      [[-1], RangeError, 'ERR_OUT_OF_RANGE'],
      [[x, null], TypeError, 'ERR_INVALID_ARG_TYPE'],
      [[x, { maxBufferedFds: 0 }], RangeError, 'ERR_OUT_OF_RANGE'],
      [[x, { maxBufferedFds: -8 }], RangeError, 'ERR_OUT_OF_RANGE'],
      [[x, { maxBufferedFds: 1.5 }], RangeError, 'ERR_OUT_OF_RANGE'],
      [[x, { maxBufferedFds: NaN }], RangeError, 'ERR_OUT_OF_RANGE'],
    ] as const) {
      let error: Failure | undefined;
      try {
        new Channel(...(args as unknown as [number]));
      } catch (e) {
        error = e as Failure;
      }
      expect(error, JSON.stringify(args)).toBeInstanceOf(type);
      expect(error?.code, JSON.stringify(args)).toBe(code);
    }
    // Still a usable socket of the caller's.
    expect(send(x, y)).toBe(true);
    const fd = recv(y);
    expect(fd).toBeGreaterThan(2);
    closeAll([fd, x, y]);
  });

  it("a second channel on the same fd throws code 'EEXIST', and the first still works", async () => {
    const fd = openTagged(6);
    const [a, b] = Channel.pair();
    const error = await errorOf(() => new Channel(b.fd));
    expect(error).toMatchObject({ code: 'EEXIST', syscall: 'uv_poll_init' });
    await a.send(fd);
    expect(consume(await within(b.recv(), 2000, 'recv'))).toBe('6');
    await b.send(fd);
    expect(consume(await within(a.recv(), 2000, 'recv'))).toBe('6');
    await closeBoth(a, b);
    closeSync(fd);
  });

  // A paused channel (inbox full) has no active uv poll on its fd, so libuv alone would let a
  // second Channel onto it, and abort once one of them closed the fd. Run in a child, since
  // the failure would be a crash.
  it("a second channel on the fd of a paused channel is 'EEXIST' too, never a crash", () => {
    const script = `
      const { Channel } = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
      const fs = require('node:fs');
      (async () => {
        const [x, y] = Channel.pair('stream', { maxBufferedFds: 1 });
        const file = fs.openSync('/dev/null', 'r');
        await x.send(file);
        await x.send(file);
        await new Promise((r) => setTimeout(r, 50)); // y read both and stopped reading
        try {
          await new Channel(y.fd).close();
          console.log('created');
        } catch (error) {
          console.log(error.code);
        }
        for (let i = 0; i < 2; i++) (await y.recv()).close();
        await new Promise((r) => setTimeout(r, 50));
        console.log('alive');
        process.exit(0);
      })();`;
    const result = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10_000 });
    expect({ status: result.status, signal: result.signal, stdout: result.stdout }, result.stderr).toEqual({
      status: 0,
      signal: null,
      stdout: 'EEXIST\nalive\n',
    });
  });

  it("send() to a peer that closed rejects with 'EPIPE' (or 'ECONNRESET'), then keeps failing, never hangs", async () => {
    const fd = openTagged(0);
    const [a, b] = Channel.pair();
    await b.close();
    const error = await errorOf(() => a.send(fd));
    expect(['EPIPE', 'ECONNRESET']).toContain(error.code);
    expect(error.syscall).toBe('sendmsg');
    // Once the channel has seen the EOF it closes itself: later sends fail too.
    await within(once(a, 'close'), 2000, "'close' after EOF");
    const later = await within(
      errorOf(() => a.send(fd)),
      2000,
      'send after EOF',
    );
    expect(['EPIPE', 'ECONNRESET', 'ERR_FDPASS_CHANNEL_CLOSED']).toContain(later.code);
    await within(a.close(), 2000, 'close()');
    closeSync(fd);
  });

  it('sends queued behind a full socket all settle when the peer closes', async () => {
    const N = 600; // more than the socket buffer and one batch of the receiver hold
    const fds = openTaggedRange(N);
    const [a, b] = Channel.pair('stream', { maxBufferedFds: 1 });
    const sent = Promise.allSettled(fds.map((fd) => a.send(fd)));
    await tick(50);
    await b.close();
    const results = await within(sent, 2000, 'the queued sends after the peer closed');
    const rejected = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(rejected.length).toBeGreaterThan(0);
    for (const { reason } of rejected) {
      expect(['EPIPE', 'ECONNRESET', 'ERR_FDPASS_CHANNEL_CLOSED']).toContain((reason as Failure).code);
    }
    await within(a.close(), 2000, 'close()');
    closeAll(fds);
  });

  it("Channel.pair('bogus') is a TypeError with a code, and opens nothing", () => {
    const before = countFds();
    const error = (() => {
      try {
        Channel.pair('bogus' as 'stream');
      } catch (e) {
        return e as Failure;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(TypeError);
    expect(error?.code).toBe('ERR_INVALID_ARG_VALUE');
    expect(countFds()).toBe(before);
  });

  // pair() validates before it opens anything, and closes both ends if a Channel cannot be made.
  it('Channel.pair() with bad options is a RangeError with a code, and leaks no fd', () => {
    const before = openFds();
    let error: Failure | undefined;
    try {
      Channel.pair('stream', { maxBufferedFds: 0 });
    } catch (e) {
      error = e as Failure;
    }
    // Close what leaked before asserting, so the failure stays in this test.
    const leaked = [...openFds().keys()].filter((fd) => !before.has(fd));
    closeAll(leaked);
    expect(error).toBeInstanceOf(RangeError);
    expect(error?.code).toBe('ERR_OUT_OF_RANGE');
    expect(leaked).toEqual([]);
  });

  it('send(fd, null) and recv(null) are TypeErrors with code ERR_INVALID_ARG_TYPE', async () => {
    const [a, b] = Channel.pair();
    try {
      const sendError = await errorOf(() => a.send(0, null as unknown as object));
      const recvError = await errorOf(() => b.recv(null as unknown as object));
      expect(sendError).toBeInstanceOf(TypeError);
      expect(recvError).toBeInstanceOf(TypeError);
      expect(sendError.code).toBe('ERR_INVALID_ARG_TYPE');
      expect(recvError.code).toBe('ERR_INVALID_ARG_TYPE');
    } finally {
      await closeBoth(a, b);
    }
  });

  it("on a stream, bytes that are no message end the channel with 'ERR_FDPASS_BAD_MESSAGE' (it cannot resynchronise)", async () => {
    const fd = openTagged(8);
    const [x, y] = socketpair();
    const b = new Channel(y);
    expect(send(x, fd)).toBe(true); // a good message first: it is still delivered
    writeSync(x, Buffer.from('x'));
    expect(consume(await within(b.recv(), 2000, 'recv'))).toBe('8');
    const error = await within(
      errorOf(() => b.recv()),
      2000,
      'recv',
    );
    expect(error.code).toBe('ERR_FDPASS_BAD_MESSAGE');
    expect(error.message).toContain('unknown message tag 0x78');
    await within(once(b, 'close'), 2000, "'close' after the broken stream");
    await expect(b.recv()).rejects.toBe(error); // the reason reading ended, as after EOF
    closeAll([x, fd]);
  });

  it("on seqpacket, a packet that is no message rejects one recv() with 'ERR_FDPASS_BAD_MESSAGE'; the channel goes on", async () => {
    const fd = openTagged(8);
    const [x, y] = socketpair('seqpacket');
    const b = new Channel(y);
    writeSync(x, Buffer.from('x'));
    await expect(within(b.recv(), 2000, 'recv')).rejects.toMatchObject({ code: 'ERR_FDPASS_BAD_MESSAGE' });
    expect(send(x, fd)).toBe(true);
    expect(consume(await within(b.recv(), 2000, 'recv'))).toBe('8');
    await within(b.close(), 2000, 'close()');
    closeAll([x, fd]);
  });

  // A 'message' listener that closes the channel mid-batch: the rest of the batch has no
  // taker any more, and the channel closes those fds.
  it("close() from a 'message' listener closes the rest of the batch's fds", async () => {
    const N = 5;
    const fds = openTaggedRange(N);
    const before = openFds();
    const [a, b] = Channel.pair();
    for (const fd of fds) await a.send(fd); // all in the socket before b reads: one batch
    let closing: Promise<void> | undefined;
    let delivered = 0;
    b.on('message', (message) => {
      delivered++;
      message.close();
      closing ??= b.close();
    });
    await within(
      (async () => {
        while (!closing) await tick(5);
        await closing;
      })(),
      2000,
      "close() from 'message'",
    );
    await within(a.close(), 2000, 'close()');
    const leaked = [...openFds().keys()].filter((fd) => !before.has(fd));
    closeAll(leaked);
    closeAll(fds);
    expect(delivered).toBe(1);
    expect(leaked).toEqual([]);
  });
});

describe('the seed API: send, recv, closeFd, lastError', () => {
  it('round trip on a socketpair: true, then the fd; lastError() is null after a success', () => {
    const fd = openTagged(9);
    const [x, y] = socketpair();
    expect(send(x, fd)).toBe(true);
    expect(lastError()).toBeNull();
    const got = recv(y);
    expect(got).toBeGreaterThan(2);
    expect(lastError()).toBeNull();
    expect(got).not.toBe(fd);
    expect(contentOf(got)).toBe('9');
    closeAll([got, fd, x, y]);
  });

  it('closeFd() closes what recv() gave; a closed fd is EBADF, bad input a TypeError/RangeError', () => {
    const [x, y] = socketpair();
    const fd = openTagged(5);
    expect(send(x, fd)).toBe(true);
    const got = recv(y);
    expect(contentOf(got)).toBe('5');
    closeFd(got);
    expect(() => fstatSync(got)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => closeFd(got)).toThrow(expect.objectContaining({ code: 'EBADF', errno: -os.errno.EBADF, syscall: 'close' }));
    expect(() => closeFd('3' as unknown as number)).toThrow(expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => closeFd(-1)).toThrow(expect.objectContaining({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }));
    closeAll([fd, x, y]);
  });

  it('in a worker thread, closeFd() closes a received fd without the warning fs.closeSync() gives', () => {
    const script = (close: string) => `
      const { Worker } = require('node:worker_threads');
      const fdpass = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
      new Worker(\`
        const fs = require('node:fs');
        const fdpass = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
        const [x, y] = fdpass.socketpair();
        const file = fs.openSync('/dev/null', 'r');
        fdpass.send(x, file);
        const got = fdpass.recv(y);
        ${close}(got);
        console.log(fs.fstatSync(file).isCharacterDevice() && got !== file ? 'closed' : 'wrong');
      \`, { eval: true });`;
    const withFdpass = spawnSync(process.execPath, ['-e', script('fdpass.closeFd')], { encoding: 'utf8', timeout: 10_000 });
    expect(withFdpass.stdout.trim()).toBe('closed');
    expect(withFdpass.stderr).toBe('');
    const withFs = spawnSync(process.execPath, ['-e', script('fs.closeSync')], { encoding: 'utf8', timeout: 10_000 });
    expect(withFs.stdout.trim()).toBe('closed');
    expect(withFs.stderr).toContain('closed but not opened');
  });

  it("recv() on an empty non-blocking socket is -1 with 'EAGAIN'; after the peer closes, 'EOF'", () => {
    const [x, y] = socketpair();
    // Were the socket blocking, the recv() below would hang the run: fail here instead.
    expect(isNonBlocking(y)).toBe(true);
    expect(recv(y)).toBe(-1);
    expect(lastError()).toMatchObject({ code: 'EAGAIN', errno: -os.errno.EAGAIN, syscall: 'recvmsg' });
    closeSync(x);
    expect(recv(y)).toBe(-1);
    expect(lastError()).toMatchObject({ code: 'EOF', syscall: 'recvmsg' });
    closeSync(y);
  });

  it("send() is false with 'EBADF' for a closed fd, 'EPIPE' once the peer closed, 'EAGAIN' on a full socket", () => {
    const fd = openTagged(0);
    const [x, y] = socketpair();
    const gone = openSync(path.join(dir, 'tag-0'), 'r');
    closeSync(gone);
    expect(send(x, gone)).toBe(false);
    expect(lastError()).toMatchObject({ code: 'EBADF', syscall: 'sendmsg' });

    // Were the sockets blocking, this loop or the last recv() would hang the run: fail here instead.
    expect(isNonBlocking(x) && isNonBlocking(y)).toBe(true);
    let sent = 0;
    while (send(x, fd)) sent++;
    expect(lastError()).toMatchObject({ code: 'EAGAIN', syscall: 'sendmsg' });
    expect(sent).toBeGreaterThan(0);
    for (let i = 0; i < sent; i++) {
      const got = recv(y);
      expect(got).toBeGreaterThan(2);
      closeSync(got);
    }
    expect(recv(y)).toBe(-1);
    expect(lastError()?.code).toBe('EAGAIN');

    closeSync(y);
    expect(send(x, fd)).toBe(false);
    expect(['EPIPE', 'ECONNRESET']).toContain((lastError() as Failure).code);
    closeAll([x, fd]);
  });

  it('bad arguments are TypeError/RangeError with a code', () => {
    const [x, y] = socketpair();
    expect(() => send('x' as unknown as number, 0)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => send(x, -1)).toThrow(RangeError);
    expect(() => send(x, 1.5)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => recv(NaN)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => recv(2 ** 40)).toThrow(RangeError);
    expect(() => socketpair('bogus' as 'stream')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => setBlocking(-1, true)).toThrow(RangeError);
    closeAll([x, y]);
  });

  it.each([
    ['a zero byte', [0]],
    ["a byte 'x'", [0x78]],
  ])("%s without an fd: -1 with 'ERR_FDPASS_BAD_MESSAGE', and the next message is read", (_, bytes) => {
    const fd = openTagged(1);
    const [x, y] = socketpair();
    writeSync(x, Buffer.from(bytes));
    expect(recv(y)).toBe(-1);
    expect(lastError()).toMatchObject({ code: 'ERR_FDPASS_BAD_MESSAGE' });
    expect(send(x, fd)).toBe(true);
    const got = recv(y);
    expect(contentOf(got)).toBe('1');
    closeAll([got, fd, x, y]);
  });

  it("two fds in one message, or an fd with a non-zero byte: -1 with 'ERR_FDPASS_BAD_MESSAGE', and those fds are closed", async () => {
    const file = path.join(dir, 'tag-7');
    closeSync(openTagged(7)); // creates the file
    const [mine, theirs] = socketpair();
    const peer = spawnPeer(
      python,
      [
        '-c',
        [
          'import os, socket, sys',
          's = socket.socket(fileno=3)',
          'fd = os.open(sys.argv[1], os.O_RDONLY)',
          "socket.send_fds(s, [b'\\x00'], [fd, fd])",
          "socket.send_fds(s, [b'\\x01'], [fd])",
          "socket.send_fds(s, [b'\\x00'], [fd])",
          "print('sent', flush=True)",
        ].join('\n'),
        file,
      ],
      [theirs],
    );
    closeSync(theirs);
    expect(await within(peer.line(), 5000, 'the Python peer')).toBe('sent');
    const before = countFds();

    expect(recv(mine)).toBe(-1);
    expect(lastError()).toMatchObject({ code: 'ERR_FDPASS_BAD_MESSAGE' });
    expect(lastError()?.message).toMatch(/2 fds/);
    expect(countFds()).toBe(before);

    expect(recv(mine)).toBe(-1);
    expect(lastError()).toMatchObject({ code: 'ERR_FDPASS_BAD_MESSAGE' });
    expect(countFds()).toBe(before);

    const got = recv(mine);
    expect(got).toBeGreaterThan(2);
    expect(contentOf(got)).toBe('7');
    closeSync(got);

    const { code, stderr } = await within(peer.exited, 5000, 'the Python peer');
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(recv(mine)).toBe(-1);
    expect(lastError()?.code).toBe('EOF');
    closeSync(mine);
  });

  it('after setBlocking(fd, true), recv() blocks until a child process sends, and returns the fd', async () => {
    const file = path.join(dir, 'tag-3');
    closeSync(openTagged(3));
    const [mine, theirs] = socketpair();
    setBlocking(mine, true);
    // The child sends after 200 ms, then exits: were it not to send, recv() would see EOF.
    const peer = spawnPeer(
      python,
      [
        '-c',
        [
          'import os, socket, sys, time',
          's = socket.socket(fileno=3)',
          'fd = os.open(sys.argv[1], os.O_RDONLY)',
          'time.sleep(0.2)',
          "socket.send_fds(s, [b'\\x00'], [fd])",
        ].join('\n'),
        file,
      ],
      [theirs],
    );
    closeSync(theirs);
    const start = performance.now();
    const got = recv(mine);
    const waited = performance.now() - start;
    expect(got, String(lastError())).toBeGreaterThan(2);
    expect(waited).toBeGreaterThanOrEqual(150);
    expect(contentOf(got)).toBe('3');
    closeSync(got);
    const { code, stderr } = await within(peer.exited, 5000, 'the Python peer');
    expect(stderr).toBe('');
    expect(code).toBe(0);
    expect(recv(mine)).toBe(-1); // blocking, but the peer is gone: EOF, not a hang
    expect(lastError()?.code).toBe('EOF');
    closeSync(mine);
  });
});
