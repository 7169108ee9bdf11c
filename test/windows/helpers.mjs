// What the Windows tests share: the library under test (dist/), the Windows addon, the
// process's handle count, Wine detection, and real second processes (node.exe, the C peer).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
export const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, '..', '..');
/** fdpass as users load it (dist/, CommonJS). */
export const fdpass = require(path.join(root, 'dist', 'index.js'));
/** The Windows addon's calls (the tests' window on handles and processes). */
export const { windowsBinding } = require(path.join(root, 'dist', 'binding.js'));

/** Wine's version, or null on Windows itself: what Wine cannot show is decided from this. */
export const wineVersion = windowsBinding.wineVersion();

/** node:test's `todo` for what Wine cannot show: a failure there is expected, with the reason. */
export function expectedToFailUnderWine(reason) {
  return wineVersion === null ? false : `Wine ${wineVersion}: ${reason}`;
}

/** The handles this process holds (GetProcessHandleCount). */
export function handleCount() {
  const count = windowsBinding.processHandleCount();
  if (count < 0) throw new Error(`GetProcessHandleCount failed: ${count}`);
  return count;
}

/** The handle count once two reads 100 ms apart agree (2 s at most). */
export async function settledHandleCount() {
  let count = handleCount();
  for (let waited = 0; waited < 2000; waited += 100) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const again = handleCount();
    if (again === count) break;
    count = again;
  }
  return count;
}

/** The handle count, read again for up to 2 s until it is `expected` (under Wine one read can take most of a second). */
export async function handleCountBackTo(expected) {
  let count = handleCount();
  for (const until = Date.now() + 2000; count !== expected && Date.now() < until;) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    count = handleCount();
  }
  return count;
}

/**
 * Checks that fn leaves this process with as many handles as before. fn runs once first,
 * uncounted: the first peer check opens a handle the system keeps (iphlpapi's to its driver),
 * and Node opens some of its own on first use. Node closes a child's process handle and pipes
 * a little after its exit, on its own time: the count is read again, up to 2 s, until it is
 * back; a handle that stays open still fails.
 *
 * A count that stays up is checked with one more run of fn: a leak of fn's grows with every
 * run, and fails. What Wine (or Node) makes once, on its own time, does not: under load, about
 * one run of channel-processes in eight on Node 20 ended with two Event handles made during
 * the counted run and kept for good (60 s and more), one fewer elsewhere, and three of the
 * warm-up's threads still alive when the count began; ten runs in one process after that kept
 * the count where it was.
 */
export async function expectNoHandleLeak(fn) {
  await fn();
  // The warm-up's child may still be releasing its handles (Node closes a finished child's
  // handles a little after 'exit'): count from where they have settled, or they read as -2.
  const before = await settledHandleCount();
  const openBefore = new Set(windowsBinding.openHandles().map(([value]) => value));
  await fn();
  const after = await handleCountBackTo(before);
  if (after === before) return;
  const left = windowsBinding
    .openHandles()
    .filter(([value]) => !openBefore.has(value))
    .map(([value, type]) => `${value} (${type || 'unknown type'})`);
  await fn();
  const again = await handleCountBackTo(after);
  if (again > after || after < before) {
    throw new Error(
      `handle count ${before} before, ${after} after, ${again} after one more run: ` +
        `${again > after ? `${again - after} handle(s) leaked per run` : "handles closed that were not fn's"}; ` +
        `open after the first counted run and not before: ${left.join(', ') || 'none (values were reused)'}`,
    );
  }
}

/** A second node.exe running test/windows/fixtures/<name> with args; resolves its result line. */
export function runNode(name, args = []) {
  return runProcess(process.execPath, [path.join(here, 'fixtures', name), ...args]);
}

/**
 * A child process; resolves { code, stdout, stderr } at exit. Its pipes are Windows pipes
 * inside Wine, which node.exe handles (only a Linux pipe as node.exe's own stdout fails).
 */
export function runProcess(file, args, { onLine } = {}) {
  const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], windowsHide: true });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk) => {
    stdout += chunk;
    if (onLine) for (const line of chunk.split(/\r?\n/)) if (line) onLine(line, child);
  });
  child.stderr.setEncoding('utf8').on('data', (chunk) => (stderr += chunk));
  const done = new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr })); // after stdout's last bytes, unlike 'exit'
  });
  return { child, done };
}

/** The C peer (test/windows/peer.c, built by .ci/windows/build). */
export const cPeer = path.join(root, 'build', 'windows-test', 'fdpass-peer.exe');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A loopback listener for a second process: { listener, port }. */
export function listenLoopback() {
  const listener = windowsBinding.listenLoopback(0);
  if (listener < 0) throw new Error(`listenLoopback failed: ${listener}`);
  windowsBinding.setNonBlocking(listener, true);
  return { listener, port: windowsBinding.localPort(listener) };
}

/** The first connection to listener, as a blocking socket fd; fails after ms. */
export async function acceptWithin(listener, ms = 20_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const fd = windowsBinding.accept(listener);
    if (fd >= 0) {
      fdpass.setBlocking(fd, true);
      return fd;
    }
    if (Date.now() > deadline) throw new Error(`no connection within ${ms} ms (${fd})`);
    await sleep(20);
  }
}

/**
 * A socketpair whose `a` end has sent `b` an IO::FDPass record naming a private copy of a
 * handle to `file`, after one byte `a` never reads (so closing `a` resets `b`). The caller
 * owns `a`, `b` and, until something pulls it, `copy`.
 */
export async function recordOnResettablePair(file) {
  const [a, b] = fdpass.socketpair();
  const fd = openSync(file, 'r');
  const copy = windowsBinding.duplicateOwnHandle(fd);
  closeSync(fd);
  assert.equal(typeof copy, 'bigint', `duplicateOwnHandle: ${copy}`);
  const record = new Uint8Array(12);
  new DataView(record.buffer).setUint32(0, process.pid, true);
  new DataView(record.buffer).setBigUint64(4, copy, true);
  assert.equal(windowsBinding.sendAll(b, Uint8Array.of(1)), 1);
  assert.equal(windowsBinding.sendAll(a, record), 12);
  await new Promise((resolve) => setTimeout(resolve, 50));
  return { a, b, copy };
}

/** A recv for readBytes from a non-blocking socket that is a Node fd. */
export const recvFromFd = (fd) => (buffer, offset, length) => windowsBinding.recv(fd, buffer, offset, length);

/** Reads exactly n bytes through recv(buffer, offset, length) (-err, or EAGAIN's, while none waits), within ms. */
export async function readBytes(recv, n, ms = 10_000) {
  const buffer = Buffer.alloc(n);
  let have = 0;
  for (const deadline = Date.now() + ms; have < n;) {
    const got = recv(buffer, have, n - have);
    if (got > 0) have += got;
    else if (got === 0) throw new Error(`the connection closed after ${have} of ${n} bytes`);
    else if (Date.now() > deadline) throw new Error(`only ${have} of ${n} bytes within ${ms} ms (${got})`);
    else await sleep(5);
  }
  return buffer;
}

/** What the other end of `mine` sees once every handle to it is closed: 0 (end of stream), or EAGAIN while one stays open. */
export async function endSeenBy(mine) {
  const buffer = Buffer.alloc(16);
  let n;
  for (let tries = 0; tries < 40; tries++) {
    n = windowsBinding.recv(mine, buffer, 0, 16);
    if (n >= 0) return n;
    await sleep(25);
  }
  return n;
}
