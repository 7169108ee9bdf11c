// new Channel(fd) on Windows: a channel over a connected socket the caller has, whose peers
// prove their process ids to each other (lib/win/verify-peer.ts) before anything is pushed:
// in one process, between two node.exe processes, and against liars, whose claimed process
// keeps nothing.
import assert from 'node:assert/strict';
import { closeSync, fstatSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { test } from 'node:test';
import { childFile, file, pipe, readFd, readPipe } from './channel-helpers.mjs';
import {
  acceptWithin,
  expectNoHandleLeak,
  fdpass,
  listenLoopback,
  readBytes,
  recvFromFd,
  root,
  runNode,
  windowsBinding,
} from './helpers.mjs';

const require = createRequire(import.meta.url);
const { Channel } = fdpass;
const { encodeVerifyMessage, encodeSection, VERIFY_MESSAGE_BYTES, ADDRESSES_BYTES } = require(
  path.join(root, 'dist', 'win', 'verify-peer.js'),
);
const win = windowsBinding.winChannel;
const [CLAIM, CHALLENGE, ANSWER] = [1, 2, 3];

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function isClosed(fd) {
  try {
    fstatSync(fd);
    return false;
  } catch (error) {
    return error.code === 'EBADF';
  }
}

test('one process: two new Channel(fd) over socketpair() ends verify each other; files and pipes both ways; sends made at once wait for it; close closes the fd; no handle leak', async () => {
  await expectNoHandleLeak(async () => {
    const [x, y] = fdpass.socketpair();
    const a = new Channel(x);
    const b = new Channel(y);
    assert.ok(a instanceof Channel && b instanceof Channel);
    assert.equal(a.fd, x);
    const fd = openSync(file, 'r');
    const [r, w] = pipe();
    // Sent before either side is verified: pushed once it is.
    const sent = a.send({ data: 'over an fd', fds: [fd, w] });
    assert.equal(a.peer.pid, 0, 'the peer is verified only later');
    await sent;
    closeSync(fd);
    closeSync(w);
    const message = await b.recv();
    assert.equal(message.data.toString(), 'over an fd');
    assert.equal(readFd(message.fds[0]), 'hello from a file');
    const { writeSync } = await import('node:fs');
    writeSync(message.fds[1], 'through the pushed pipe');
    message.close();
    assert.equal(readPipe(r), 'through the pushed pipe');
    closeSync(r);
    await b.send({ data: 'back', fds: [openSync(file, 'r')] }, { close: true });
    const back = await a.recv();
    assert.equal(readFd(back.fd), 'hello from a file');
    back.close();
    assert.equal(a.peer.pid, process.pid);
    assert.equal(b.peer.pid, process.pid);
    await a.close();
    await b.close();
    assert.ok(isClosed(x) && isClosed(y), 'the channels left their fds open');
  });
});

test('new Channel(fd) refuses what is not a connected stream socket, and the fd stays the caller’s', async () => {
  const fd = openSync(file, 'r');
  assert.throws(() => new Channel(fd), { code: 'ENOTSOCK', syscall: 'getsockopt' });
  assert.equal(readFd(fd), 'hello from a file', 'the refused fd was touched');
  closeSync(fd);
  assert.throws(() => new Channel(fd), { code: 'EBADF' });
  const { listener } = listenLoopback();
  assert.throws(() => new Channel(listener), { code: 'ENOTCONN', syscall: 'getpeername' });
  closeSync(listener);
  assert.throws(() => new Channel(-1), { code: 'ERR_OUT_OF_RANGE' });
  const [x, y] = fdpass.socketpair();
  assert.throws(() => new Channel(x, { handshakeTimeout: 0 }), { code: 'ERR_OUT_OF_RANGE' });
  assert.ok(!isClosed(x));
  closeSync(x);
  closeSync(y);
});

/** The child's exit, once libuv has also closed the child's process handle and pipes. */
async function exited(done) {
  const result = await done;
  await sleep(50);
  return result;
}

test('two node.exe processes: new Channel(fd) on each end of a loopback connection; each verifies the other; files and pipes both ways; no handle leak in either', async () => {
  await expectNoHandleLeak(async () => {
    const { listener, port } = listenLoopback();
    const { child, done } = runNode('over-fd-peer.mjs', ['peer', String(port), childFile]);
    const fd = await acceptWithin(listener);
    closeSync(listener);
    const channel = new Channel(fd);
    const sent = openSync(file, 'r');
    const [r, w] = pipe();
    await channel.send({ data: 'from the parent', fds: [sent, w] }, { close: true });
    const back = await channel.recv();
    assert.equal(channel.peer.pid, child.pid);
    assert.equal(back.data.toString(), 'from the child');
    assert.equal(readFd(back.fd), 'a file the child opened');
    back.close();
    assert.equal(readPipe(r), 'written by the child');
    closeSync(r);
    await channel.close();
    const { code, stdout, stderr } = await exited(done);
    assert.equal(code, 0, stderr);
    const result = JSON.parse(stdout.trim().split('\n').pop());
    assert.equal(result.peer, process.pid);
    assert.equal(result.data, 'from the parent');
    assert.equal(result.file, 'hello from a file');
    assert.equal(result.handlesAfter, result.handlesBefore, `the child leaked handles ${JSON.stringify(result)}`);
  });
});

/** A process liars name: a node.exe that reports its handle count when asked. */
function startBystander() {
  const waiting = [];
  const { child, done } = runNode('over-fd-peer.mjs', ['bystander']);
  const lines = [];
  child.stdout.on('data', (chunk) => {
    for (const line of String(chunk).split(/\r?\n/)) if (line) lines.push(Number(line));
    while (lines.length > 0 && waiting.length > 0) waiting.shift()(lines.shift());
  });
  const next = () => new Promise((resolve) => (lines.length > 0 ? resolve(lines.shift()) : waiting.push(resolve)));
  return {
    pid: child.pid,
    /** Its count once reading stdin has made what it makes: two answers alike. */
    async settled() {
      let count = await next();
      for (let again = await this.handles(); again !== count; again = await this.handles()) count = again;
      return count;
    },
    handles() {
      child.stdin.write('count\n');
      return next();
    },
    async stop() {
      child.stdin.end();
      await done;
    },
  };
}

/**
 * A liar at the raw end `liar` of a socketpair whose other end is a new Channel(fd): claims
 * process `pid`, reads the channel's claim and challenge, and returns the challenge's value.
 */
async function lie(liar, pid) {
  assert.equal(windowsBinding.sendAll(liar, encodeVerifyMessage(CLAIM, pid)), VERIFY_MESSAGE_BYTES);
  const got = await readBytes(recvFromFd(liar), 2 * VERIFY_MESSAGE_BYTES);
  assert.equal(got[5], CLAIM);
  assert.equal(got.readUInt32LE(8), process.pid);
  assert.equal(got[VERIFY_MESSAGE_BYTES + 5], CHALLENGE);
  return Number(got.readBigUInt64LE(VERIFY_MESSAGE_BYTES + 8));
}

test('a peer that claims a third process is refused before anything is pushed; the third process holds the read-only challenge only while it is pending, and nothing after', async () => {
  const bystander = startBystander();
  const base = await bystander.settled();
  try {
    await expectNoHandleLeak(async () => {
      const [x, liar] = fdpass.socketpair();
      const channel = new Channel(x);
      const fd = openSync(file, 'r');
      const sending = channel.send({ data: 'for the verified peer only', fds: [fd] });
      assert.ok((await lie(liar, bystander.pid)) > 0);
      assert.equal(await bystander.handles(), base + 1, 'the challenge is not in the claimed process');
      // The liar passes the channel's own test (a well-formed challenge of its own, for this
      // connection) but cannot read the secret in the bystander: it answers with a guess.
      const addresses = new Uint8Array(ADDRESSES_BYTES);
      assert.ok(win.socketOfFd(liar, addresses) > 0);
      const own = win.openProcess(process.pid);
      const mine = win.pushChallenge(own, encodeSection(bystander.pid, process.pid, addresses, Buffer.alloc(32, 7)));
      assert.ok(mine > 0);
      assert.equal(windowsBinding.sendAll(liar, encodeVerifyMessage(CHALLENGE, mine)), VERIFY_MESSAGE_BYTES);
      const answer = await readBytes(recvFromFd(liar), VERIFY_MESSAGE_BYTES);
      assert.equal(answer[5], ANSWER, 'the channel did not answer a well-formed challenge');
      assert.equal(windowsBinding.sendAll(liar, encodeVerifyMessage(ANSWER, 0, Buffer.alloc(32, 1))), VERIFY_MESSAGE_BYTES);
      await assert.rejects(channel.recv(), {
        code: 'ERR_FDPASS_PEER_UNVERIFIED',
        message: new RegExp(`did not prove that it is process ${bystander.pid}`),
      });
      await assert.rejects(
        sending,
        (error) => error.code === 'ERR_FDPASS_CHANNEL_CLOSED' && error.cause?.code === 'ERR_FDPASS_PEER_UNVERIFIED',
      );
      assert.equal(win.unpush(own, mine), 0);
      win.closeProcess(own);
      closeSync(fd);
      await sleep(50);
      assert.ok(channel.closed && isClosed(x), 'the refused channel did not close its fd');
      assert.equal(await bystander.handles(), base, 'the claimed process kept a handle');
      closeSync(liar);
    });
  } finally {
    await bystander.stop();
  }
});

test('liars that reflect our own challenge, claim pid 0, send garbage or fall silent are refused; the claimed process keeps nothing', async () => {
  const bystander = startBystander();
  const base = await bystander.settled();
  try {
    await expectNoHandleLeak(async () => {
      // Reflection: claims this very process and sends back the challenge the channel pushed.
      let [x, liar] = fdpass.socketpair();
      let channel = new Channel(x);
      const value = await lie(liar, process.pid);
      assert.equal(windowsBinding.sendAll(liar, encodeVerifyMessage(CHALLENGE, value)), VERIFY_MESSAGE_BYTES);
      await assert.rejects(channel.recv(), { code: 'ERR_FDPASS_PEER_UNVERIFIED', message: /another connection/ });
      closeSync(liar);

      [x, liar] = fdpass.socketpair();
      channel = new Channel(x);
      assert.equal(windowsBinding.sendAll(liar, encodeVerifyMessage(CLAIM, 0)), VERIFY_MESSAGE_BYTES);
      await assert.rejects(channel.recv(), { code: 'ERR_FDPASS_PEER_UNVERIFIED', message: /claimed process id 0/ });
      closeSync(liar);

      [x, liar] = fdpass.socketpair();
      channel = new Channel(x);
      assert.equal(windowsBinding.sendAll(liar, Buffer.alloc(VERIFY_MESSAGE_BYTES, 0x41)), VERIFY_MESSAGE_BYTES);
      await assert.rejects(channel.recv(), { code: 'ERR_FDPASS_PEER_UNVERIFIED', message: /no fdpass Windows verification message/ });
      closeSync(liar);

      // Silent after its claim: the channel gives up at handshakeTimeout and removes its challenge.
      [x, liar] = fdpass.socketpair();
      channel = new Channel(x, { handshakeTimeout: 2000 });
      const gaveUp = assert.rejects(channel.recv(), { code: 'ERR_FDPASS_HANDOVER_TIMEOUT', message: /no challenge within/ });
      await lie(liar, bystander.pid);
      assert.equal(await bystander.handles(), base + 1);
      await gaveUp;
      assert.equal(await bystander.handles(), base, 'the claimed process kept the challenge');
      closeSync(liar);

      // Closed by its owner while the liar is silent: the challenge goes too.
      [x, liar] = fdpass.socketpair();
      channel = new Channel(x);
      await lie(liar, bystander.pid);
      await channel.close();
      await sleep(20);
      assert.equal(await bystander.handles(), base, 'close() left the challenge in the claimed process');
      closeSync(liar);
    });
  } finally {
    await bystander.stop();
  }
});
