// 10,000 fds there and back: afterwards both processes hold exactly the fds they held before.
import { closeSync, openSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { Channel, recv, send, setBlocking, socketpair, lastError } from '../lib/index.js';
import { countFds, spawnNodePeer } from './helpers.js';

const PASSES = 10_000;

describe('no fd leaks over 10,000 passes', () => {
  it.each(['echo', 'echo-sync'])('Channel here, %s in the child', async (mode) => {
    const before = countFds();
    const file = openSync('/dev/null', 'r');
    const [mine, theirs] = socketpair();
    const peer = spawnNodePeer('node-peer.mjs', [mode, String(PASSES)], [theirs]);
    closeSync(theirs);
    const channel = new Channel(mine);
    expect(await peer.line()).toBe('ready');
    const childBefore = countFds(peer.child.pid);

    // Sends and receives overlap: the child echoes while we are still sending.
    const received = (async () => {
      let n = 0;
      for await (const message of channel) {
        expect(message.fds).toHaveLength(1);
        message.close();
        if (++n === PASSES) return n;
      }
      return n;
    })();
    const sends: Promise<void>[] = [];
    for (let i = 0; i < PASSES; i++) sends.push(channel.send(file));
    await Promise.all(sends);
    expect(await received).toBe(PASSES);
    expect(await peer.line()).toBe('done');
    expect(countFds(peer.child.pid)).toBe(childBefore);

    await channel.close();
    const { code, stderr } = await peer.exited;
    expect(stderr).toBe('');
    expect(code).toBe(0);
    closeSync(file);
    expect(countFds()).toBe(before);
  });

  it('seed send/recv here, Channel echo in the child', async () => {
    const before = countFds();
    const file = openSync('/dev/null', 'r');
    const [mine, theirs] = socketpair();
    const peer = spawnNodePeer('node-peer.mjs', ['echo', String(PASSES)], [theirs]);
    closeSync(theirs);
    setBlocking(mine, true);
    expect(await peer.line()).toBe('ready');
    const childBefore = countFds(peer.child.pid);
    // Windows of 50 in flight: fewer process wake-ups than ping-pong, and small enough
    // that neither socket buffer fills while this blocking loop is not reading.
    const WINDOW = 50;
    for (let i = 0; i < PASSES; i += WINDOW) {
      for (let j = 0; j < WINDOW; j++) if (!send(mine, file)) throw lastError() ?? new Error('send failed');
      for (let j = 0; j < WINDOW; j++) {
        const back = recv(mine);
        if (back < 0) throw lastError() ?? new Error('recv failed');
        closeSync(back);
      }
    }
    expect(await peer.line()).toBe('done');
    expect(countFds(peer.child.pid)).toBe(childBefore);
    closeSync(mine);
    const { code, stderr } = await peer.exited;
    expect(stderr).toBe('');
    expect(code).toBe(0);
    closeSync(file);
    expect(countFds()).toBe(before);
  });
});
