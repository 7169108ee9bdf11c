// Who may push into whom (lib/win/verify-peer.ts): a Windows channel takes the handle values a
// peer sends only if that peer proved it may push into this process (its challenge is a handle
// here). A peer that did not can only name handles this process already has: they are refused,
// neither taken nor closed. A process that may not open its peer (a more privileged one, here
// a child given an empty DACL) still sends it handles; the other way only data goes.
import assert from 'node:assert/strict';
import { closeSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { test } from 'node:test';
import { childFile, file, readFd, win } from './channel-helpers.mjs';
import { cPeer, expectNoHandleLeak, fdpass, readBytes, recvFromFd, root, runNode, runProcess, windowsBinding } from './helpers.mjs';

const require = createRequire(import.meta.url);
const { Channel } = fdpass;
const { encodeHello, HELLO_BYTES } = require(path.join(root, 'dist', 'win', 'handshake.js'));
const { encodeVerifyMessage, VERIFY_MESSAGE_BYTES, SECTION_BYTES } = require(path.join(root, 'dist', 'win', 'verify-peer.js'));
const { encodeRecord } = require(path.join(root, 'dist', 'win', 'records.js'));
const [CLAIM, CHALLENGE, ANSWER] = [1, 2, 3];

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A raw end: a transport socket (win.send/recv) or a Node fd (windowsBinding.sendAll/recv). */
const transportEnd = (sock) => ({
  send: (bytes) => assert.equal(win.send(sock, bytes, 0, bytes.length), bytes.length),
  recv: (buffer, offset, length) => win.recv(sock, buffer, offset, length),
});
const fdEnd = (fd) => ({
  send: (bytes) => assert.equal(windowsBinding.sendAll(fd, bytes), bytes.length),
  recv: recvFromFd(fd),
});

/**
 * Plays a peer that claims this process truthfully and answers the channel's challenge, but
 * pushes no challenge of its own (value 0): the channel verifies it, yet must take no handle
 * value from it.
 */
async function verifyWithoutPushing(end) {
  end.send(encodeVerifyMessage(CLAIM, process.pid));
  end.send(encodeVerifyMessage(CHALLENGE, 0));
  const got = await readBytes(end.recv, 2 * VERIFY_MESSAGE_BYTES);
  assert.equal(got[5], CLAIM);
  assert.equal(got[VERIFY_MESSAGE_BYTES + 5], CHALLENGE);
  const section = Buffer.alloc(SECTION_BYTES);
  assert.equal(win.readChallenge(Number(got.readBigUInt64LE(VERIFY_MESSAGE_BYTES + 8)), section), 0);
  end.send(encodeVerifyMessage(ANSWER, 0, section.subarray(32, 64)));
  const answer = await readBytes(end.recv, VERIFY_MESSAGE_BYTES);
  assert.equal(answer[5], ANSWER);
  assert.ok(
    answer.subarray(16, 48).every((byte) => byte === 0),
    'an answer to a challenge never made',
  );
}

/** A record naming `value` as a pushed handle, with data. */
function recordNaming(value, data) {
  const entry = new Uint8Array(win.HANDLE_ENTRY_BYTES);
  const view = new DataView(entry.buffer);
  view.setUint32(0, win.KIND_HANDLE, true);
  view.setBigUint64(4, BigInt(value), true);
  return encodeRecord([entry], Buffer.from(data));
}

/**
 * The channel gets a record naming a handle this process holds outside any Node fd and outside
 * the transport (a section, as libuv's and Node's own handles are neither): it refuses the
 * message and leaves the handle open. (Before the rule, an offer's channel took it as an fd.)
 * Then data still goes both ways, and the channel sends this peer handles.
 */
async function expectOwnHandleRefused(channel, end) {
  const self = win.openProcess(process.pid);
  const content = Buffer.alloc(SECTION_BYTES, 7);
  const own = win.pushChallenge(self, content);
  assert.ok(own > 0);
  end.send(recordNaming(own, 'naming a handle of yours'));
  await assert.rejects(channel.recv(), (error) => {
    assert.equal(error.code, 'ERR_FDPASS_BAD_MESSAGE');
    assert.match(error.message, /did not prove it may push/);
    return true;
  });
  const read = Buffer.alloc(SECTION_BYTES);
  assert.equal(win.readChallenge(own, read), 0, 'the handle it named was closed under its owner');
  assert.deepEqual(read, content);
  assert.equal(win.unpush(self, own), 0);
  assert.equal(win.closeProcess(self), 0);
  end.send(encodeRecord([], Buffer.from('data still goes')));
  assert.equal((await channel.recv()).data.toString(), 'data still goes');
  const fd = openSync(file, 'r');
  await channel.send({ data: 'to a verified peer', fds: [fd] }, { close: true });
  const record = await readBytes(end.recv, 8 + win.HANDLE_ENTRY_BYTES + 'to a verified peer'.length);
  const pushed = Number(record.readBigUInt64LE(8 + 4));
  assert.equal(win.discardHandle(pushed), 0, 'the pushed handle was not ours to close');
}

test('an offer: a peer that pushes no challenge cannot make the channel take or close a handle of this process', async () => {
  await expectNoHandleLeak(async () => {
    const offer = Channel.offer();
    const [, , port, tokenHex] = offer.address.split(':');
    const accepting = offer.accept({ handshakeTimeout: 5000 });
    const sock = win.connect(Number(port));
    assert.ok(sock > 0);
    const end = transportEnd(sock);
    end.send(encodeHello(Buffer.from(tokenHex, 'hex')));
    await readBytes(end.recv, HELLO_BYTES);
    await verifyWithoutPushing(end);
    const channel = await accepting;
    assert.equal(channel.peer.pid, process.pid);
    await expectOwnHandleRefused(channel, end);
    await channel.close();
    win.closeSocket(sock);
  });
});

test('new Channel(fd): a peer that pushes no challenge cannot make the channel take or close a handle of this process', async () => {
  await expectNoHandleLeak(async () => {
    const [x, y] = fdpass.socketpair();
    const channel = new Channel(x);
    const end = fdEnd(y);
    await verifyWithoutPushing(end);
    await expectOwnHandleRefused(channel, end);
    await channel.close();
    closeSync(y);
  });
});

test('a child this process may not open: it sends files here; here only data goes there (EPERM from OpenProcess for fds); no handle leak in either', async () => {
  await expectNoHandleLeak(async () => {
    const offer = Channel.offer();
    const { child, done } = runNode('locked-peer.mjs', [offer.address, childFile]);
    await new Promise((resolve) => child.stdout.on('data', (chunk) => String(chunk).includes('ready') && resolve()));
    const lock = await runProcess(cPeer, ['lock-process', String(child.pid)]).done;
    assert.equal(lock.stdout.trim(), 'locked', lock.stdout + lock.stderr);
    child.stdin.write('go\n');
    const channel = await offer.accept({ handshakeTimeout: 10_000 });
    assert.equal(channel.peer.pid, 0, 'a peer this process may not open was reported as verified');
    const message = await channel.recv();
    assert.equal(message.data.toString(), 'from the locked child');
    assert.equal(readFd(message.fd), 'a file the child opened');
    message.close();
    const fd = openSync(file, 'r');
    await assert.rejects(channel.send({ data: 'with a file', fds: [fd] }), { code: 'EPERM', syscall: 'OpenProcess' });
    assert.equal(readFd(fd), 'hello from a file', 'the refused send closed the caller’s fd');
    closeSync(fd);
    await channel.send({ data: 'only data' });
    await channel.close();
    const { code, stdout, stderr } = await done;
    await sleep(50);
    assert.equal(code, 0, stderr);
    const result = JSON.parse(stdout.trim().split('\n').pop());
    assert.equal(result.peer, process.pid, 'the locked child could not verify this process');
    assert.equal(result.data, 'only data');
    assert.equal(result.fds, 0);
    assert.ok(['EOF', 'ERR_FDPASS_CHANNEL_CLOSED'].includes(result.end), result.end);
    assert.equal(result.handlesAfter, result.handlesBefore, `the child leaked handles ${JSON.stringify(result)}`);
  });
});
