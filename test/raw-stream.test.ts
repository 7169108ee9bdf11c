// RawStream: bytes and fds with no framing, between real processes (a Node peer on the same
// class, a Python peer on socket.send_fds/recv_fds), with fd counts on both sides.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { RawStream, closeFd, socketpair } from '../lib/index.js';
import {
  contentOf,
  countFds,
  expectNoFdLeakAroundEachTest,
  fixtures,
  isCloexec,
  python,
  spawnNodePeer,
  spawnPeer,
  within,
} from './helpers.js';

expectNoFdLeakAroundEachTest();

const tmp = mkdtempSync(path.join(tmpdir(), 'fdpass-raw-'));
const file = path.join(tmp, 'file.txt');
writeFileSync(file, 'the file behind the fd');

const once = <T>(emitter: NodeJS.EventEmitter, event: string): Promise<T> =>
  new Promise((resolve) => emitter.once(event, resolve as (value: unknown) => void));
const closed = (stream: RawStream): Promise<void> =>
  stream.closed ? Promise.resolve() : new Promise((resolve) => stream.once('close', () => resolve()));
const tick = (ms = 20): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Until check() holds (or fail after ms). */
async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const giveUp = Date.now() + ms;
  while (!check()) {
    if (Date.now() > giveUp) throw new Error(`${what}: not within ${ms} ms`);
    await tick(5);
  }
}

