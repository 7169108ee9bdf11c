// The Channel on Windows (docs/windows-channel-protocol.md): handles pushed into the peer and
// adopted as fds, in one process (Channel.pair()) and between two node.exe processes
// (Channel.offer() / Channel.connectTo()), hostile input, the offer's intruders, handle counts.
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { createRequire } from 'node:module';
import { expectNoHandleLeak, expectedToFailUnderWine, fdpass, handleCount, root, runNode, windowsBinding } from './helpers.mjs';

const require = createRequire(import.meta.url);
const { Channel } = fdpass;
const { WindowsChannel, fromTransport } = require(path.join(root, 'dist', 'win', 'channel.js'));
const { encodeHello } = require(path.join(root, 'dist', 'win', 'handshake.js'));
const win = windowsBinding.winChannel;

const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-channel-'));
const file = path.join(dir, 'hello.txt');
writeFileSync(file, 'hello from a file');
const childFile = path.join(dir, 'child.txt');
writeFileSync(childFile, 'a file the child opened');

function readFd(fd) {
  const buffer = Buffer.alloc(256);
  return buffer.toString('utf8', 0, readSync(fd, buffer, 0, 256, 0));
}

function pipe() {
  const out = new Int32Array(2);
  assert.equal(win.pipe(out), 0);
  return [out[0], out[1]];
}

function readPipe(fd) {
  const buffer = Buffer.alloc(256);
  return buffer.toString('utf8', 0, readSync(fd, buffer, 0, 256, null));
}

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
      const kind = win.pushFd(fd, process_, process.pid, entry);
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

