// The send side under conditions a plain socketpair does not reach: the kernel short of
// buffer memory (ENOBUFS), and a backlog longer than one writable wake-up should send.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixtures, python, root } from './helpers.js';

const dist = JSON.stringify(path.join(root, 'dist', 'index.js'));
const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-send-queue-'));
const shim = path.join(dir, 'fail-sendmsg.so');
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeAll(() => {
  execFileSync('cc', ['-shared', '-fPIC', '-O2', '-o', shim, path.join(fixtures, 'fail-sendmsg.c'), '-ldl']);
});

describe('the send queue', () => {
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
