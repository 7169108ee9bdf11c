// A worker thread that ends with Windows channels open: the addon closes their poll handles,
// sockets and peer process handles itself (Node-API cleanup hooks), as the POSIX addon does,
// since no JS runs then. Without it Node aborts when it closes the worker's event loop.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runNode } from './helpers.mjs';

for (const mode of ['exit', 'terminate']) {
  const how = mode === 'exit' ? 'exits by itself' : 'is terminated while recv() waits';
  test(`a worker that ${how} with channels (new Channel(fd) too) and an offer open: the process goes on, no handle leaks`, async () => {
    const { child, done } = runNode('worker-exit.mjs', [mode]);
    // A process that aborts under Wine may hang in its crash handler: 30 s is a failure.
    const timer = setTimeout(() => child.kill(), 30_000);
    const { code, stdout, stderr } = await done.finally(() => clearTimeout(timer));
    assert.equal(code, 0, `node.exe ended with ${code}\n${stdout}\n${stderr}`);
    const match = /^exit (-?\d+) (-?\d+) handles (\d+) (\d+)$/m.exec(stdout);
    assert.ok(match, `no result line in:\n${stdout}\n${stderr}`);
    const [, first, second, afterFirst, afterSecond] = match.map(Number);
    assert.deepEqual([first, second], mode === 'exit' ? [0, 0] : [1, 1]);
    // Each worker held 16 channels (10 sockets, 6 fds, 16 process handles) and a listener.
    assert.ok(afterSecond - afterFirst < 5, `handle count ${afterFirst} after one worker, ${afterSecond} after two`);
  });
}
