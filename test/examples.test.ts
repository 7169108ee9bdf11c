// Every example runs as documented and does what it says.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it, type TestContext } from 'vitest';
import { copyForAnyUser, envForAnyUser, root } from './helpers.js';

/**
 * Runs an example; when it fails, the error carries what it printed, which says why. It runs
 * in a process group of its own, so that a timeout ends the processes it started too, not
 * only tsx, and none outlives the test.
 */
async function run(
  file: string,
  args: string[],
  options: { cwd: string; env?: NodeJS.ProcessEnv; timeout: number },
): Promise<{ stdout: string; stderr: string }> {
  const { timeout, ...rest } = options;
  // execFile passes no `detached` on to spawn: hence spawn, and the output gathered here.
  const child = spawn(file, args, { ...rest, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(child.pid!);
  }, timeout);
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  clearTimeout(timer);
  killGroup(child.pid!);
  if (code === 0) return { stdout, stderr };
  throw new Error(
    `Command failed: ${[file, ...args].join(' ')}\n${stderr}\n(exit code ${String(code ?? signal)}${timedOut ? ', killed by the timeout' : ''}) stdout:\n${stdout}`,
  );
}

function killGroup(group: number): void {
  try {
    process.kill(-group, 'SIGKILL');
  } catch {
    // ESRCH: the group is gone already.
  }
}
const tsx = path.join(root, 'node_modules', '.bin', 'tsx');

it('examples/pass-file.ts: the child reads and writes through the file and answers the TCP client', async () => {
  const { stdout, stderr } = await run(tsx, [path.join(root, 'examples', 'pass-file.ts')], { cwd: root, timeout: 60_000 });
  expect(stderr).toBe('');
  expect(stdout).toMatch(/child \d+: read "written by the parent\\n" through the received fd/);
  expect(stdout).toMatch(/the TCP client got: "child (\d+) answering on the connection the parent accepted"/);
  expect(stdout).toMatch(/\| appended by the child, pid \d+/);
});

it('examples/fd-broker.ts: a client gets a file and a listening TCP socket from the broker, and an error for a missing file', async () => {
  const { stdout, stderr } = await run(tsx, [path.join(root, 'examples', 'fd-broker.ts')], { cwd: root, timeout: 60_000 });
  expect(stderr).toBe('');
  const client = /client (\d+): connected to broker pid (\d+)/.exec(stdout);
  expect(client).not.toBeNull();
  expect(stdout).toMatch(/broker (\d+): listening/);
  expect(stdout).toContain(`broker ${client![2]}: listening`);
  expect(stdout).toContain(`broker: client pid ${client![1]} connected`);
  expect(stdout).toContain('client: motd.txt reads "served by the broker\\n"');
  expect(stdout).toContain('client: no-such-file -> {"ok":false,"error":"ENOENT"}');
  expect(stdout).toMatch(new RegExp(`client: port \\d+, bound by the broker, answered "hello from client ${client![1]}"`));
  expect(stdout).toMatch(/broker: closed\n$/);
});

it('examples/zero-downtime-restart.ts: generation 2 takes the socket over under load, generation 1 drains and exits, no request fails', async () => {
  // Three tsx processes start one after another: give a loaded machine room.
  const { stdout, stderr } = await run(tsx, [path.join(root, 'examples', 'zero-downtime-restart.ts')], { cwd: root, timeout: 80_000 });
  expect(stderr).toBe('');
  const first = /generation 1 \(pid (\d+)\): listening on 127\.0\.0\.1:(\d+)/.exec(stdout);
  expect(first).not.toBeNull();
  expect(stdout).toMatch(
    new RegExp(`generation 2 \\(pid \\d+\\): took the socket over from pid ${first![1]}, listening on port ${first![2]}`),
  );
  expect(stdout).toMatch(
    new RegExp(`generation 1 \\(pid ${first![1]}\\): stopped accepting, drained its connections in \\d+ ms, exited with code 0`),
  );
  const requests = /requests: (\d+) answered by generation 1, (\d+) by generation 2, (\d+) failed\n$/.exec(stdout);
  expect(requests).not.toBeNull();
  expect(Number(requests![1])).toBeGreaterThan(0);
  expect(Number(requests![2])).toBeGreaterThan(0);
  expect(Number(requests![3])).toBe(0);
}, 90_000);

