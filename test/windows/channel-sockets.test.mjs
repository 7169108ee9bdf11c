// Sockets through the Channel on Windows: WSADuplicateSocketW for the receiver's pid, and
// WSASocketW on the far side (docs/windows-channel-protocol.md).
import assert from 'node:assert/strict';
import { closeSync } from 'node:fs';
import { test } from 'node:test';
import { expectNoHandleLeak, fdpass, windowsBinding } from './helpers.mjs';

const { Channel } = fdpass;

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
