// What the Windows Channel tests share: files to pass, a pipe (Node makes none on Windows),
// and reads that say what came through an fd.
import assert from 'node:assert/strict';
import { mkdtempSync, readSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { windowsBinding } from './helpers.mjs';

export const win = windowsBinding.winChannel;
export const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-channel-'));
export const file = path.join(dir, 'hello.txt');
writeFileSync(file, 'hello from a file');
export const childFile = path.join(dir, 'child.txt');
writeFileSync(childFile, 'a file the child opened');

export function readFd(fd) {
  const buffer = Buffer.alloc(256);
  return buffer.toString('utf8', 0, readSync(fd, buffer, 0, 256, 0));
}

export function pipe() {
  const out = new Int32Array(2);
  assert.equal(win.pipe(out), 0);
  return [out[0], out[1]];
}

export function readPipe(fd) {
  const buffer = Buffer.alloc(256);
  return buffer.toString('utf8', 0, readSync(fd, buffer, 0, 256, null));
}
