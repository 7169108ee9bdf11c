// Channels and the garbage collector, in children run with --expose-gc: gc() never breaks a
// channel that is open (or waited on), and what close() released stays released.
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Channel, socketpair } from '../lib/index.js';
import { expectNoFdLeakAroundEachTest, fixtures, spawnPeer, type Peer } from './helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-gc-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = path.join(dir, 'payload.txt');
writeFileSync(file, 'survived gc');

/** Past this a child is killed, and its test fails instead of stalling. */
const KILL_MS = 25_000;

function startGc(args: string[], extraFds: number[] = []): Peer {
  const peer = spawnPeer(process.execPath, ['--expose-gc', path.join(fixtures, 'lifecycle-gc.mjs'), ...args], extraFds);
  const killer = setTimeout(() => peer.child.kill('SIGKILL'), KILL_MS);
  void peer.exited.finally(() => clearTimeout(killer));
  return peer;
}

interface Churn {
  /** fds the child held beyond its baseline after the first round and gc(), and after the second. */
  afterFirst: number;
  afterSecond: number;
  /** Channels still in memory after gc(), of the 400 closed and of the 400 left open. */
  closedAlive: number;
  openAlive: number;
}

describe('garbage collection', { timeout: 60_000 }, () => {
  describe('200 pairs pass fds, half are closed, every reference is dropped, gc() runs; twice', () => {
    let churn: Promise<Churn>;
    beforeAll(() => {
      churn = startGc(['churn', file, '200']).exited.then((exit) => {
        expect({ code: exit.code, signal: exit.signal, stderr: exit.stderr }).toEqual({ code: 0, signal: null, stderr: '' });
        return JSON.parse(exit.stdout) as Churn;
      });
      churn.catch(() => {}); // each test awaits it and reports the failure
    });

    it('nothing crashes, the fds of closed channels stay released, open ones keep theirs', async () => {
      const { afterFirst, afterSecond } = await churn;
      // 100 pairs left open per round, two sockets each: nothing else is left behind.
      expect({ afterFirst, afterSecond }).toEqual({ afterFirst: 200, afterSecond: 400 });
    });

    it('open channels nobody references are not collected', async () => {
      expect((await churn).openAlive).toBe(400);
    });

    it('closed channels nobody references are collected', async () => {
      expect((await churn).closedAlive).toBe(0);
    });
  });

  describe('a channel nobody references', () => {
    expectNoFdLeakAroundEachTest();

    it('with a recv() pending survives gc() and still delivers what its peer sends', async () => {
      const [mine, theirs] = socketpair();
      const peer = startGc(['pending', file], [theirs]);
      closeSync(theirs);
      const channel = new Channel(mine);
      try {
        expect(await peer.line()).toBe('ready');
        const fd = openSync(file, 'r');
        try {
          await channel.send(fd);
        } finally {
          closeSync(fd);
        }
        expect(await peer.exited).toEqual({
          code: 0,
          signal: null,
          stdout: 'ready\nfd 3: survived gc\npair: survived gc\n',
          stderr: '',
        });
      } finally {
        peer.child.kill('SIGKILL');
        await peer.exited;
        await channel.close();
      }
    });
  });
});