test('bad arguments are TypeErrors and RangeErrors at the call; a closed fd is EBADF; new Channel(fd) says what to use', async () => {
  const [a, b] = Channel.pair();
  assert.throws(() => a.send('nope'), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => a.send(-1), { code: 'ERR_OUT_OF_RANGE' });
  assert.throws(() => a.send({ data: 5 }), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => a.send({ fds: Array(254).fill(0) }), { code: 'ERR_OUT_OF_RANGE' });
  const fd = openSync(file, 'r');
  closeSync(fd);
  await assert.rejects(a.send(fd), { code: 'EBADF', syscall: 'DuplicateHandle' });
  await assert.rejects(b.recv({ signal: 'x' }), { code: 'ERR_INVALID_ARG_TYPE' });
  assert.throws(() => new Channel(5), { code: 'ERR_FEATURE_UNAVAILABLE_ON_PLATFORM' });
  assert.throws(() => Channel.pair('seqpacket'), { code: 'ERR_FEATURE_UNAVAILABLE_ON_PLATFORM' });
  await assert.rejects(Channel.connectTo('fdpass-win:127.0.0.1:1:zz'), { code: 'ERR_INVALID_ARG_VALUE' });
  await a.close();
  await assert.rejects(a.send({ data: 'late' }), { code: 'ERR_FDPASS_CHANNEL_CLOSED' });
  await b.close();
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

test('two processes: files and pipes both ways, used on the far side; for await in the child; no handle leak in either', async () => {
  await expectNoHandleLeak(async () => {
    const offer = Channel.offer();
    const { done } = runNode('channel-peer.mjs', [offer.address, 'echo', childFile]);
    const channel = await offer.accept();
    const fd = openSync(file, 'r');
    const [r, w] = pipe();
    await channel.send({ data: 'from the parent', fds: [fd, w] });
    closeSync(fd);
    closeSync(w);
    const back = await channel.recv();
    assert.equal(back.data.toString(), 'from the child');
    assert.equal(readFd(back.fd), 'a file the child opened');
    back.close();
    assert.equal(readPipe(r), 'written by the child');
    closeSync(r);
    const many = Array.from({ length: 50 }, () => openSync(file, 'r'));
    await channel.send({ fds: many });
    await channel.send({ fds: many.slice(0, 7), data: 'more' });
    for (const m of many) closeSync(m);
    await channel.close();
    const { code, stdout, stderr } = await done;
    assert.equal(code, 0, stderr);
    const result = JSON.parse(stdout.trim().split('\n').pop());
    assert.equal(result.data, 'from the parent');
    assert.equal(result.file, 'hello from a file');
    assert.equal(result.peer, process.pid);
    assert.equal(result.iterated, 57);
    assert.equal(result.handlesAfter, result.handlesBefore, 'the child leaked handles');
  });
});

test('two processes: a receiver that dies before reading: the sender ends cleanly and keeps no handle', async () => {
  await expectNoHandleLeak(async () => {
    const offer = Channel.offer();
    const { done } = runNode('channel-peer.mjs', [offer.address, 'exit-at-once']);
    const channel = await offer.accept();
    await done;
    const fd = openSync(file, 'r');
    // Either the push (the process is gone) or the write (the connection is gone) fails, or the
    // record goes into a socket nobody reads; the channel then ends.
    const sends = [];
    for (let i = 0; i < 3; i++) sends.push(channel.send({ data: 'to nobody', fds: [fd] }).catch((e) => e));
    await Promise.all(sends);
    closeSync(fd);
    await channel.recv().then(
      () => assert.fail('a message from a dead process'),
      (e) => assert.ok(['EOF', 'ERR_FDPASS_CHANNEL_CLOSED'].includes(e.code), e.code),
    );
    await channel.close();
  });
});

test('the offer turns intruders away (no token, a wrong pid, not the expected process) and accepts the real peer', async () => {
  const offer = Channel.offer();
  const [, , port, tokenHex] = offer.address.split(':');
  const token = Buffer.from(tokenHex, 'hex');
  const accepted = offer.accept({ expectPid: undefined, handshakeTimeout: 2000 });
  const intruders = [];
  const connectWith = (hello) => {
    const sock = win.connect(Number(port));
    assert.ok(sock > 0);
    if (hello) assert.equal(win.send(sock, hello, 0, hello.length), hello.length);
    intruders.push(sock);
  };
  connectWith(encodeHello(process.pid, Buffer.alloc(16))); // a wrong token
  connectWith(encodeHello(process.pid + 4, token)); // the token, but a pid that is not the connection's
  connectWith(Buffer.from('GET / HTTP/1.0\r\n\r\n0123456789abcd')); // not a hello at all
  await new Promise((resolve) => setTimeout(resolve, 200));
  const { done } = runNode('channel-peer.mjs', [offer.address, 'plain']);
  const channel = await accepted;
  assert.notEqual(channel.peer.pid, process.pid);
  assert.equal(offer.rejected.length, 3, JSON.stringify(offer.rejected));
  assert.ok(offer.rejected.some((r) => /wrong token/.test(r.reason)));
  assert.ok(offer.rejected.some((r) => /claimed process/.test(r.reason)));
  await channel.close();
  await done;
  for (const sock of intruders) win.closeSocket(sock);

  // expectPid: the token and a true pid, but not the process the offer waits for.
  const picky = Channel.offer();
  const pickyAccept = picky.accept({ expectPid: 1 << 30, handshakeTimeout: 2000 });
  const connecting = Channel.connectTo(picky.address, { handshakeTimeout: 500 });
  await assert.rejects(connecting);
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.match(picky.rejected[0]?.reason ?? '', /not the expected/);
  picky.close();
  await assert.rejects(pickyAccept, { code: 'ERR_FDPASS_HANDOVER_FAILED' });
});

test(
  'a peer this process may not open for PROCESS_DUP_HANDLE (the System process) is refused with EPERM',
  { todo: expectedToFailUnderWine('OpenProcess never denies access under Wine, and it has no System process') },
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

test('handle counts: the leak check sees a handle that is left open', () => {
  const before = handleCount();
  const fd = openSync(file, 'r');
  assert.equal(handleCount(), before + 1);
  closeSync(fd);
  assert.equal(handleCount(), before);
});
