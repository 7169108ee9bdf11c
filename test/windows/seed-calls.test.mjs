// send()/recv() on Windows within one process: IO::FDPass's record over fdpass's socketpair.
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { expectNoHandleLeak, expectedToFailUnderWine, fdpass, recordOnResettablePair, root, windowsBinding } from './helpers.mjs';

const require = createRequire(import.meta.url);

const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-seed-'));

function readAll(fd) {
  const buffer = Buffer.alloc(64);
  return buffer.toString('utf8', 0, readSync(fd, buffer, 0, 64, 0));
}

test('a file sent over a socketpair arrives as a new fd that reads the file, and no handle leaks', async () => {
  const file = path.join(dir, 'hello.txt');
  writeFileSync(file, 'hello from a file');
  await expectNoHandleLeak(() => {
    const [a, b] = fdpass.socketpair();
    fdpass.setBlocking(b, true);
    const fd = openSync(file, 'r');
    assert.equal(fdpass.send(a, fd), true, String(fdpass.lastError()));
    const received = fdpass.recv(b);
    assert.ok(received >= 0, String(fdpass.lastError()));
    assert.notEqual(received, fd);
    closeSync(fd); // the received fd has a handle of its own
    assert.equal(readAll(received), 'hello from a file');
    closeSync(received);
    closeSync(a);
    closeSync(b);
  });
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** IO::FDPass's record for a private copy of fd's handle in this process. */
function recordFor(fd) {
  const copy = windowsBinding.duplicateOwnHandle(fd);
  assert.equal(typeof copy, 'bigint', `duplicateOwnHandle failed: ${copy}`);
  const record = new Uint8Array(12);
  const view = new DataView(record.buffer);
  view.setUint32(0, process.pid, true);
  view.setBigUint64(4, copy, true);
  return record;
}

test('a record that arrives in parts on a non-blocking socket is kept until it is whole', async () => {
  const file = path.join(dir, 'parts.txt');
  writeFileSync(file, 'arrived in parts');
  await expectNoHandleLeak(async () => {
    const [a, b] = fdpass.socketpair(); // non-blocking
    const fd = openSync(file, 'r');
    const record = recordFor(fd);
    closeSync(fd);
    for (const [start, end] of [
      [0, 3],
      [3, 9],
    ]) {
      assert.equal(windowsBinding.sendAll(a, record.subarray(start, end)), end - start);
      await sleep(30);
      assert.equal(fdpass.recv(b), -1);
      assert.equal(fdpass.lastError().code, 'EAGAIN');
    }
    windowsBinding.sendAll(a, record.subarray(9));
    await sleep(30);
    const received = fdpass.recv(b);
    assert.ok(received >= 0, String(fdpass.lastError()));
    assert.equal(readAll(received), 'arrived in parts');
    closeSync(received);
    closeSync(a);
    closeSync(b);
  });
});

test('the end of the stream is EOF, and a record cut by it is a bad message', async () => {
  await expectNoHandleLeak(() => {
    const [a, b] = fdpass.socketpair();
    fdpass.setBlocking(b, true);
    windowsBinding.sendAll(a, new Uint8Array(5));
    closeSync(a);
    assert.equal(fdpass.recv(b), -1);
    assert.equal(fdpass.lastError().code, 'ERR_FDPASS_BAD_MESSAGE');
    assert.match(fdpass.lastError().message, /after 5 of a record's 12 bytes/);
    assert.equal(fdpass.recv(b), -1);
    assert.equal(fdpass.lastError().code, 'EOF');
    closeSync(b);
  });
});

test('bad arguments are TypeError and RangeError with Node codes; what the system refuses is a system error', async () => {
  const file = path.join(dir, 'bad.txt');
  writeFileSync(file, 'x');
  await expectNoHandleLeak(() => {
    const [a, b] = fdpass.socketpair();
    assert.throws(() => fdpass.send('3', a), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    assert.throws(() => fdpass.recv(-1), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    assert.throws(() => fdpass.send(a, 1.5), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    // An fd that is not open: nothing to copy.
    assert.equal(fdpass.send(a, 100_000), false);
    assert.deepEqual(pick(fdpass.lastError()), { code: 'EBADF', syscall: 'DuplicateHandle' });
    // A file as the socket: the copy is made, the send fails, and the copy is closed again.
    const fd = openSync(file, 'r');
    assert.equal(fdpass.send(fd, fd), false);
    assert.deepEqual(pick(fdpass.lastError()), { code: 'ENOTSOCK', syscall: 'send' });
    assert.equal(fdpass.recv(fd), -1);
    assert.deepEqual(pick(fdpass.lastError()), { code: 'ENOTSOCK', syscall: 'recv' });
    assert.throws(() => fdpass.setBlocking(fd, true), { code: 'ENOTSOCK', syscall: 'ioctlsocket' });
    closeSync(fd);
    closeSync(a);
    closeSync(b);
  });
});

function pick(error) {
  assert.ok(error.errno < 0, `errno ${error.errno}`);
  return { code: error.code, syscall: error.syscall };
}

test('what Windows lacks throws ERR_FEATURE_UNAVAILABLE_ON_PLATFORM when called, and says so', () => {
  assert.throws(() => fdpass.socketpair('dgram'), { code: 'ERR_FEATURE_UNAVAILABLE_ON_PLATFORM', message: /only 'stream'/ });
  assert.throws(() => fdpass.socketpair('nonsense'), { code: 'ERR_INVALID_ARG_VALUE' });
  assert.throws(() => fdpass.describe(0), { code: 'ERR_FEATURE_UNAVAILABLE_ON_PLATFORM', message: /not available on Windows/ });
  assert.throws(() => fdpass.listenFds(), { code: 'ERR_FEATURE_UNAVAILABLE_ON_PLATFORM' });
});

test(
  'a socket sent with DuplicateHandle arrives and carries bytes',
  {
    todo: expectedToFailUnderWine(
      'a SOCKET copied with DuplicateHandle is no socket in the receiving process (Wine keeps a per-process socket list: WSAENOTSOCK)',
    ),
  },
  async () => {
    const [a, b] = fdpass.socketpair();
    const [c, d] = fdpass.socketpair();
    fdpass.setBlocking(b, true);
    try {
      assert.equal(fdpass.send(a, c), true, String(fdpass.lastError()));
      const received = fdpass.recv(b);
      assert.ok(received >= 0, String(fdpass.lastError()));
      try {
        assert.equal(windowsBinding.sendAll(received, Buffer.from('via the copy')), 12);
        await sleep(30);
        const buffer = Buffer.alloc(32);
        assert.equal(buffer.toString('utf8', 0, windowsBinding.recv(d, buffer, 0, 32)), 'via the copy');
      } finally {
        closeSync(received);
      }
    } finally {
      for (const fd of [a, b, c, d]) closeSync(fd);
    }
  },
);

test('recv checks the peer again once it holds the sender open: a peer gone in between (its pid free for reuse) makes it take nothing', async () => {
  const { recvHandle } = require(path.join(root, 'dist', 'send-recv-fd-windows.js'));
  const file = path.join(dir, 'recheck.txt');
  writeFileSync(file, 'x');
  await expectNoHandleLeak(async () => {
    const { a, b, copy } = await recordOnResettablePair(file);
    let opened = false;
    // The race, made certain: between the sender's OpenProcess and the pull, the connection
    // goes (as when the sender exits and another process takes its pid).
    const result = recvHandle(b, () => {
      opened = true;
      closeSync(a);
      const deadline = Date.now() + 200;
      while (Date.now() < deadline); // the reset reaches b
    });
    try {
      assert.ok(opened, 'recv never opened the sender');
      assert.ok(typeof result !== 'number', `took fd ${result} from a sender no longer at the other end`);
      assert.equal(result.syscall, 'getpeername', String(result));
    } finally {
      if (typeof result === 'number') closeSync(result);
      else assert.equal(windowsBinding.closeHandle(copy), 0); // never pulled: still ours
      closeSync(b);
    }
  });
});

test("part of a record left on a socket that was closed is not taken for the next socket to get that fd's number", async () => {
  const file = path.join(dir, 'reused.txt');
  writeFileSync(file, 'the new socket');
  await expectNoHandleLeak(async () => {
    const [a, b] = fdpass.socketpair(); // non-blocking
    const fd = openSync(file, 'r');
    const stale = recordFor(fd);
    assert.equal(windowsBinding.sendAll(a, stale.subarray(0, 5)), 5);
    await sleep(30);
    assert.equal(fdpass.recv(b), -1);
    assert.equal(fdpass.lastError().code, 'EAGAIN');
    // The stale record's copy is never taken: close it here, then both ends.
    windowsBinding.closeHandle(new DataView(stale.buffer).getBigUint64(4, true));
    closeSync(a);
    closeSync(b);
    const [c, d] = fdpass.socketpair();
    try {
      assert.ok([c, d].includes(b), `no new socket took fd ${b} (got ${c}, ${d}): nothing to show`);
      const [sender, receiver] = d === b ? [c, d] : [d, c];
      fdpass.setBlocking(receiver, true);
      assert.equal(windowsBinding.sendAll(sender, recordFor(fd)), 12);
      const received = fdpass.recv(receiver);
      assert.ok(received >= 0, `the new socket's record was mixed with the old one's bytes: ${fdpass.lastError()}`);
      assert.equal(readAll(received), 'the new socket');
      closeSync(received);
    } finally {
      closeSync(fd);
      closeSync(c);
      closeSync(d);
    }
  });
});
