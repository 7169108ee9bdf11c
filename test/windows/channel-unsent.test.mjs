// Records the sender never wrote whole (docs/windows-channel-protocol.md, "Who owns what"): the
// sender pushed their handles into the receiver at send(), and the receiver never learned the
// values, so the sender takes them back out when its channel closes or fails first. Handle
// entries, and socket entries under Wine (whose WSADuplicateSocketW pushes a handle too).
import assert from 'node:assert/strict';
import { closeSync, openSync } from 'node:fs';
import { test } from 'node:test';
import { file } from './channel-helpers.mjs';
import { endSeenBy, expectNoHandleLeak, fdpass, wineVersion } from './helpers.mjs';

const { Channel } = fdpass;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** More than a loopback connection's buffers hold: its send stays pending while the peer does not read. */
const BIGGER_THAN_THE_SOCKET = 64 * 1024 * 1024;

/**
 * A pair whose receiver has stopped reading (its fd budget is full) and whose sender has a
 * record with `fds` queued behind one the socket cannot take: that record is not written at
 * all. `end(a, b)` closes or breaks the channel; the queued send must reject, and once both
 * channels are closed nothing pushed stays in the receiver (this process).
 */
async function queuedBehindAFullSocket(fds, end) {
  const [a, b] = Channel.pair('stream', { maxBufferedFds: 1 });
  const [first, firstPeer] = fdpass.socketpair();
  await a.send({ data: 'fills the budget', fds: [firstPeer] }, { close: true });
  // b reads it, and stops reading.
  for (let waited = 0; b.bufferedFds < 1 && waited < 2000; waited += 20) await sleep(20);
  assert.equal(b.bufferedFds, 1);
  // Each send's outcome, held from the start (both reject, later).
  const outcome = (promise) =>
    promise.then(
      () => 'sent',
      (error) => error,
    );
  const big = outcome(a.send({ data: Buffer.alloc(BIGGER_THAN_THE_SOCKET) }));
  const queued = outcome(a.send({ data: 'never written', fds }, { close: true }));
  const bigSent = await Promise.race([big, sleep(100)]);
  assert.notEqual(bigSent, 'sent', 'the socket took the whole big record: nothing is left queued');
  const expected = await end(a, b);
  await assert.rejects(Promise.reject(await big), expected);
  await assert.rejects(Promise.reject(await queued), expected);
  await a.close();
  await b.close();
  closeSync(first);
}

const ways = [
  ['closes', async (a) => (await a.close(), { code: 'ERR_FDPASS_CHANNEL_CLOSED' })],
  // The receiver's close resets the connection (it leaves bytes unread): the sender's next write fails.
  [
    'fails (the peer reset the connection)',
    async (a, b) => (await b.close(), (e) => e.code !== 'ERR_FDPASS_CHANNEL_CLOSED' && e.syscall !== undefined),
  ],
];

for (const [how, end] of ways) {
  test(
    `a sender that ${how} before a record with handle entries is written takes them back out of the receiver: no handle leaks`,
    { timeout: 30_000 },
    async () => {
      await expectNoHandleLeak(async () => {
        const fd = openSync(file, 'r');
        const other = openSync(file, 'r');
        await queuedBehindAFullSocket([fd, other], end);
      });
    },
  );

  test(
    `a sender that ${how} before a record with a socket entry is written takes the socket back out of the receiver: its other end sees the end, no handle leaks`,
    {
      timeout: 30_000,
      skip:
        wineVersion === null && 'Windows’ own socket entry names no handle in the receiver: the sender cannot take it back (documented)',
    },
    async () => {
      await expectNoHandleLeak(async () => {
        const [mine, theirs] = fdpass.socketpair();
        const fd = openSync(file, 'r');
        await queuedBehindAFullSocket([fd, theirs], end);
        assert.equal(await endSeenBy(mine), 0, 'the socket pushed into the receiver stayed open there');
        closeSync(mine);
      });
    },
  );
}
