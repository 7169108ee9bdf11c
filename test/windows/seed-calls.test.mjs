// send()/recv() on Windows within one process: IO::FDPass's record over fdpass's socketpair.
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { expectNoHandleLeak, fdpass } from './helpers.mjs';

const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-seed-'));

function readAll(fd) {
  const buffer = Buffer.alloc(64);
  return buffer.toString('utf8', 0, readSync(fd, buffer, 0, 64, 0));
}

test('a file sent over a socketpair arrives as a new fd that reads the file, and no handle leaks', async () => {
  const file = path.join(dir, 'hello.txt');
  writeFileSync(file, 'hello from a file');
  await expectNoHandleLeak(() => {
    const [a, b] = fdpass.socketpair();
    fdpass.setBlocking(b, true);
    const fd = openSync(file, 'r');
    assert.equal(fdpass.send(a, fd), true, String(fdpass.lastError()));
    const received = fdpass.recv(b);
    assert.ok(received >= 0, String(fdpass.lastError()));
    assert.notEqual(received, fd);
    closeSync(fd); // the received fd has a handle of its own
    assert.equal(readAll(received), 'hello from a file');
    closeSync(received);
    closeSync(a);
    closeSync(b);
  });
});
