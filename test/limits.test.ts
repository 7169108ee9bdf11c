// The kernel's own limits, met by real processes: a receiver at its RLIMIT_NOFILE (the kernel
// cuts a message's fds: MSG_CTRUNC), and an unprivileged sender with too many fds in flight
// (ETOOMANYREFS), which is backpressure, not failure.
import { spawn } from 'node:child_process';
import { closeSync, openSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, socketpair } from '../lib/index.js';
import { copyForAnyUser, countFds, envForAnyUser, expectNoFdLeakAroundEachTest, root, within } from './helpers.js';

expectNoFdLeakAroundEachTest();

// A child under another uid loads fdpass from a copy it can read: the checkout may not be.
let anyUserRoot: string;
beforeAll(() => {
  anyUserRoot = copyForAnyUser();
});
afterAll(() => rmSync(anyUserRoot, { recursive: true, force: true }));

/** Node running `code` with our socket as fd 3, under `ulimit -n nofile`, as uid (default: ours). */
function child(code: string, nofile: number, uid?: number) {
  const [mine, theirs] = socketpair('seqpacket');
  const dist = path.join(uid === undefined ? root : anyUserRoot, 'dist', 'index.js');
  const script = `const fdpass = require(${JSON.stringify(dist)}); ${code}`;
  const proc = spawn('sh', ['-c', `ulimit -n ${nofile} && exec "$0" -e "$1"`, process.execPath, script], {
    stdio: ['ignore', 'pipe', 'pipe', theirs],
    ...(uid === undefined ? {} : { uid, gid: uid, env: envForAnyUser(anyUserRoot) }),
  });
  closeSync(theirs);
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  proc.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
    proc.on('close', (code) => resolve({ code, stdout, stderr })),
  );
  const line = async (text: string): Promise<void> => {
    while (!stdout.split('\n').includes(text)) {
      if (proc.exitCode !== null) throw new Error(`the child exited before printing ${text}: ${stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  };
  return { channel: new Channel(mine), exited, line };
}

describe('kernel limits', () => {
  it('seed recv() at the fd limit: -1 with ERR_FDPASS_TRUNCATED, nothing left open, and the next fd arrives', async () => {
    const { channel, exited, line } = child(
      `
      const fs = require('node:fs');
      fdpass.setBlocking(3, true);
      const filler = [];
      try { for (;;) filler.push(fs.openSync('/dev/null', 'r')); } catch {} // not one fd free
      const count = () => fs.readdirSync('/proc/self/fd').length;
      fs.closeSync(filler.pop()); // room for readdir's own fd only
      const before = count();
      filler.push(fs.openSync('/dev/null', 'r'));
      console.log('full');
      const cut = fdpass.recv(3);
      const cutCode = fdpass.lastError() && fdpass.lastError().code;
      fs.closeSync(filler.pop());
      const openAfterCut = count();
      const next = fdpass.recv(3);
      console.log(JSON.stringify({ cut, cutCode, leaked: openAfterCut - before, next: next >= 0 && fs.fstatSync(next).isCharacterDevice() }));
      fs.closeSync(next);
      for (const fd of filler) fs.closeSync(fd);`,
      48,
    );
    await within(line('full'), 20_000, 'the child filling its fd table');
    const fd = openSync('/dev/null', 'r');
    await channel.send(fd);
    await channel.send(fd);
    const result = await within(exited, 20_000, 'the child');
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout.split('\n')[1]!)).toEqual({ cut: -1, cutCode: 'ERR_FDPASS_TRUNCATED', leaked: 0, next: true });
    closeSync(fd);
    await channel.close();
  });

  it('a receiver at its fd limit reports the cut message, closes what arrived, and receives again once fds are free', async () => {
    const before = countFds();
    const { channel, exited, line } = child(
      `
      const fs = require('node:fs');
      const channel = new fdpass.Channel(3);
      const filler = [];
      try { for (;;) filler.push(fs.openSync('/dev/null', 'r')); } catch {} // the fd table is full
      for (let i = 0; i < 3; i++) fs.closeSync(filler.pop()); // room for 3 fds, not 10
      console.log('full');
      (async () => {
        const cut = await channel.recv().then(() => 'delivered', (error) => error.code);
        for (const fd of filler) fs.closeSync(fd);
        const next = await channel.recv();
        console.log(JSON.stringify({ cut, next: next.data.toString(), fds: next.fds.length }));
        next.close();
        await channel.close();
      })();`,
      64,
    );
    await within(line('full'), 20_000, 'the child filling its fd table');
    const fd = openSync('/dev/null', 'r');
    await channel.send({ data: 'ten', fds: new Array<number>(10).fill(fd) });
    await channel.send({ data: 'again', fds: new Array<number>(10).fill(fd) });
    const result = await within(exited, 20_000, 'the child');
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout.split('\n')[1]!)).toEqual({ cut: 'ERR_FDPASS_TRUNCATED', next: 'again', fds: 10 });
    closeSync(fd);
    await channel.close();
    expect(countFds()).toBe(before);
  });

  it('an unprivileged sender past its fds-in-flight limit (ETOOMANYREFS) waits, and every fd arrives in order', async () => {
    const { channel, exited, line } = child(
      `
      const fs = require('node:fs');
      const channel = new fdpass.Channel(3);
      const fd = fs.openSync('/dev/null', 'r');
      // 400 fds in flight against a limit of 64: the kernel refuses most sends until we read.
      const sends = Array.from({ length: 40 }, (_, i) => channel.send({ data: 'm' + i, fds: new Array(10).fill(fd) }));
      console.log('sending');
      Promise.allSettled(sends).then(async (results) => {
        console.log(JSON.stringify([...new Set(results.map((r) => r.status === 'fulfilled' ? 'sent' : r.reason.code))]));
        await channel.close();
      });`,
      64,
      65534,
    );
    await within(line('sending'), 20_000, 'the child starting');
    await new Promise((resolve) => setTimeout(resolve, 300)); // let the kernel refuse for a while
    let fds = 0;
    for (let i = 0; i < 40; i++) {
      const message = await within(channel.recv(), 10_000, `message ${i}`);
      expect(message.data.toString()).toBe(`m${i}`);
      fds += message.fds.length;
      message.close();
    }
    expect(fds).toBe(400);
    const result = await within(exited, 20_000, 'the child');
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout.split('\n')[1]).toBe('["sent"]');
    await channel.close();
  });
});