describe('RawStream in one process', () => {
  it("reads many writes of many sizes in one wake-up: every byte where it was written, each write's fd with it", async () => {
    const [writer, reader] = RawStream.pair();
    const fd = openSync(file, 'r');
    const sent: Buffer[] = [];
    let sentFds = 0;
    // All in the kernel before the reader reads: an idle stream sends in write() itself.
    for (let i = 0; i < 48; i++) {
      const data = randomBytes(1 + ((i * 37) % 300));
      sent.push(data);
      if (i % 4 === 3) {
        writer.write(data);
      } else {
        writer.writeWithFds(data, [fd]);
        sentFds++;
      }
    }
    closeSync(fd);
    const expected = Buffer.concat(sent);
    let fds = 0;
    reader.on('fds', (received: number[]) => {
      fds += received.length;
      reader.closeFds(received);
    });
    const chunks: Buffer[] = [];
    reader.on('data', (chunk: Buffer) => chunks.push(chunk));
    await until(() => Buffer.concat(chunks).length >= expected.length, 5000, 'every byte');
    expect(Buffer.concat(chunks).equals(expected)).toBe(true);
    expect(fds).toBe(sentFds);
    // Several reads (one per write with an fd) went into each chunk.
    expect(chunks.length).toBeLessThan(sentFds / 2);
    writer.destroy();
    reader.destroy();
    await Promise.all([closed(writer), closed(reader)]);
  });

  it("keeps bytes in order, makes each write's fds available before its bytes, takes them FIFO, close-on-exec", async () => {
    const [a, b] = RawStream.pair();
    const fd = openSync(file, 'r');
    const pipe = socketpair('stream');
    let read = '';
    // For each chunk read: where it ends, and how many fds were held by then (none taken yet).
    const seen: Array<{ end: number; held: number }> = [];
    b.on('data', (chunk: Buffer) => {
      read += chunk.toString();
      seen.push({ end: read.length, held: b.bufferedFds });
    });
    a.write('plain;');
    a.writeWithFds('one;', [fd]);
    a.write({ data: 'two;', fds: [pipe[0], fd] });
    a.write(Buffer.from('tail'));
    await until(() => read.length === 18, 2000, 'the bytes');
    expect(read).toBe('plain;one;two;tail');
    // 'one;' starts at 6, 'two;' at 10: their fds are held by the time their first byte is read.
    for (const { end, held } of seen) expect(held).toBeGreaterThanOrEqual(end > 10 ? 3 : end > 6 ? 1 : 0);
    expect(b.bufferedFds).toBe(3);
    const [first, ...rest] = [...b.takeFds(1), ...b.takeFds(5)];
    expect(rest).toHaveLength(2);
    expect(contentOf(first!)).toBe('the file behind the fd');
    expect(contentOf(rest[1]!)).toBe('the file behind the fd');
    for (const received of [first!, ...rest]) expect(isCloexec(received)).toBe(true);
    expect(b.takeFds(1)).toEqual([]);
    for (const received of [first!, ...rest]) closeFd(received);
    closeSync(fd);
    closeFds(pipe);
    a.destroy();
    b.destroy();
    await Promise.all([closed(a), closed(b)]);
  });

  it("closes the fds nobody took when the stream is destroyed; an 'fds' listener gets them instead, with those held before", async () => {
    const before = countFds();
    const [a, b] = RawStream.pair();
    const fd = openSync(file, 'r');
    b.on('data', () => {});
    a.writeWithFds('x', [fd, fd, fd]);
    await until(() => b.bufferedFds === 3, 2000, 'the fds');
    const handed: number[] = [];
    b.on('fds', (fds: number[]) => handed.push(...fds));
    a.writeWithFds('y', [fd]);
    await until(() => handed.length === 4, 2000, "the 'fds' listener");
    expect(b.bufferedFds).toBe(0);
    b.closeFds(handed.slice(0, 2));
    for (const received of handed.slice(2)) closeFd(received);
    a.writeWithFds('z', [fd, fd]);
    b.removeAllListeners('fds');
    await until(() => b.bufferedFds === 2, 2000, 'fds held again');
    closeSync(fd);
    const open = countFds();
    a.destroy();
    b.destroy();
    await Promise.all([closed(a), closed(b)]);
    expect(countFds()).toBe(open - 4); // the pair, and the two fds b held
    expect(countFds()).toBe(before);
  });

  it('a write on an idle stream that finds the socket full waits with copies of its fds: the caller closes its own at once, each arrives right', async () => {
    const files = [0, 1, 2].map((i) => {
      const name = path.join(tmp, `idle-${i}`);
      writeFileSync(name, `idle file ${i}`);
      return name;
    });
    const [a, b] = RawStream.pair();
    // Nobody reads b yet: each write is alone on an idle stream until the kernel is full; then
    // the write that met EAGAIN, and those after it, wait in the stream.
    let written = 0;
    const write = (): void => {
      const fd = openSync(files[written % 3]!, 'r');
      a.writeWithFds(Buffer.alloc(64, written), [fd]);
      closeSync(fd); // the caller's own, closed as soon as the write returns
      written++;
    };
    while (a.writableLength === 0) {
      write();
      if (written > 100_000) throw new Error('the socket never filled');
    }
    const firstToWait = written - 1;
    // More than a batch (64 a sendmmsg) waits: the backlog goes out in batches, some cut short
    // by a full socket, each write with its own fd.
    for (let i = 0; i < 300; i++) write();
    const received: number[] = [];
    let bytes = 0;
    b.on('fds', (fds: number[]) => received.push(...fds));
    b.on('data', (chunk: Buffer) => (bytes += chunk.length));
    await until(() => bytes === written * 64 && received.length === written, 5000, 'every write');
    expect(firstToWait).toBeGreaterThan(0);
    expect(received.map(contentOf)).toEqual(Array.from({ length: written }, (_, i) => `idle file ${i % 3}`));
    b.closeFds(received);
    a.destroy();
    b.destroy();
    await Promise.all([closed(a), closed(b)]);
  });

  it('stops reading while the reader holds maxBufferedFds, and goes on as it takes them', async () => {
    const [a, b] = RawStream.pair({ maxBufferedFds: 16 });
    const fd = openSync('/dev/null', 'r');
    for (let i = 0; i < 200; i++) a.writeWithFds(Buffer.from([i]), [fd]);
    closeSync(fd); // the queued writes hold copies of their own
    let bytes = 0;
    b.on('data', (chunk: Buffer) => (bytes += chunk.length));
    await until(() => b.bufferedFds >= 16, 2000, 'the first fds');
    await tick(50);
    // One read more than the budget at most; the rest stays in the kernel, bytes too.
    expect(b.bufferedFds).toBeLessThanOrEqual(17);
    expect(bytes).toBeLessThan(200);
    let taken = 0;
    while (taken < 200) {
      const fds = b.takeFds(10);
      taken += fds.length;
      if (fds.length > 0) closeFds(fds);
      else await tick(2);
    }
    expect(bytes).toBe(200);
    a.destroy();
    b.destroy();
    await Promise.all([closed(a), closed(b)]);
  });

  it('stops reading while the reader falls behind by bytes, and sends no faster than the peer reads', async () => {
    const [a, b] = RawStream.pair({ readableHighWaterMark: 16 * 1024 });
    const chunk = Buffer.alloc(8192, 1);
    let writes = 0;
    while (a.write(chunk)) writes++;
    await tick(100);
    // Nobody reads b: its buffer stays near its mark; the rest waits in the kernel and in a.
    b.read(0);
    await tick(50);
    expect(b.readableLength).toBeLessThanOrEqual(16 * 1024 + 64 * 4096);
    expect(a.writableLength).toBeGreaterThan(0);
    let bytes = 0;
    b.on('data', (data: Buffer) => (bytes += data.length));
    await within(once(a, 'drain'), 5000, "a's drain");
    await until(() => bytes === (writes + 1) * chunk.length, 5000, 'every byte');
    a.destroy();
    b.destroy();
    await Promise.all([closed(a), closed(b)]);
  });

  it('end() lets the peer read EOF (shutdown), and both sides close', async () => {
    const [a, b] = RawStream.pair();
    b.resume();
    a.resume();
    a.end('bye');
    await within(Promise.all([closed(a), closed(b)]), 2000, 'both closing');
    expect(a.fd).toBe(-1);
  });

  it('refuses bad input with clear errors, taking nothing', async () => {
    const [a, b] = RawStream.pair();
    const fd = openSync(file, 'r');
    expect(() => a.writeWithFds('', [fd])).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => a.writeWithFds('x', new Array(254).fill(fd))).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => a.writeWithFds('x', ['3' as unknown as number])).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => a.write({ data: 42 as unknown as string, fds: [fd] })).toThrow(TypeError);
    expect(() => b.takeFds(-1)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => new RawStream(fd)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    const [s1, s2] = socketpair('seqpacket');
    expect(() => new RawStream(s1)).toThrow(/stream socket/);
    expect(() => new RawStream(a.fd)).toThrow(expect.objectContaining({ code: 'EEXIST' }));
    closeFds([s1, s2]);
    closeSync(fd);
    // A write that waits (behind a cork here) holds a copy of its fds: the caller may close its own at once.
    const [c, d] = RawStream.pair();
    c.cork();
    const mine = openSync(file, 'r');
    c.writeWithFds('q', [mine]);
    closeSync(mine);
    c.uncork();
    d.resume();
    const arrived: string[] = [];
    d.on('fds', (fds: number[]) => {
      arrived.push(...fds.map(contentOf));
      closeFds(fds);
    });
    await until(() => arrived.length === 1, 2000, 'the copy sent');
    expect(arrived).toEqual(['the file behind the fd']);
    for (const s of [a, b, c, d]) s.destroy();
    await Promise.all([a, b, c, d].map(closed));
  });
});

