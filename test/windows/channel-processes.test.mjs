// The Channel on Windows between two node.exe processes (Channel.offer() / Channel.connectTo()):
// handles both ways, a receiver that dies, the offer's intruders, both processes' handle counts.
import assert from 'node:assert/strict';
import { closeSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { test } from 'node:test';
import { childFile, file, pipe, readFd, readPipe, win } from './channel-helpers.mjs';
import { expectNoHandleLeak, fdpass, root, runNode } from './helpers.mjs';

const require = createRequire(import.meta.url);
const { Channel } = fdpass;
const { encodeHello } = require(path.join(root, 'dist', 'win', 'handshake.js'));
const { encodeVerifyMessage } = require(path.join(root, 'dist', 'win', 'verify-peer.js'));

/** The child's exit, once libuv has also closed the child's process handle and pipes. */
async function exited(done) {
  const result = await done;
  await new Promise((resolve) => setTimeout(resolve, 50));
  return result;
}

/** The offer's channel to the child, or a failure saying why if the child exits first. */
function acceptFrom(offer, done, options) {
  return untilAccepted(offer.accept(options), offer, done);
}

/** accepting (an offer.accept() under way), or why not if the child exits first. */
function untilAccepted(accepting, offer, done) {
  let accepted = false;
  let exitedFirst;
  void done.then(({ code, stderr }) => {
    if (accepted) return;
    exitedFirst = new Error(
      `the child exited (code ${code}) before the offer accepted it: ${stderr}; turned away: ${JSON.stringify(offer.rejected)}`,
    );
    offer.close();
  });
  return accepting.then(
    (channel) => {
      accepted = true;
      return channel;
    },
    (error) => {
      throw exitedFirst ?? error;
    },
  );
}

test('two processes: files and pipes both ways, used on the far side; for await in the child; no handle leak in either', async () => {
  await expectNoHandleLeak(async () => {
    const offer = Channel.offer();
    const { done } = runNode('channel-peer.mjs', [offer.address, 'echo', childFile]);
    const channel = await acceptFrom(offer, done);
    const fd = openSync(file, 'r');
    const [r, w] = pipe();
    await channel.send({ data: 'from the parent', fds: [fd, w] });
    closeSync(fd);
    closeSync(w);
    const back = await channel.recv();
    assert.equal(back.data.toString(), 'from the child');
    assert.equal(readFd(back.fd), 'a file the child opened');
    back.close();
    assert.equal(readPipe(r), 'written by the child');
    closeSync(r);
    const many = Array.from({ length: 50 }, () => openSync(file, 'r'));
    await channel.send({ fds: many });
    await channel.send({ fds: many.slice(0, 7), data: 'more' });
    for (const m of many) closeSync(m);
    await channel.close();
    const { code, stdout, stderr } = await exited(done);
    assert.equal(code, 0, stderr);
    const result = JSON.parse(stdout.trim().split('\n').pop());
    assert.equal(result.data, 'from the parent');
    assert.equal(result.file, 'hello from a file');
    assert.equal(result.peer, process.pid);
    assert.equal(result.iterated, 57);
    assert.equal(result.handlesAfter, result.handlesBefore, 'the child leaked handles');
  });
});

test('two processes: a receiver that dies before reading: the sender ends cleanly and keeps no handle', async () => {
  await expectNoHandleLeak(async () => {
    const offer = Channel.offer();
    const { done } = runNode('channel-peer.mjs', [offer.address, 'exit-at-once']);
    const channel = await acceptFrom(offer, done);
    await exited(done);
    const fd = openSync(file, 'r');
    // Either the push (the process is gone) or the write (the connection is gone) fails, or the
    // record goes into a socket nobody reads; the channel then ends.
    const sends = [];
    for (let i = 0; i < 3; i++) sends.push(channel.send({ data: 'to nobody', fds: [fd] }).catch((e) => e));
    await Promise.all(sends);
    closeSync(fd);
    await channel.recv().then(
      () => assert.fail('a message from a dead process'),
      (e) => assert.ok(['EOF', 'ERR_FDPASS_CHANNEL_CLOSED'].includes(e.code), e.code),
    );
    await channel.close();
  });
});

test('the offer turns intruders away (no token, a pid it cannot prove, not the expected process) and accepts the real peer', async () => {
  const offer = Channel.offer();
  const [, , port, tokenHex] = offer.address.split(':');
  const token = Buffer.from(tokenHex, 'hex');
  const accepting = offer.accept({ handshakeTimeout: 2000 });
  const intruders = [];
  const connectWith = (hello) => {
    const sock = win.connect(Number(port));
    assert.ok(sock > 0);
    if (hello) assert.equal(win.send(sock, hello, 0, hello.length), hello.length);
    intruders.push(sock);
  };
  connectWith(encodeHello(Buffer.alloc(16))); // a wrong token
  // The token, then a claim of a process that does not exist (channel-over-fd.test.mjs has
  // liars that claim real ones).
  connectWith(Buffer.concat([encodeHello(token), encodeVerifyMessage(1, 0xffff_fff0)]));
  connectWith(Buffer.from('GET / HTTP/1.0\r\n\r\n0123456789abcd')); // not a hello at all
  await new Promise((resolve) => setTimeout(resolve, 200));
  const { done } = runNode('channel-peer.mjs', [offer.address, 'plain']);
  const channel = await untilAccepted(accepting, offer, done);
  assert.notEqual(channel.peer.pid, process.pid);
  assert.equal(offer.rejected.length, 3, JSON.stringify(offer.rejected));
  assert.ok(offer.rejected.some((r) => /wrong token/.test(r.reason)));
  assert.ok(
    offer.rejected.some((r) => /claimed process 4294967280/.test(r.reason)),
    JSON.stringify(offer.rejected),
  );
  await channel.close();
  await done;
  for (const sock of intruders) win.closeSocket(sock);

  // expectPid: the token and a true pid, but not the process the offer waits for.
  const picky = Channel.offer();
  const pickyAccept = picky.accept({ expectPid: 1 << 30, handshakeTimeout: 2000 });
  const connecting = Channel.connectTo(picky.address, { handshakeTimeout: 500 });
  await assert.rejects(connecting);
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.match(picky.rejected[0]?.reason ?? '', /not the expected/);
  picky.close();
  await assert.rejects(pickyAccept, { code: 'ERR_FDPASS_HANDOVER_FAILED' });
});
