// Each refusal by the system names the call that refused it (error.syscall): the seed recv's
// peer lookup, and the Channel's push of a file (DuplicateHandle) and of a socket
// (WSADuplicateSocketW), were once all named after another call.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { expectNoHandleLeak, expectedToFailUnderWine, fdpass, recordOnResettablePair, root, windowsBinding } from './helpers.mjs';
import { file, win } from './channel-helpers.mjs';

const require = createRequire(import.meta.url);
const { WindowsChannel, fromTransport } = require(path.join(root, 'dist', 'win', 'channel.js'));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

test('seed recv: a record on a connection reset since it came is refused by getpeername (ENOTCONN), and nothing is pulled', async () => {
  await expectNoHandleLeak(async () => {
    // a's close resets b's connection, but the record that came before it is still there to read.
    const { a, b, copy } = await recordOnResettablePair(file);
    closeSync(a);
    await sleep(50);
    try {
      assert.equal(fdpass.recv(b), -1, 'the record was taken from a connection with no peer');
      const error = fdpass.lastError();
      assert.deepEqual({ code: error.code, syscall: error.syscall }, { code: 'ENOTCONN', syscall: 'getpeername' }, String(error));
    } finally {
      // Never pulled: the copy is still this process's, to close.
      assert.equal(windowsBinding.closeHandle(copy), 0);
      closeSync(b);
    }
  });
});

/** A channel whose peer is a node.exe that has exited since: pushes into it are refused. */
async function channelToExitedPeer() {
  // No pipes: its exit is all we wait for (one run hung for 120 s waiting for a killed
  // child's pipes to close, under load).
  const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore', windowsHide: true });
  await once(child, 'spawn');
  const ends = new Float64Array(2);
  assert.equal(win.tcpPair(ends), 0);
  const channel = new WindowsChannel(fromTransport, ends[0], child.pid);
  const exited = once(child, 'exit');
  child.kill();
  await exited;
  return {
    channel,
    async close() {
      await channel.close();
      win.closeSocket(ends[1]);
    },
  };
}

test('Channel: a file pushed into a peer that has exited is refused by DuplicateHandle; no handle leaks', { timeout: 30_000 }, async () => {
  await expectNoHandleLeak(async () => {
    const peer = await channelToExitedPeer();
    const fd = openSync(file, 'r');
    try {
      await assert.rejects(peer.channel.send({ data: 'x', fds: [fd] }), (error) => {
        assert.equal(error.syscall, 'DuplicateHandle', String(error));
        assert.ok(error.errno < 0 && typeof error.code === 'string', String(error));
        return true;
      });
    } finally {
      closeSync(fd);
      await peer.close();
    }
  });
});

test(
  'Channel: a socket pushed into a peer that has exited is refused by WSADuplicateSocketW',
  {
    timeout: 30_000,
    todo: expectedToFailUnderWine(
      'its WSADuplicateSocketW never refuses a socket: it does not open the target process (it tries to copy the handle into it and ignores the outcome)',
    ),
  },
  async () => {
    const peer = await channelToExitedPeer();
    const [c, d] = fdpass.socketpair();
    try {
      await assert.rejects(peer.channel.send({ data: 'x', fds: [c] }), (error) => {
        assert.equal(error.syscall, 'WSADuplicateSocketW', String(error));
        return true;
      });
    } finally {
      closeSync(c);
      closeSync(d);
      await peer.close();
    }
  },
);
