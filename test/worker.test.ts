// The addon is context-aware: it loads and passes fds inside worker_threads, and a worker's
// channels release their fds when the worker ends.
import { closeSync, fstatSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, socketpair } from '../lib/index.js';
import { countFds, root, spawnNodePeer } from './helpers.js';

const dist = JSON.stringify(path.join(root, 'dist', 'index.js'));
const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-worker-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Node opens /dev/null for good the first time it terminates a worker (when stdout is a
// pipe): do that once before any count, with a worker that never loads fdpass.
beforeAll(async () => {
  const worker = new Worker("require('node:worker_threads').parentPort.postMessage('up'); for (;;);", { eval: true });
  await new Promise((resolve) => worker.once('message', resolve));
  await worker.terminate();
});

function runWorker(code: string, workerData: unknown): { worker: Worker; result: Promise<unknown>; exited: Promise<number> } {
  const worker = new Worker(code, { eval: true, workerData });
  const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
  const result = new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    void exited.then((exitCode) => reject(new Error(`worker exited with ${exitCode} before replying`)));
  });
  return { worker, result, exited };
}

const passWithinWorker = `
  const { parentPort, workerData } = require('node:worker_threads');
  const fs = require('node:fs');
  const { Channel } = require(${dist});
  (async () => {
    const [a, b] = Channel.pair();
    const file = fs.openSync(workerData.file, 'r');
    await a.send(file, { close: true });
    const { fd } = await b.recv();
    const buf = Buffer.alloc(64);
    const text = buf.subarray(0, fs.readSync(fd, buf, 0, 64, 0)).toString();
    fs.closeSync(fd);
    await Promise.all([a.close(), b.close()]);
    parentPort.postMessage(text);
  })();`;

describe('worker_threads', () => {
  it('four workers at once each pass a file fd between two channels and read through it', async () => {
    const before = countFds();
    const runs = [0, 1, 2, 3].map((i) => {
      const file = path.join(dir, `worker-${i}.txt`);
      writeFileSync(file, `worker file ${i}`);
      return runWorker(passWithinWorker, { file });
    });
    expect(await Promise.all(runs.map((run) => run.result))).toEqual([0, 1, 2, 3].map((i) => `worker file ${i}`));
    expect(await Promise.all(runs.map((run) => run.exited))).toEqual([0, 0, 0, 0]);
    expect(countFds()).toBe(before);
  });

  it('the main thread and a worker exchange fds over a socketpair', async () => {
    const before = countFds();
    const file = path.join(dir, 'main-to-worker.txt');
    writeFileSync(file, 'from the main thread');
    const [mine, theirs] = socketpair();
    const { result, exited } = runWorker(
      `
      const { parentPort, workerData } = require('node:worker_threads');
      const fs = require('node:fs');
      const { Channel } = require(${dist});
      (async () => {
        const channel = new Channel(workerData.fd); // fd numbers are process-wide
        const { fd } = await channel.recv();
        const buf = Buffer.alloc(64);
        const text = buf.subarray(0, fs.readSync(fd, buf, 0, 64, 0)).toString();
        await channel.send(fd, { close: true }); // and back
        await channel.close();
        parentPort.postMessage(text);
      })();`,
      { fd: theirs },
    );
    const channel = new Channel(mine);
    const fd = openSync(file, 'r');
    await channel.send(fd, { close: true });
    const back = await channel.recv();
    expect(await result).toBe('from the main thread');
    const buf = Buffer.alloc(64);
    const { readSync } = await import('node:fs');
    expect(buf.subarray(0, readSync(back.fd, buf, 0, 64, 0)).toString()).toBe('from the main thread');
    back.close();
    await channel.close();
    expect(await exited).toBe(0);
    expect(countFds()).toBe(before);
  });

  it('terminating a worker with a pending recv() closes its channels, without a crash', async () => {
    const before = countFds();
    const { worker, result } = runWorker(
      `
      const { parentPort } = require('node:worker_threads');
      const { Channel } = require(${dist});
      const [a, b] = Channel.pair();
      const fs = require('node:fs');
      // fds buffered unread in b, and a recv() pending on a: both must be released. The check
      // phase comes after the poll phase in which b reads what a sent: it is buffered by then.
      a.send(fs.openSync('/dev/null', 'r'), { close: true }).then(() => setImmediate(() => {
        a.recv();
        parentPort.postMessage('waiting');
      }));`,
      undefined,
    );
    expect(await result).toBe('waiting');
    expect(countFds()).toBeGreaterThan(before);
    await worker.terminate();
    expect(countFds()).toBe(before);
    closeSync(openSync('/dev/null', 'r')); // the process still works
  });

  it("send(fd, { close: true }) in a worker closes through fs, so the worker's exit cannot close a reused number", async () => {
    const before = countFds();
    const [mine, theirs] = socketpair();
    const { worker, result, exited } = runWorker(
      `
      const { parentPort, workerData } = require('node:worker_threads');
      const fs = require('node:fs');
      const { Channel } = require(${dist});
      (async () => {
        const channel = new Channel(workerData.fd);
        const file = fs.openSync('/dev/null', 'r'); // tracked by the worker, to close at exit
        await channel.send(file, { close: true });
        await channel.close();
        parentPort.once('message', () => process.exit(0)); // exit once the number is reused
        parentPort.postMessage(file);
      })();`,
      { fd: theirs },
    );
    const channel = new Channel(mine);
    const received = await channel.recv();
    const freed = (await result) as number;
    // The number the worker closed must be ours again (often it is the received fd itself).
    const taken: number[] = [];
    while (received.fd !== freed && !taken.includes(freed) && taken.length < 64) taken.push(openSync('/dev/null', 'r'));
    expect([received.fd, ...taken]).toContain(freed);
    worker.postMessage('exit');
    expect(await exited).toBe(0);
    for (const fd of [received.fd, ...taken]) expect(() => fstatSync(fd)).not.toThrow();
    for (const fd of taken) closeSync(fd);
    received.close();
    await channel.close();
    expect(countFds()).toBe(before);
  });

  it('terminating busy workers while a message waits unread on their channel crashes nothing and releases every fd', async () => {
    // terminate() stops a busy worker's JS; Node then runs the worker's loop once more while it
    // tears down, and the unread message wakes the poll handle with no JS left to call. A
    // crash there aborts the whole process, so the workers live in a host process.
    const host = spawnNodePeer('busy-worker-host.mjs', ['4']);
    const killer = setTimeout(() => host.child.kill('SIGKILL'), 40_000);
    const exit = await host.exited.finally(() => clearTimeout(killer));
    expect({ code: exit.code, signal: exit.signal, stderr: exit.stderr }).toEqual({ code: 0, signal: null, stderr: '' });
    const report = JSON.parse(exit.stdout) as { codes: number[]; fdsBefore: number; fdsAfter: number; onFile: number };
    expect(report).toEqual({ codes: [1, 1, 1, 1], fdsBefore: report.fdsBefore, fdsAfter: report.fdsBefore, onFile: 0 });
  });

  it('terminating workers while fds stream into their channel leaks none: not the inbox, not a partial frame, not a batch being decoded', async () => {
    const host = spawnNodePeer('terminate-during-stream.mjs', ['30']);
    const killer = setTimeout(() => host.child.kill('SIGKILL'), 60_000);
    const exit = await host.exited.finally(() => clearTimeout(killer));
    expect({ code: exit.code, signal: exit.signal, stderr: exit.stderr }).toEqual({ code: 0, signal: null, stderr: '' });
    expect(JSON.parse(exit.stdout)).toEqual({ rounds: 30, leakyRounds: 0, leaked: 0 });
  });
});