it('examples/child-channel.ts: a Python child, a Node child and a worker thread, each started with one call, read the file each was handed', async () => {
  const { stdout, stderr } = await run(tsx, [path.join(root, 'examples', 'child-channel.ts')], { cwd: root, timeout: 60_000 });
  expect(stderr).toBe('');
  const [python, node, thread, ...more] = stdout.trimEnd().split('\n');
  expect(python).toMatch(
    /^python child \d+: read "written for the python child by pid \d+\\n" through fd \d+ \(its channel: fd 3, FDPASS_CHANNEL_FD=3, blocking: True\)$/,
  );
  expect(node).toMatch(/^node child \d+: read "written for the node child by pid \d+\\n" through fd \d+ \(its channel: fd 3\)$/);
  expect(thread).toMatch(/^worker thread \d+: read "written for the worker thread by pid \d+\\n" through fd \d+ \(its channel: fd \d+\)$/);
  expect(more).toEqual([]);
  // Each file was written by the one parent.
  expect(new Set([python, node, thread].map((line) => /by pid (\d+)/.exec(line!)?.[1])).size).toBe(1);
});

// The two runs at once: each is mostly tsx starting up. The fallback starts node three times,
// which under npm run test:asan on a busy machine took 31 s: as long as run() allows.
describe.skipIf(process.getuid?.() !== 0)('examples/privilege-separation.ts, as root', { concurrent: true, timeout: 60_000 }, () => {
  // Ports below this one are root's (net.ipv4.ip_unprivileged_port_start).
  const unprivilegedPortStart = Number(readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8'));

  /** Runs the example from a copy of the package, which nobody (the worker's uid) can read or not. */
  async function runFromCopy(readableByNobody: boolean, { expect, onTestFinished }: TestContext): Promise<string> {
    const copy = copyForAnyUser(['examples']);
    onTestFinished(() => rmSync(copy, { recursive: true, force: true }));
    if (!readableByNobody) chmodSync(copy, 0o700);
    const example = path.join(copy, 'examples', 'privilege-separation.ts');
    const { stdout, stderr } = await run(tsx, [example], { cwd: copy, env: envForAnyUser(copy), timeout: 60_000 });
    expect(stderr).toBe('');
    // What it proves, either way: the worker is nobody, cannot open the file or bind the port
    // itself, and serves on that port with the file's content.
    const [, rootPid, port, secret] =
      /root (\d+): bound 127\.0\.0\.1:(\d+) and opened (\S+) \(mode 0600, in a 0700 directory\)/.exec(stdout) ?? [];
    expect(secret).toBeDefined();
    expect(stdout).toMatch(/worker (\d+): runs as Uid 65534 65534 65534 65534, Gid 65534 65534 65534 65534, Groups \(none\)/);
    const bindError = Number(port) < unprivilegedPortStart ? 'EACCES' : 'EADDRINUSE';
    expect(stdout).toContain(`open(${secret}) itself -> EACCES; bind 127.0.0.1:${port} itself -> ${bindError}`);
    expect(stdout).toContain(`client: GET http://127.0.0.1:${port}/ -> 200 "root's secret, written by pid ${rootPid}\\n"`);
    expect(stdout).toMatch(/worker \d+: exited with code 0\n$/);
    return stdout;
  }

  it('installed where nobody can read it: the worker starts as nobody and serves with the fds root hands it', async (context) => {
    const stdout = await runFromCopy(true, context);
    const { expect } = context;
    expect(stdout).toMatch(/root: started worker \d+ as nobody \(spawn's uid and gid\)/);
    expect(stdout).not.toContain('could not load');
  });

  it('in a directory nobody cannot read: the worker starts as root and drops to nobody before it takes the fds', async (context) => {
    const stdout = await runFromCopy(false, context);
    const { expect } = context;
    expect(stdout).toMatch(
      /root: the worker could not load its code as nobody \(Error: Cannot find module '.*privilege-separation-worker\.mjs'\)/,
    );
    expect(stdout).toMatch(/root: started worker \d+ as root; it loaded its code and dropped to nobody/);
  });
});

it('examples/convert.ts: each fd the child receives becomes its Node object and works; the wrong kind and a socket Node reads are refused', async () => {
  const { stdout, stderr } = await run(tsx, [path.join(root, 'examples', 'convert.ts')], { cwd: root, timeout: 60_000 });
  expect(stderr).toBe('');
  const child = /child (\d+): received tcp\n/.exec(stdout)?.[1];
  expect(child).toBeDefined();
  expect(stdout).toContain(`parent: the TCP client got "child ${child} read \\"sent before the handoff\\""`);
  expect(stdout).toContain('parent: sending a socket Node reads from: ERR_FDPASS_SOCKET_IN_USE');
  expect(stdout).toContain(`child ${child}: received tcp-listener (IPv4)`);
  expect(stdout).toMatch(
    /toSocket\(\) of it: toSocket\(\): fd \d+ is a listening TCP socket \(IPv4\); it takes .*; still in the message: true/,
  );
  expect(stdout).toMatch(new RegExp(`parent: GET /hello on port \\d+: "served /hello by child ${child}"`));
  expect(stdout).toMatch(new RegExp(`parent: UDP port \\d+ answered "pong to ping from child ${child}"`));
  expect(stdout).toContain(
    `  | line 1, by the parent\n  | line 2, by child ${child}\n  | line 3, by the parent, after the child at the shared offset\n`,
  );
});

it('examples/worker-pool.ts (npm run demo): two workers serve in turn, a killed one is replaced, the pool closes', async () => {
  const { stdout, stderr } = await run(tsx, [path.join(root, 'examples', 'worker-pool.ts')], { cwd: root, timeout: 60_000 });
  expect(stderr).toBe('');
  const [, first, second] = /with worker 0 \(pid (\d+)\) and worker 1 \(pid (\d+)\)/.exec(stdout) ?? [];
  expect(first).toBeDefined();
  const served = [...stdout.matchAll(/request \d: served by worker (\d) \(pid (\d+)\)/g)].map((match) => `${match[1]}:${match[2]}`);
  const replacement = /started worker 0 again \(pid (\d+)\)/.exec(stdout)?.[1];
  expect(stdout).toContain(`worker 0 (pid ${first}) died of SIGKILL`);
  expect(served).toEqual([
    ...[`0:${first}`, `1:${second}`, `0:${first}`, `1:${second}`],
    ...[`0:${replacement}`, `1:${second}`, `0:${replacement}`, `1:${second}`],
  ]);
  expect(stdout).toMatch(/master: closed; the workers have exited\n$/);
});

it('examples/dbus-fd.ts: through a private dbus-daemon, the client reads the files the service opened for it, and the service reads the one passed to it', async () => {
  const { stdout, stderr } = await run(tsx, [path.join(root, 'examples', 'dbus-fd.ts')], { cwd: root, timeout: 60_000 });
  expect(stderr).toBe('');
  expect(stdout).toMatch(/client: Open\("motd.txt"\) gave fd \d+, which reads "served through D-Bus\\n"/);
  expect(stdout).toContain('client: OpenTwo: the first reads "served through D-Bus\\n", the second "the other file\\n"');
  expect(stdout).toContain('client: Take(fd) -> the service read "served through D-Bus\\n"');
  expect(stdout).toMatch(/client: done\n$/);
});
