// A worker thread that ends while its new Channel(fd) verification waits for the peer's
// answer (docs/windows-channel-protocol.md, "Who owns what"): no JS runs again there, so the
// addon's cleanup hook removes the challenge the verification pushed into the peer and closes
// the handle it held to the peer's process.
import assert from 'node:assert/strict';
import { closeSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { test } from 'node:test';
import {
  acceptWithin,
  fdpass,
  handleCountBackTo,
  listenLoopback,
  readBytes,
  recvFromFd,
  root,
  runNode,
  settledHandleCount,
  windowsBinding,
} from './helpers.mjs';

const require = createRequire(import.meta.url);
const { encodeVerifyMessage, VERIFY_MESSAGE_BYTES } = require(path.join(root, 'dist', 'win', 'verify-peer.js'));
const [CLAIM, CHALLENGE] = [1, 2];

test(
  'a worker that ends during new Channel(fd)’s verification leaves no challenge in the silent peer and no handle to it in its process',
  { timeout: 90_000 },
  async () => {
    const { listener, port } = listenLoopback();
    const lines = [];
    const waiting = [];
    const { child, done } = runNode('worker-verifying.mjs', [String(port)]);
    child.stdout.on('data', (chunk) => {
      for (const line of chunk.split(/\r?\n/)) if (line) lines.push(line);
      while (lines.length > 0 && waiting.length > 0) waiting.shift()(lines.shift());
    });
    const nextLine = () => new Promise((resolve) => (lines.length > 0 ? resolve(lines.shift()) : waiting.push(resolve)));
    const childCounts = [];
    try {
      for (const round of [1, 2]) {
        const fd = await acceptWithin(listener);
        fdpass.setBlocking(fd, false);
        // Before our claim: the worker cannot push its challenge before it has read it.
        const before = await settledHandleCount();
        // The peer: claims this process (truly), takes the claim and the challenge, never answers.
        assert.equal(windowsBinding.sendAll(fd, encodeVerifyMessage(CLAIM, process.pid)), VERIFY_MESSAGE_BYTES);
        assert.equal(await nextLine(), `verifying ${round}`);
        const got = await readBytes(recvFromFd(fd), 2 * VERIFY_MESSAGE_BYTES, 20_000);
        assert.equal(got[5], CLAIM);
        assert.equal(got[VERIFY_MESSAGE_BYTES + 5], CHALLENGE);
        assert.equal(await handleCountBackTo(before + 1), before + 1, 'the challenge is not in this process');
        child.stdin.write('terminate\n');
        const ended = /^ended (\d+) (-?\d+) (\d+)$/.exec(await nextLine());
        assert.ok(ended, 'the child printed no result line');
        assert.equal(Number(ended[2]), 1, 'the worker was not terminated');
        childCounts.push(Number(ended[3]));
        assert.equal(await handleCountBackTo(before), before, 'the challenge stayed in the peer after the worker ended');
        closeSync(fd);
      }
      // The second round starts where the first ended: what a round leaves open shows here.
      assert.equal(
        childCounts[1],
        childCounts[0],
        `the child's handle count was ${childCounts[0]} after one worker, ${childCounts[1]} after two`,
      );
    } finally {
      child.stdin.end();
      const { code, stderr } = await done;
      closeSync(listener);
      assert.equal(code, 0, stderr);
    }
  },
);
