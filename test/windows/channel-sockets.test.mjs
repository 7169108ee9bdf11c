// Sockets through the Channel on Windows: WSADuplicateSocketW for the receiver's pid, and
// WSASocketW on the far side (docs/windows-channel-protocol.md).
import assert from 'node:assert/strict';
import { closeSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { test } from 'node:test';
import { win } from './channel-helpers.mjs';
import { endSeenBy, expectNoHandleLeak, fdpass, root, wineVersion, windowsBinding } from './helpers.mjs';

const require = createRequire(import.meta.url);
const { Channel } = fdpass;
const { WindowsChannel, fromTransport } = require(path.join(root, 'dist', 'win', 'channel.js'));
const { encodeRecord } = require(path.join(root, 'dist', 'win', 'records.js'));

function recvText(fd) {
  const buffer = Buffer.alloc(64);
  for (let tries = 0; tries < 200; tries++) {
    const n = windowsBinding.recv(fd, buffer, 0, 64);
    if (n > 0) return buffer.toString('utf8', 0, n);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
  }
  throw new Error('nothing arrived on the received socket');
}

test('a socket sent through a channel arrives as a socket fd that carries bytes both ways, and no handle leaks', async () => {
  await expectNoHandleLeak(async () => {
    const [a, b] = Channel.pair();
    const [mine, theirs] = fdpass.socketpair();
    await a.send({ data: 'a socket', fds: [theirs] });
    closeSync(theirs);
    const message = await b.recv();
    const received = message.take(0);
    message.close();
    assert.equal(windowsBinding.sendAll(mine, Buffer.from('ping')), 4);
    assert.equal(recvText(received), 'ping');
    assert.equal(windowsBinding.sendAll(received, Buffer.from('pong')), 4);
    assert.equal(recvText(mine), 'pong');
    closeSync(received);
    closeSync(mine);
    await a.close();
    await b.close();
  });
});

test('a socket in a record still in the socket when the receiver’s channel closes is closed by it: its other end sees the end, and no handle leaks', async () => {
  await expectNoHandleLeak(async () => {
    // maxBufferedFds: 1: the first message fills the budget, so the second stays in the socket.
    const [a, b] = Channel.pair('stream', { maxBufferedFds: 1 });
    const [mine, theirs] = fdpass.socketpair();
    const [first, firstPeer] = fdpass.socketpair();
    await a.send({ data: 'fills the budget', fds: [firstPeer] }, { close: true });
    await new Promise((resolve) => setTimeout(resolve, 100)); // b reads it, and stops reading
    assert.equal(b.bufferedFds, 1);
    await a.send({ data: 'never read', fds: [theirs] }, { close: true });
    await new Promise((resolve) => setTimeout(resolve, 100));
    await b.close();
    assert.equal(await endSeenBy(first), 0, 'the received message’s socket stayed open');
    assert.equal(await endSeenBy(mine), 0, 'the socket pushed into the receiver stayed open after its channel closed');
    closeSync(mine);
    closeSync(first);
    await a.close();
  });
});

test('a socket in a dropped message (over maxFdsPerMessage) is closed at once: its other end sees the end, and no handle leaks', async () => {
  await expectNoHandleLeak(async () => {
    const [a, b] = Channel.pair('stream', { maxFdsPerMessage: 1 });
    const [mine, theirs] = fdpass.socketpair();
    const [other, spare] = fdpass.socketpair();
    await a.send({ fds: [theirs, spare] }, { close: true });
    await assert.rejects(b.recv(), { code: 'ERR_FDPASS_TOO_MANY_FDS' });
    assert.equal(await endSeenBy(mine), 0, 'the dropped message’s socket stayed open in the receiver');
    assert.equal(await endSeenBy(other), 0);
    closeSync(mine);
    closeSync(other);
    await a.close();
    await b.close();
  });
});

test(
  'hostile peer: a socket entry (Wine’s form) naming a socket behind one of our fds is refused, never adopted a second time or closed',
  { skip: wineVersion === null && 'Wine’s form of a socket entry names a handle of the receiver; Windows’ own does not' },
  async () => {
    const ends = new Float64Array(2);
    assert.equal(win.tcpPair(ends), 0);
    const channel = new WindowsChannel(fromTransport, ends[1], process.pid);
    const self = win.openProcess(process.pid);
    const [mine, theirs] = fdpass.socketpair();
    const entry = new Uint8Array(win.ENTRY_BYTES);
    const kind = win.pushFd(theirs, self, process.pid, entry, new Int32Array(1));
    assert.equal(kind, win.KIND_SOCKET);
    const view = new DataView(entry.buffer);
    view.setUint32(0, kind, true);
    // WSAPROTOCOL_INFOW's dwServiceFlags4 (at 4 + 12): Wine's mark; dwServiceFlags3 names the duplicate.
    assert.equal(view.getUint32(16, true), 0xff00ff00);
    // A Node fd owns the duplicate now; a peer that sends the same entry again names it.
    const adopted = win.adoptSocket(entry);
    assert.ok(adopted >= 0, `adoptSocket: ${adopted}`);
    const record = encodeRecord([entry], Buffer.from('forged'));
    assert.equal(win.send(ends[0], record, 0, record.length), record.length);
    await assert.rejects(channel.recv(), { code: 'ERR_FDPASS_BAD_MESSAGE', message: /socket \(entry 0\) was refused/ });
    // The adopted socket still carries bytes: nothing of ours was closed.
    assert.equal(windowsBinding.sendAll(mine, Buffer.from('still here')), 10);
    assert.equal(recvText(adopted), 'still here');
    closeSync(adopted);
    closeSync(theirs);
    closeSync(mine);
    win.closeSocket(ends[0]);
    win.closeProcess(self);
    await channel.close();
  },
);
