// new Channel(fd) on Windows: a channel over a connected socket the caller has, whose peers
// prove their process ids to each other (lib/win/verify-peer.ts) before anything is pushed:
// in one process, between two node.exe processes, and against liars, whose claimed process
// keeps nothing.
import assert from 'node:assert/strict';
import { closeSync, fstatSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { test } from 'node:test';
import { childFile, file, pipe, readFd, readPipe } from './channel-helpers.mjs';
import { acceptWithin, expectNoHandleLeak, fdpass, listenLoopback, root, runNode, windowsBinding } from './helpers.mjs';

const require = createRequire(import.meta.url);
const { Channel } = fdpass;
const { encodeVerifyMessage, VERIFY_MESSAGE_BYTES } = require(path.join(root, 'dist', 'win', 'verify-peer.js'));

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Reads exactly n bytes from a non-blocking socket fd, within 10 s. */
async function readBytes(fd, n) {
  const buffer = Buffer.alloc(n);
  let have = 0;
  for (const deadline = Date.now() + 10_000; have < n; ) {
    const got = windowsBinding.recv(fd, buffer, have, n - have);
    if (got > 0) have += got;
    else if (got === 0) throw new Error(`the channel closed after ${have} of ${n} bytes`);
    else if (Date.now() > deadline) throw new Error(`only ${have} of ${n} bytes within 10 s (${got})`);
    else await sleep(5);
  }
  return buffer;
}

function isClosed(fd) {
  try {
    fstatSync(fd);
    return false;
  } catch (error) {
    return error.code === 'EBADF';
  }
}

test('one process: two new Channel(fd) over socketpair() ends verify each other; files and pipes both ways; sends made at once wait for it; close closes the fd; no handle leak', async () => {
  await expectNoHandleLeak(async () => {
    const [x, y] = fdpass.socketpair();
    const a = new Channel(x);
    const b = new Channel(y);
    assert.ok(a instanceof Channel && b instanceof Channel);
    assert.equal(a.fd, x);
    const fd = openSync(file, 'r');
    const [r, w] = pipe();
    // Sent before either side is verified: pushed once it is.
    const sent = a.send({ data: 'over an fd', fds: [fd, w] });
    assert.equal(a.peer.pid, 0, 'the peer is verified only later');
    await sent;
    closeSync(fd);
    closeSync(w);
    const message = await b.recv();
    assert.equal(message.data.toString(), 'over an fd');
    assert.equal(readFd(message.fds[0]), 'hello from a file');
    const { writeSync } = await import('node:fs');
    writeSync(message.fds[1], 'through the pushed pipe');
    message.close();
    assert.equal(readPipe(r), 'through the pushed pipe');
    closeSync(r);
    await b.send({ data: 'back', fds: [openSync(file, 'r')] }, { close: true });
    const back = await a.recv();
    assert.equal(readFd(back.fd), 'hello from a file');
    back.close();
    assert.equal(a.peer.pid, process.pid);
    assert.equal(b.peer.pid, process.pid);
    await a.close();
    await b.close();
    assert.ok(isClosed(x) && isClosed(y), 'the channels left their fds open');
  });
});

test('new Channel(fd) refuses what is not a connected stream socket, and the fd stays the caller’s', async () => {
  const fd = openSync(file, 'r');
  assert.throws(() => new Channel(fd), { code: 'ENOTSOCK', syscall: 'getsockopt' });
  assert.equal(readFd(fd), 'hello from a file', 'the refused fd was touched');
  closeSync(fd);
  assert.throws(() => new Channel(fd), { code: 'EBADF' });
  const { listener } = listenLoopback();
  assert.throws(() => new Channel(listener), { code: 'ENOTCONN', syscall: 'getpeername' });
  closeSync(listener);
  assert.throws(() => new Channel(-1), { code: 'ERR_OUT_OF_RANGE' });
  const [x, y] = fdpass.socketpair();
  assert.throws(() => new Channel(x, { handshakeTimeout: 0 }), { code: 'ERR_OUT_OF_RANGE' });
  assert.ok(!isClosed(x));
  closeSync(x);
  closeSync(y);
});

/** The child's exit, once libuv has also closed the child's process handle and pipes. */
async function exited(done) {
  const result = await done;
  await sleep(50);
  return result;
}

test('two node.exe processes: new Channel(fd) on each end of a loopback connection; each verifies the other; files and pipes both ways; no handle leak in either', async () => {
  await expectNoHandleLeak(async () => {
    const { listener, port } = listenLoopback();
    const { child, done } = runNode('over-fd-peer.mjs', ['peer', String(port), childFile]);
    const fd = await acceptWithin(listener);
    closeSync(listener);
    const channel = new Channel(fd);
    const sent = openSync(file, 'r');
    const [r, w] = pipe();
    await channel.send({ data: 'from the parent', fds: [sent, w] }, { close: true });
    const back = await channel.recv();
    assert.equal(channel.peer.pid, child.pid);
    assert.equal(back.data.toString(), 'from the child');
    assert.equal(readFd(back.fd), 'a file the child opened');
    back.close();
    assert.equal(readPipe(r), 'written by the child');
    closeSync(r);
    await channel.close();
    const { code, stdout, stderr } = await exited(done);
    assert.equal(code, 0, stderr);
    const result = JSON.parse(stdout.trim().split('\n').pop());
    assert.equal(result.peer, process.pid);
    assert.equal(result.data, 'from the parent');
    assert.equal(result.file, 'hello from a file');
    assert.equal(result.handlesAfter, result.handlesBefore, `the child leaked handles ${JSON.stringify(result)}`);
  });
});
