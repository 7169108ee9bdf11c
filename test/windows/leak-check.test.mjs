// The handle-leak check itself (helpers.mjs expectNoHandleLeak): it must fail for what fn
// leaks, and tell that from what is made once on the system's own time.
import assert from 'node:assert/strict';
import { closeSync, openSync } from 'node:fs';
import { test } from 'node:test';
import { file } from './channel-helpers.mjs';
import { expectNoHandleLeak } from './helpers.mjs';

test('the leak check fails for a handle every run leaves open', async () => {
  const leaked = [];
  await assert.rejects(
    expectNoHandleLeak(() => void leaked.push(openSync(file, 'r'))),
    /1 handle\(s\) leaked per run; open after the first counted run and not before: \d+ \(File\)/,
  );
  for (const fd of leaked) closeSync(fd);
});

test('the leak check fails for a handle fn closed that was open before it', async () => {
  const spare = Array.from({ length: 3 }, () => openSync(file, 'r'));
  await assert.rejects(
    expectNoHandleLeak(() => {
      const fd = spare.pop();
      if (fd !== undefined) closeSync(fd);
    }),
    /handles closed that were not fn's/,
  );
  for (const fd of spare) closeSync(fd);
});

test('the leak check passes a handle made once, in the counted run only, and kept (as Wine keeps some)', async () => {
  let runs = 0;
  let once;
  await expectNoHandleLeak(() => {
    if (runs++ === 1) once = openSync(file, 'r');
  });
  assert.equal(runs, 3, 'the count rose, so fn ran once more');
  closeSync(once);
});
