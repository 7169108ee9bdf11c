// The send side under conditions a plain socketpair does not reach: the kernel short of
// buffer memory (ENOBUFS), and a backlog longer than one writable wake-up should send; and
// how a burst of small sends made in one turn reaches the kernel (counted by the same shim).
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel } from '../lib/index.js';
import { countFds, fixtures, python, root } from './helpers.js';

const dist = JSON.stringify(path.join(root, 'dist', 'index.js'));
const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-send-queue-'));
const shim = path.join(dir, 'fail-sendmsg.so');
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeAll(() => {
  execFileSync('cc', ['-shared', '-fPIC', '-O2', '-o', shim, path.join(fixtures, 'fail-sendmsg.c'), '-ldl']);
});

/** Runs script (CommonJS, with `Channel`, `fs` and `fd`, an open /dev/null) under the shim, counting sends. */
function runCountingSends(script: string): { stdout: string; calls: { sendmsg: number; sendmmsg: number } } {
  const result = spawnSync(
    process.execPath,
    [
      '-e',
      `const { Channel } = require(${dist});
      const fs = require('node:fs');
      const fd = fs.openSync('/dev/null', 'r');
      (async () => { ${script} })().then(() => fs.closeSync(fd), (error) => { console.log(error); process.exit(1); });`,
    ],
    {
      encoding: 'utf8',
      timeout: 10_000,
      env: { ...process.env, LD_PRELOAD: [process.env.LD_PRELOAD, shim].filter(Boolean).join(' '), FDPASS_COUNT_SENDS: '1' },
    },
  );
  expect(result.status, result.stdout + result.stderr).toBe(0);
  const counts = /sendmsg (\d+) sendmmsg (\d+)/.exec(result.stderr);
  expect(counts, result.stderr).not.toBeNull();
  return { stdout: result.stdout.trim(), calls: { sendmsg: Number(counts![1]), sendmmsg: Number(counts![2]) } };
}

describe('the send queue', () => {
  it('small messages sent in one turn go out a sendmmsg per batch after the first, in order; a send awaited alone goes out at once', () => {
    // A receiver reads alongside, so that the socket does not fill and the count is the burst's alone.
    const burst = runCountingSends(`
      const [a, b] = Channel.pair();
      const receiving = (async () => {
        const order = [];
        for (let i = 0; i < 200; i++) { const message = await b.recv(); order.push(message.data.readUInt32LE()); message.close(); }
        return order;
      })();
      const data = Buffer.alloc(64);
      const sending = [];
      for (let i = 0; i < 200; i++) { data.writeUInt32LE(i); sending.push(a.send({ data, fds: [fd] })); }
      await Promise.all(sending);
      const order = await receiving;
      console.log(order.every((n, i) => n === i) ? 'in order' : JSON.stringify(order));
      await Promise.all([a.close(), b.close()]);`);
    expect(burst.stdout).toBe('in order');
    expect(burst.calls.sendmsg).toBe(1); // the first goes at once
    expect(burst.calls.sendmmsg).toBeGreaterThanOrEqual(4); // 199 more, at most 64 a call
    expect(burst.calls.sendmmsg).toBeLessThanOrEqual(12);

    const awaited = runCountingSends(`
      const [a, b] = Channel.pair();
      for (let i = 0; i < 20; i++) { await a.send({ data: 'x', fds: [fd] }); (await b.recv()).close(); }
      console.log('sent');
      await Promise.all([a.close(), b.close()]);`);
    expect(awaited.stdout).toBe('sent');
    expect(awaited.calls).toEqual({ sendmsg: 20, sendmmsg: 0 });
  });

  it('close() right after a burst of small sends sends what the burst gathered: every send resolves and every message arrives', async () => {
    const before = countFds();
    const fd = openSync('/dev/null', 'r');
    const [a, b] = Channel.pair();
    const sending = Array.from({ length: 50 }, (_, i) => a.send({ data: String(i), fds: [fd] }));
    const closing = a.close();
    const results = await Promise.allSettled(sending);
    expect(results.filter((result) => result.status === 'rejected')).toEqual([]);
    const received: string[] = [];
    for await (const message of b) {
      received.push(message.data.toString());
      expect(message.fds).toHaveLength(1);
      message.close();
    }
    expect(received).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
    await Promise.all([closing, b.close()]);
    closeSync(fd);
    expect(countFds()).toBe(before);
  });

  it('ENOBUFS (the kernel short of buffer memory) waits and retries, like EAGAIN: every send resolves and every fd arrives', () => {
    const result = spawnSync(
      process.execPath,
      [
        '-e',
        `const { Channel } = require(${dist});
        const fs = require('node:fs');
        (async () => {
          const [a, b] = Channel.pair();
          const files = [0, 1, 2].map(() => fs.openSync('/dev/null', 'r'));
          await Promise.all(files.map((fd) => a.send(fd)));
          const received = [];
          for (let i = 0; i < 3; i++) {
            const message = await b.recv();
            received.push(fs.fstatSync(message.fd).rdev === fs.fstatSync(files[i]).rdev);
            message.close();
          }
          console.log(JSON.stringify(received));
          for (const fd of files) fs.closeSync(fd);
          await Promise.all([a.close(), b.close()]);
        })().catch((error) => { console.log(error.code); process.exit(1); });`,
      ],
      {
        encoding: 'utf8',
        timeout: 10_000,
        // After any preload already there: under npm run test:asan, the sanitizer's runtime must come first.
        env: { ...process.env, LD_PRELOAD: [process.env.LD_PRELOAD, shim].filter(Boolean).join(' '), FDPASS_FAIL_SENDS: '2' },
      },
    );
    expect(result.stdout.trim()).toBe('[true,true,true]');
    expect(result.status).toBe(0);
  });

  // SO_SNDBUFFORCE, which makes the backlog long enough, needs root (CI runs as root).
  it.skipIf(process.getuid?.() !== 0)('a backlog to a fast reader flushes over several wake-ups, so other handles run in between', () => {
    const result = spawnSync(python, [path.join(fixtures, 'drain-later.py'), path.join(fixtures, 'flush-backlog.mjs'), process.execPath], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    expect(result.stderr).toBe('');
    const report = JSON.parse(result.stdout.trim().split('\n').pop()!) as { filled: number; queued: number; ticks: number };
    expect(report.filled).toBeGreaterThan(report.queued); // the room was there for the whole backlog at once
    // At most 1024 sends a wake-up: 8192 take at least 8 wake-ups, with check phases between.
    expect(report.ticks).toBeGreaterThanOrEqual(4);
  });
});
