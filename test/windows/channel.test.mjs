// The Channel on Windows within one process (docs/windows-channel-protocol.md): handles pushed
// into the peer and adopted as fds, hostile records, bad arguments, handle counts.
import assert from 'node:assert/strict';
import { closeSync, openSync, writeSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { createRequire } from 'node:module';
import { expectNoHandleLeak, expectedToFailUnderWine, fdpass, handleCount, root } from './helpers.mjs';
import { file, pipe, readFd, readPipe, win } from './channel-helpers.mjs';

const require = createRequire(import.meta.url);
const { Channel } = fdpass;
const { WindowsChannel, fromTransport } = require(path.join(root, 'dist', 'win', 'channel.js'));

/** A raw socket connected to a channel of this process: the peer a test scripts by hand. */
function rawPeer(options) {
  const ends = new Float64Array(2);
  assert.equal(win.tcpPair(ends), 0);
  const channel = new WindowsChannel(fromTransport, ends[1], process.pid, options);
  const sock = ends[0];
  const process_ = win.openProcess(process.pid);
  return {
    channel,
    /** Pushes fd's handle into this process (as a peer would): the entry's bytes. */
    entryFor(fd) {
      const entry = new Uint8Array(win.ENTRY_BYTES);
      const kind = win.pushFd(fd, process_, process.pid, entry, new Int32Array(1));
      assert.ok(kind > 0, `pushFd: ${kind}`);
      new DataView(entry.buffer).setUint32(0, kind, true);
      return kind === win.KIND_HANDLE ? entry.subarray(0, win.HANDLE_ENTRY_BYTES) : entry;
    },
    write(bytes) {
      assert.equal(win.send(sock, bytes, 0, bytes.length), bytes.length);
    },
    close() {
      win.closeSocket(sock);
      win.closeProcess(process_);
    },
  };
}

function header(nfds, length) {
  const h = Buffer.alloc(8);
  h[0] = 1;
  h.writeUInt16LE(nfds, 2);
  h.writeUInt32LE(length, 4);
  return h;
}

function handleEntry(value) {
  const e = Buffer.alloc(12);
  e.writeUInt32LE(1, 0);
  e.writeBigUInt64LE(BigInt(value), 4);
  return e;
}

test('pair: a file and a pipe in one message with data arrive as fds that work, both ways, and no handle leaks', async () => {
  await expectNoHandleLeak(async () => {
    const [a, b] = Channel.pair();
    const fd = openSync(file, 'r');
    const [r, w] = pipe();
    await a.send({ data: 'two handles', fds: [fd, w] });
    const message = await b.recv();
    assert.equal(message.data.toString(), 'two handles');
    assert.equal(message.fds.length, 2);
    assert.ok(!message.fds.includes(fd) && !message.fds.includes(w));
    closeSync(fd);
    closeSync(w);
    assert.equal(readFd(message.fds[0]), 'hello from a file');
    writeSync(message.fds[1], 'through the pipe');
    assert.equal(readPipe(r), 'through the pipe');
    message.close();
    closeSync(r);
    // and back the other way, as a bare fd
    const back = openSync(file, 'r');
    await b.send(back, { close: true });
    const returned = await a.recv();
    assert.equal(readFd(returned.fd), 'hello from a file');
    returned.close();
    await a.close();
    await b.close();
  });
});

test('pair: 200 handles in one message, and a message over maxFdsPerMessage is dropped with its handles closed', async () => {
  await expectNoHandleLeak(async () => {
    const [a, b] = Channel.pair('stream', { maxFdsPerMessage: 100 });
    const fds = Array.from({ length: 200 }, () => openSync(file, 'r'));
    await a.send({ data: 'too many', fds: fds.slice(0, 101) });
    await a.send({ fds: fds.slice(0, 100) });
    await assert.rejects(b.recv(), { code: 'ERR_FDPASS_TOO_MANY_FDS' });
    const message = await b.recv();
    assert.equal(message.fds.length, 100);
    assert.equal(readFd(message.fds[99]), 'hello from a file');
    message.close();
    const [c, d] = Channel.pair();
    await c.send({ fds });
    const all = await d.recv();
    assert.equal(all.fds.length, 200);
    all.close();
    for (const fd of fds) closeSync(fd);
    await Promise.all([a.close(), b.close(), c.close(), d.close()]);
  });
});

test("pair: for await yields each message and ends at the peer's close; 'message' events; 'end' and 'close'", async () => {
  await expectNoHandleLeak(async () => {
    const [a, b] = Channel.pair();
    const fd = openSync(file, 'r');
    for (let i = 0; i < 5; i++) await a.send({ data: `m${i}`, fds: [fd] });
    await a.close();
    const seen = [];
    for await (const message of b) {
      seen.push(message.data.toString());
      assert.equal(readFd(message.fd), 'hello from a file');
      message.close();
    }
    assert.deepEqual(seen, ['m0', 'm1', 'm2', 'm3', 'm4']);
    await b.close();

    const [c, d] = Channel.pair();
    const events = [];
    const ended = new Promise((resolve) => d.on('end', resolve));
    const closed = new Promise((resolve) => d.on('close', resolve));
    d.on('message', (message) => {
      events.push(message.data.toString());
      message.close();
    });
    await c.send({ data: 'e1', fds: [fd] });
    await c.send({ data: 'e2' });
    await c.close();
    await ended;
    await closed;
    assert.deepEqual(events, ['e1', 'e2']);
    closeSync(fd);
  });
});

test('pair: handles pushed into a receiver that never takes them are closed when its channel closes', async () => {
  await expectNoHandleLeak(async () => {
    const [a, b] = Channel.pair();
    const fd = openSync(file, 'r');
    for (let i = 0; i < 10; i++) await a.send({ data: 'unread', fds: [fd, fd, fd] });
    closeSync(fd);
    await new Promise((resolve) => setTimeout(resolve, 20));
    await b.close();
    await a.close();
  });
});

test('bad arguments are TypeErrors and RangeErrors at the call; a closed fd is EBADF, to send() and to new Channel(fd)', async () => {
  const [a, b] = Channel.pair();
  assert.throws(() => a.send('nope'), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => a.send(-1), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => a.send({ data: 5 }), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => a.send({ fds: Array(254).fill(0) }), { code: 'ERR_OUT_OF_RANGE' });
  const fd = openSync(file, 'r');
  closeSync(fd);
  await assert.rejects(a.send(fd), { code: 'EBADF', syscall: 'DuplicateHandle' });
  await assert.rejects(b.recv({ signal: 'x' }), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => new Channel(fd), { code: 'EBADF' });
  assert.throws(() => Channel.pair('seqpacket'), { code: 'ERR_FEATURE_UNAVAILABLE_ON_PLATFORM' });
  await assert.rejects(Channel.connectTo('fdpass-win:127.0.0.1:1:zz'), { code: 'ERR_INVALID_ARG_VALUE' });
  await a.close();
  await assert.rejects(a.send({ data: 'late' }), { code: 'ERR_FDPASS_CHANNEL_CLOSED' });
  await b.close();
});

test('one Channel class: the channels Windows makes, new Channel(fd) included, are instanceof Channel, with all its members', async () => {
  const [a, b] = Channel.pair();
  assert.ok(a instanceof Channel && b instanceof Channel, 'Channel.pair() on Windows gave channels that are not instanceof Channel');
  assert.equal(a.unobservedErrors, 0);
  assert.equal(typeof a.peer.pid, 'number');
  const [c, d] = fdpass.socketpair();
  const overFd = new Channel(c);
  assert.ok(overFd instanceof Channel, 'new Channel(fd) on Windows gave a channel that is not instanceof Channel');
  for (const name of Object.getOwnPropertyNames(Channel.prototype)) assert.ok(name in overFd, `new Channel(fd) lacks ${name}`);
  await overFd.close();
  closeSync(d);
  await a.close();
  await b.close();
});

test("the transport's send and recv refuse a range outside the buffer with EINVAL, touching no memory past it", () => {
  const ends = new Float64Array(2);
  assert.equal(win.tcpPair(ends), 0);
  const EINVAL = -4071;
  const bytes = new Uint8Array(16);
  for (const [offset, length] of [
    [0, 17],
    [8, 9],
    [17, 0],
    [0, -1],
    [1, -1],
    [-1, 4],
    [0x7fffffff, 0x7fffffff],
  ]) {
    assert.equal(win.send(ends[0], bytes, offset, length), EINVAL, `send ${offset}, ${length}`);
    assert.equal(win.recv(ends[1], bytes, offset, length), EINVAL, `recv ${offset}, ${length}`);
  }
  assert.equal(win.send(ends[0], bytes, 8, 8), 8);
  win.closeSocket(ends[0]);
  win.closeSocket(ends[1]);
});

test('hostile peer: a value naming one of our own handles is refused, never adopted or closed; the message is dropped', async () => {
  const peer = rawPeer();
  const mine = openSync(file, 'r');
  // The handle behind our fd, as a hostile peer would name it (a real push gives a new value).
  const entry = peer.entryFor(mine);
  const pushed = Number(Buffer.from(entry.buffer, entry.byteOffset).readBigUInt64LE(4));
  const ownValue = (() => {
    // our fd's handle: push it into ourselves, then the original's value is what adopt refuses
    const adopted = win.adoptHandle(pushed);
    assert.ok(adopted >= 0);
    return { adopted };
  })();
  peer.write(Buffer.concat([header(1, 3), handleEntry(pushed), Buffer.from('own')]));
  const error = await peer.channel.recv().then(
    () => assert.fail('adopted a handle behind one of our fds'),
    (e) => e,
  );
  assert.equal(error.code, 'ERR_FDPASS_BAD_MESSAGE');
  assert.match(error.message, /refused/);
  // Both fds still work: nothing of ours was closed.
  assert.equal(readFd(ownValue.adopted), 'hello from a file');
  assert.equal(readFd(mine), 'hello from a file');
  closeSync(ownValue.adopted);
  closeSync(mine);
  peer.close();
  await peer.channel.close();
});

test('hostile peer: more than 253 handles, an unknown entry kind or tag, a truncated record: errors, handles closed, no leak', async () => {
  await expectNoHandleLeak(async () => {
    for (const bytes of [header(300, 0), Buffer.from([7, 0, 0, 0, 0, 0, 0, 0]), Buffer.concat([header(1, 0), Buffer.alloc(4, 9)])]) {
      const peer = rawPeer();
      peer.write(bytes);
      await assert.rejects(peer.channel.recv(), { code: 'ERR_FDPASS_BAD_MESSAGE' });
      peer.close();
      await peer.channel.close();
    }
    // A record cut short: two handles really pushed, then the peer goes away mid-payload.
    const peer = rawPeer();
    const fd = openSync(file, 'r');
    peer.write(Buffer.concat([header(2, 100), peer.entryFor(fd), peer.entryFor(fd), Buffer.from('only part')]));
    closeSync(fd);
    await new Promise((resolve) => setTimeout(resolve, 20));
    peer.close();
    await assert.rejects(peer.channel.recv(), { code: 'ERR_FDPASS_TRUNCATED' });
    await peer.channel.close();
  });
});

test('hostile peer: a record that never finishes ends the channel after frameTimeout, its handles closed', async () => {
  await expectNoHandleLeak(async () => {
    const peer = rawPeer({ frameTimeout: 100 });
    const fd = openSync(file, 'r');
    peer.write(Buffer.concat([header(1, 10), peer.entryFor(fd)]));
    closeSync(fd);
    await assert.rejects(peer.channel.recv(), { code: 'ERR_FDPASS_FRAME_TIMEOUT' });
    peer.close();
    await peer.channel.close();
  });
});

test(
  'a peer this process may not open for PROCESS_DUP_HANDLE (the System process) is refused with EPERM',
  { todo: expectedToFailUnderWine('Wine has no System process (pid 4): OpenProcess gives EINVAL, not EPERM') },
  () => {
    const ends = new Float64Array(2);
    assert.equal(win.tcpPair(ends), 0);
    try {
      assert.throws(() => new WindowsChannel(fromTransport, ends[1], 4), { code: 'EPERM', syscall: 'OpenProcess' });
    } finally {
      win.closeSocket(ends[0]);
      win.closeSocket(ends[1]);
    }
  },
);

test('handle counts: the leak check sees handles left open', () => {
  // Node's own threads open and close handles now and then: ten files stand out of that noise.
  const before = handleCount();
  const fds = Array.from({ length: 10 }, () => openSync(file, 'r'));
  const opened = handleCount();
  for (const fd of fds) closeSync(fd);
  const closed = handleCount();
  assert.ok(opened - before >= 9, `${before} before, ${opened} with ten files open`);
  assert.ok(opened - closed >= 9, `${opened} with ten files open, ${closed} once closed`);
});