describe('RawStream between processes', () => {
  it('sends a 4 MiB write with an fd in several partial sendmsgs: it arrives intact, the fd exactly once, with its first bytes', async () => {
    const [mine, theirs] = socketpair('stream');
    const peer = spawnNodePeer('raw-peer.mjs', ['sink'], [theirs]);
    closeSync(theirs);
    const stream = new RawStream(mine);
    const payload = randomBytes(4 * 1024 * 1024);
    const fd = openSync(file, 'r');
    const written = new Promise<void>((resolve, reject) =>
      stream.writeWithFds(payload, [fd], (error) => (error ? reject(error) : resolve())),
    );
    // The kernel took part of it: the rest waits (a stream socket holds far less than 4 MiB).
    expect(stream.writableLength).toBe(payload.length);
    closeSync(fd); // the caller's fd is its own: the stream holds a copy while the write waits
    await within(written, 10_000, 'the write');
    stream.resume(); // to read the sink's EOF
    stream.end();
    const [result] = await Promise.all([within(peer.exited, 10_000, 'the sink'), closed(stream)]);
    expect(result.code, result.stderr).toBe(0);
    const report = JSON.parse(result.stdout) as {
      bytes: number;
      sha256: string;
      fds: Array<{ at: number; target: string; cloexec: boolean; head: string }>;
      data: unknown;
      leaked: number;
    };
    expect(report.bytes).toBe(payload.length);
    expect(report.sha256).toBe(createHash('sha256').update(payload).digest('hex'));
    expect(report.fds).toEqual([{ at: 0, target: file, cloexec: true, head: 'the file behind the fd' }]);
    expect(report.leaked).toBe(0); // the sink's count; this process's is checked after each test
  });

  it("keeps the order of writes with and without fds: each fd arrives before or with its write's first byte, never before the previous write's", async () => {
    const [mine, theirs] = socketpair('stream');
    const peer = spawnNodePeer('raw-peer.mjs', ['sink'], [theirs]);
    closeSync(theirs);
    const stream = new RawStream(mine);
    const starts: number[] = [];
    let offset = 0;
    const files = Array.from({ length: 20 }, (_, i) => {
      const name = path.join(tmp, `f${i}`);
      writeFileSync(name, `file ${i}`);
      return name;
    });
    for (let i = 0; i < 60; i++) {
      const data = Buffer.alloc(1 + ((i * 7919) % 30_000), i);
      if (i % 3 === 0) {
        const fd = openSync(files[i / 3]!, 'r');
        starts.push(offset);
        stream.writeWithFds(data, [fd]);
        closeSync(fd);
      } else {
        stream.write(data);
      }
      offset += data.length;
    }
    stream.resume();
    stream.end();
    const result = await within(peer.exited, 10_000, 'the sink');
    expect(result.code, result.stderr).toBe(0);
    const report = JSON.parse(result.stdout) as {
      bytes: number;
      fds: Array<{ at: number; head: string; cloexec: boolean }>;
      data: Array<[number, number]>;
      leaked: number;
    };
    expect(report.bytes).toBe(offset);
    expect(report.leaked).toBe(0);
    // In order: the nth fd is the nth write's.
    expect(report.fds.map((f) => f.head)).toEqual(files.map((_, i) => `file ${i}`));
    expect(report.fds.every((f) => f.cloexec)).toBe(true);
    // Before or with its bytes: when a chunk holding a write's first byte is read, its fd is there.
    for (const [end, fdsByThen] of report.data) {
      expect(fdsByThen).toBeGreaterThanOrEqual(starts.filter((start) => start < end).length);
    }
    await closed(stream);
  });

  it.each([
    ['a path', false],
    ['an abstract name', true],
  ])(
    'connects to %s and round-trips bytes and fds with a Python peer (socket.send_fds), no fd left in either process',
    async (_, abstract) => {
      const name = abstract ? `fdpass-raw-${process.pid}-${Date.now()}` : path.join(tmp, `echo-${Date.now()}.sock`);
      const peer = spawnPeer(python, [path.join(fixtures, 'raw-peer.py'), 'listen', abstract ? `@${name}` : name]);
      expect(await peer.line()).toBe('listening');
      const stream = await RawStream.connect({ path: name, abstract });
      expect(await peer.line()).toBe('ready');
      const peerBefore = countFds(peer.child.pid);
      const fd = openSync(file, 'r');
      const fds: number[] = [];
      stream.on('fds', (received: number[]) => fds.push(...received));
      let echoed = '';
      stream.on('data', (chunk: Buffer) => (echoed += chunk.toString()));
      stream.writeWithFds('with two fds', [fd, fd]);
      await until(() => echoed === 'with two fds' && fds.length === 2, 5000, 'the echo');
      expect(fds.map(contentOf)).toEqual(['the file behind the fd', 'the file behind the fd']);
      expect(fds.every((received) => isCloexec(received))).toBe(true);
      for (const received of fds) closeFd(received);
      closeSync(fd);
      expect(countFds(peer.child.pid)).toBe(peerBefore); // the peer closed what it echoed
      stream.end();
      expect(await peer.line()).toBe('done');
      await within(peer.exited, 5000, 'the peer');
      await closed(stream);
      if (!abstract) rmSync(name, { force: true });
    },
  );

  it('holds a hostile peer that floods fds to maxBufferedFds (one read over, at most), and closes them all at destroy', async () => {
    const [mine, theirs] = socketpair('stream');
    const peer = spawnPeer(python, [path.join(fixtures, 'raw-peer.py'), 'flood', '400'], [theirs]);
    closeSync(theirs);
    const before = countFds();
    const stream = new RawStream(mine, { maxBufferedFds: 64 });
    stream.resume();
    expect(await peer.line()).toBe('ready');
    await until(() => stream.bufferedFds >= 64, 5000, 'the flood');
    await tick(200);
    expect(stream.bufferedFds).toBeLessThanOrEqual(64 + 253);
    expect(countFds()).toBeLessThanOrEqual(before + 64 + 253);
    stream.destroy();
    await closed(stream);
    expect(['gone', 'done']).toContain(await peer.line());
    await within(peer.exited, 5000, 'the peer'); // this process's count is checked after each test
  });

  it('a receiver at its fd limit: MSG_CTRUNC ends the stream with ERR_FDPASS_TRUNCATED, and nothing that arrived is left open', async () => {
    const [mine, theirs] = socketpair('stream');
    const script = path.join(fixtures, 'raw-peer.mjs');
    const child = spawn('sh', ['-c', 'ulimit -n 64 && exec "$0" "$1" full', process.execPath, script], {
      stdio: ['ignore', 'pipe', 'pipe', theirs],
    });
    closeSync(theirs);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    await until(() => stdout.includes('full\n') || child.exitCode !== null, 10_000, 'the child filling its fd table');
    expect(stdout, stderr).toContain('full\n');
    const stream = new RawStream(mine);
    const fd = openSync('/dev/null', 'r');
    stream.writeWithFds('x', [fd, fd, fd]);
    closeSync(fd);
    const code = await within(exited, 10_000, 'the child');
    expect(code, stderr).toBe(0);
    expect(JSON.parse(stdout.split('\n')[1]!)).toEqual({ code: 'ERR_FDPASS_TRUNCATED', leaked: 0 });
    stream.destroy();
    await closed(stream);
  });
});

function closeFds(fds: readonly number[]): void {
  for (const fd of fds) closeSync(fd);
}
