// Every example runs as documented and does what it says.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';
import { root } from './helpers.js';

const run = promisify(execFile);
const tsx = path.join(root, 'node_modules', '.bin', 'tsx');

it('examples/pass-file.ts: the child reads and writes through the file and answers the TCP client', async () => {
  const { stdout, stderr } = await run(tsx, [path.join(root, 'examples', 'pass-file.ts')], { cwd: root, timeout: 60_000 });
  expect(stderr).toBe('');
  expect(stdout).toMatch(/child \d+: read "written by the parent\\n" through the received fd/);
  expect(stdout).toMatch(/the TCP client got: "child (\d+) answering on the connection the parent accepted"/);
  expect(stdout).toMatch(/\| appended by the child, pid \d+/);
});
