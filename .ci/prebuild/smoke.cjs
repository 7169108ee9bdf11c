// The prebuild smoke test: two processes pass an fd both ways with require('fdpass'), on whatever
// Node runs this file (the prebuilds are tested on Node 20, 22 and the latest, and under qemu).
//   node smoke.cjs <package dir> [the addon file that must be the one loaded]
// FDPASS_SMOKE_CHILD_PREFIX: words put before the child's node, e.g. "qemu-aarch64-static -L
// /usr/aarch64-linux-gnu" (without binfmt_misc the kernel cannot exec an arm64 node itself).
// Exits 0 after one line saying what ran; any failure throws.
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const isChild = process.argv[2] === '--child';
const [packageDir, expectedAddon] = process.argv.slice(isChild ? 3 : 2);
const fdpass = require(path.resolve(packageDir));

// The addon that Node loaded: node-gyp-build requires it, so it is in the module cache.
function loadedAddon() {
  const addons = Object.keys(require.cache).filter((file) => file.endsWith('.node'));
  assert.equal(addons.length, 1, `one addon loaded, not ${JSON.stringify(addons)}`);
  return addons[0];
}

// From the start of the file, as every fd here shares one open file, and so one offset.
function readFromStart(fd) {
  const content = Buffer.alloc(64);
  return content.subarray(0, fs.readSync(fd, content, 0, content.length, 0));
}

// The child: reads the file it receives, then sends back what it read and the fd itself.
async function child() {
  const channel = fdpass.parentChannel();
  const message = await channel.recv();
  const fd = message.take();
  await channel.send({ data: readFromStart(fd), fds: [fd] }, { close: true });
  message.close();
  await channel.close();
}

function openFdCount() {
  return fs.readdirSync('/proc/self/fd').length;
}

async function parent() {
  const started = process.hrtime.bigint();
  const addon = loadedAddon();
  if (expectedAddon !== undefined) assert.equal(addon, path.resolve(expectedAddon), 'the addon loaded');
  const fdsBefore = openFdCount();

  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'fdpass-smoke-'));
  const file = path.join(directory, 'passed');
  const secret = `passed by ${process.pid} on ${process.arch}`;
  fs.writeFileSync(file, secret);
  const fd = fs.openSync(file, 'r');
  fs.rmSync(directory, { recursive: true }); // the child can only read it through the fd

  // IO::FDPass's calls, in this process: a bare fd over a blocking socketpair.
  const [a, b] = fdpass.socketpair();
  fdpass.setBlocking(a, true);
  fdpass.setBlocking(b, true);
  assert.ok(fdpass.send(a, fd), 'send()');
  const copy = fdpass.recv(b);
  assert.ok(copy >= 0, `recv(): ${fdpass.lastError()?.message}`);
  assert.equal(readFromStart(copy).toString(), secret);
  for (const each of [a, b, copy]) fdpass.closeFd(each);

  // A Channel (libuv's poll handle) to a child process and back.
  const prefix = (process.env.FDPASS_SMOKE_CHILD_PREFIX ?? '').split(' ').filter(Boolean);
  const command = [...prefix, process.execPath, process.argv[1], '--child', packageDir];
  const { child: process_, channel } = fdpass.spawnWithChannel(command[0], command.slice(1), { stdio: 'inherit' });
  const exited = new Promise((resolve, reject) => {
    process_.on('error', reject);
    process_.on('exit', (code, signal) => resolve({ code, signal }));
  });
  await channel.send({ data: 'read this', fds: [fd] }, { close: true });
  const reply = await channel.recv({ signal: AbortSignal.timeout(60_000) });
  assert.equal(reply.data.toString(), secret, 'what the child read through the fd');
  assert.equal(reply.fds.length, 1);
  assert.equal(readFromStart(reply.fds[0]).toString(), secret, 'the fd the child sent back');
  reply.close();
  assert.deepEqual(await exited, { code: 0, signal: null }, 'the child exits cleanly');
  await channel.close();

  assert.equal(openFdCount(), fdsBefore, 'open fds before and after');
  const milliseconds = Number(process.hrtime.bigint() - started) / 1e6;
  console.log(`smoke ok: node ${process.version} ${process.arch}, ${addon}, ${milliseconds.toFixed(0)} ms`);
}

(isChild ? child() : parent()).catch((error) => {
  console.error(error);
  process.exit(1);
});
