// No surprise at process exit: idle channels let the process end; pending calls keep it alive.
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Channel, socketpair } from '../lib/index.js';
import { root } from './helpers.js';

const dist = JSON.stringify(path.join(root, 'dist', 'index.js'));

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Milliseconds from spawn to exit. */
  ms: number;
}

/** Runs `code` in a child with the library loaded as `fdpass`, fd 3 the other end of a socketpair. */
function run(code: string, killAfterMs = 20_000): { exit: Promise<Exit>; channel: Channel } {
  const [mine, theirs] = socketpair();
  const start = performance.now();
  const child = spawn(process.execPath, ['-e', `const fdpass = require(${dist}); ${code}`], {
    stdio: ['ignore', 'pipe', 'pipe', theirs],
  });
  closeSync(theirs);
  const timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', (d) => (stderr += d));
  const exit = new Promise<Exit>((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - start });
    }),
  );
  return { exit, channel: new Channel(mine) };
}

describe('process exit', () => {
  it('an idle channel does not keep the process alive', async () => {
    const { exit, channel } = run(`const [a, b] = fdpass.Channel.pair(); const c = new fdpass.Channel(3); console.log('idle');`);
    expect(await exit).toMatchObject({ code: 0, signal: null, stdout: 'idle\n', stderr: '' });
    await channel.close();
  });

  it('a pending recv() keeps it alive until a message arrives', async () => {
    const { exit, channel } = run(`
      new fdpass.Channel(3).recv().then((m) => { console.log('got', m.fds.length); m.close(); });`);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const fd = openSync('/dev/null', 'r');
    await channel.send(fd, { close: true });
    const result = await exit;
    expect(result).toMatchObject({ code: 0, signal: null, stdout: 'got 1\n', stderr: '' });
    expect(result.ms).toBeGreaterThan(500);
    await channel.close();
  });

  it("a 'message' listener keeps it alive until a message arrives", async () => {
    const { exit, channel } = run(`
      const c = new fdpass.Channel(3);
      c.on('message', (m) => { console.log('message'); m.close(); c.close(); });`);
    await new Promise((resolve) => setTimeout(resolve, 500));
    await channel.send(0);
    expect(await exit).toMatchObject({ code: 0, signal: null, stdout: 'message\n', stderr: '' });
    await channel.close();
  });

  it('unref() lets the process exit despite a pending recv()', async () => {
    const { exit, channel } = run(`new fdpass.Channel(3).unref().recv(); console.log('unref');`);
    expect(await exit).toMatchObject({ code: 0, signal: null, stdout: 'unref\n', stderr: '' });
    await channel.close();
  });

  it('ref() keeps an idle channel alive', async () => {
    // The child announces itself, then sends us an fd: from then on it has nothing left to do.
    const { exit, channel } = run(`const c = new fdpass.Channel(3).ref(); c.send(0).then(() => console.log('ref'));`, 60_000);
    (await channel.recv()).close();
    const stillRunning = await Promise.race([exit.then(() => false), new Promise((resolve) => setTimeout(() => resolve(true), 1000))]);
    expect(stillRunning).toBe(true);
    await channel.close(); // its ref'd channel sees EOF, closes itself, and the child exits
    expect(await exit).toMatchObject({ code: 0, signal: null, stdout: 'ref\n', stderr: '' });
  });

  it('exiting with fds buffered unread (in the inbox and in the socket) and sends queued is clean', async () => {
    const { exit, channel } = run(`
      const fs = require('node:fs');
      const fd = fs.openSync('/dev/null', 'r');
      (async () => {
        const [a, b] = fdpass.Channel.pair('stream', { maxBufferedFds: 4 });
        for (let i = 0; i < 8; i++) await a.send(fd);
        // b reads them into its inbox (nobody takes them) in the loop's next poll phase.
        await new Promise((resolve) => setTimeout(resolve, 50));
        for (let i = 0; i < 8; i++) await a.send(fd); // and more, left in b's socket
        const [c] = fdpass.Channel.pair(); // a full socket: sends wait in c's queue
        c.unref();
        for (let i = 0; i < 2000; i++) c.send(fd).catch(() => {});
        console.log('leaving');
      })();`);
    expect(await exit).toMatchObject({ code: 0, signal: null, stdout: 'leaving\n', stderr: '' });
    await channel.close();
  });

  it("close() called in a process 'exit' listener is clean", async () => {
    const { exit, channel } = run(`
      const c = new fdpass.Channel(3);
      process.on('exit', () => void c.close());
      console.log('ready');`);
    expect(await exit).toMatchObject({ code: 0, signal: null, stdout: 'ready\n', stderr: '' });
    await channel.close();
  });
});
