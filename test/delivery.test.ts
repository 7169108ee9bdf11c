// Who gets what a channel receives: errors never hold up messages, an abandoned iterator
// hands nothing to nobody, and ref() means what it says while reading is paused.
import { spawnSync } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Channel, type ReceivedMessage } from '../lib/index.js';
import { expectNoFdLeakAroundEachTest, root, within } from './helpers.js';

expectNoFdLeakAroundEachTest();

const dist = JSON.stringify(path.join(root, 'dist', 'index.js'));

function until(condition: () => boolean, what: string): Promise<void> {
  return within(
    (async () => {
      while (!condition()) await new Promise((resolve) => setTimeout(resolve, 5));
    })(),
    2000,
    what,
  );
}

describe('per-message errors never hold up messages', () => {
  it("with a 'message' listener and no 'error' listener, messages after an over-limit one are still emitted, and the error is counted and warned about once", async () => {
    const [a, b] = Channel.pair('stream', { maxPayloadBytes: 4 });
    const warnings: Error[] = [];
    const onWarning = (warning: Error): void => void warnings.push(warning);
    process.on('warning', onWarning);
    const received: string[] = [];
    b.on('message', (message) => {
      received.push(message.data.toString());
      message.close();
    });
    await a.send({ data: 'too long' });
    await a.send({ data: 'too long too' });
    for (const data of ['one', 'two', 'six']) await a.send({ data });
    await until(() => received.length === 3, 'three messages');
    expect(received).toEqual(['one', 'two', 'six']);
    expect(b.unobservedErrors).toBe(2);
    await new Promise((resolve) => setImmediate(resolve));
    process.off('warning', onWarning);
    const ours = warnings.filter((warning) => (warning as Error & { code?: string }).code === 'FDPASS_UNOBSERVED_ERRORS');
    expect(ours).toHaveLength(1);
    expect(ours[0]!.message).toMatch(/ERR_FDPASS_MESSAGE_TOO_LARGE/);
    await Promise.all([a.close(), b.close()]);
  });

  it('a for-await loop goes on past an over-limit message; an error listener sees it', async () => {
    const [a, b] = Channel.pair('stream', { maxPayloadBytes: 4 });
    const errors: string[] = [];
    b.on('error', (error) => errors.push((error as Error & { code: string }).code));
    await a.send({ data: 'one' });
    await a.send({ data: 'far too long' });
    await a.send({ data: 'two' });
    await a.close();
    const received: string[] = [];
    for await (const message of b) {
      received.push(message.data.toString());
      message.close();
    }
    expect(received).toEqual(['one', 'two']);
    expect(errors).toEqual(['ERR_FDPASS_MESSAGE_TOO_LARGE']);
    expect(b.unobservedErrors).toBe(0);
    await b.close();
  });

  it('recv() still gets per-message errors in order, between the messages around them', async () => {
    const [a, b] = Channel.pair('seqpacket', { maxFdsPerMessage: 1 });
    const fds = [openSync('/dev/null', 'r'), openSync('/dev/null', 'r')];
    await a.send({ data: 'first' });
    await a.send({ data: 'two fds', fds });
    await a.send({ data: 'last' });
    expect((await b.recv()).data.toString()).toBe('first');
    await expect(b.recv()).rejects.toMatchObject({ code: 'ERR_FDPASS_TOO_MANY_FDS' });
    expect((await b.recv()).data.toString()).toBe('last');
    for (const fd of fds) closeSync(fd);
    await Promise.all([a.close(), b.close()]);
  });

  it('ERR_FDPASS_CHANNEL_CLOSED after a channel ended on an error carries that error as its cause', async () => {
    const [a, b] = Channel.pair();
    const closed = new Promise<void>((resolve) => b.once('close', () => resolve()));
    // Bytes that are no message: a stream channel cannot find the next boundary and ends.
    const { binding } = await import('../lib/binding.js');
    expect(binding.sendmsg(a.fd, Buffer.from([0x7f]), 0, 1, new Int32Array(0), 0)).toBe(1);
    await within(closed, 2000, 'the channel closing on its own');
    const error = await b.send({ data: 'late' }).catch((e: unknown) => e as Error & { code: string; cause?: { code: string } });
    expect(error).toMatchObject({ code: 'ERR_FDPASS_CHANNEL_CLOSED', cause: { code: 'ERR_FDPASS_BAD_MESSAGE' } });
    await a.close();
  });
});

describe("an iterator's return()", () => {
  it('settles its waiting next(), and the next message goes to the next taker', async () => {
    const [a, b] = Channel.pair();
    const iterator = b[Symbol.asyncIterator]();
    const waiting = iterator.next();
    await iterator.return!();
    expect(await within(waiting, 1000, 'the abandoned next()')).toEqual({ done: true, value: undefined });
    await a.send({ data: 'for recv()' });
    const message: ReceivedMessage = await within(b.recv(), 1000, 'recv() after the iterator left');
    expect(message.data.toString()).toBe('for recv()');
    await Promise.all([a.close(), b.close()]);
  });
});

describe('ref() while reading is paused', () => {
  it('keeps the process alive with messages unread and the inbox full', () => {
    const result = spawnSync(
      process.execPath,
      [
        '-e',
        `const { Channel } = require(${dist});
        const fs = require('node:fs');
        const [a, b] = Channel.pair('stream', { maxBufferedFds: 1 });
        b.ref();
        a.unref();
        const file = fs.openSync('/dev/null', 'r');
        for (let i = 0; i < 3; i++) a.send(file);
        // Unref'd: this timer alone would not keep the process alive; the channel must.
        setTimeout(() => { console.log('alive', b.hasRef()); process.exit(0); }, 600).unref();`,
      ],
      { encoding: 'utf8', timeout: 10_000 },
    );
    expect(result.stderr).toBe('');
    expect(result.stdout.trim()).toBe('alive true');
  });
});
