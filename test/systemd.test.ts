// systemd's fd protocols against real peers: services started by Debian's
// systemd-socket-activate take their sockets with listenFds(); notify() and storeFds() send to a
// bound datagram socket in a Python process that receives with socket.recv_fds.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, fstatSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { binding, constants } from '../lib/binding.js';
import { listenFds, notify, storeFds, socketpair } from '../lib/index.js';
import { countFds, expectNoFdLeakAroundEachTest, fixtures, python, root, spawnPeer, within, type Peer } from './helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-systemd-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const activate = 'systemd-socket-activate'; // Debian's, from the systemd package (.ci/run installs it)
const service = path.join(fixtures, 'systemd-service.mjs');
const tsx = path.join(root, 'node_modules', '.bin', 'tsx');
const example = path.join(root, 'examples', 'systemd-activation.ts');

expectNoFdLeakAroundEachTest();

interface Activated {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** The next JSON line the service prints. */
  report: () => Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
}

/**
 * Starts `command` under systemd-socket-activate listening on each address; resolves once it
 * listens on all (it starts the command at the first connection). It passes its children only
 * PATH, HOME and TERM: the sanitizer's variables under npm run test:asan go with -E.
 */
async function startActivated(addresses: string[], extra: string[], command: string[]): Promise<Activated> {
  const passed = ['FDPASS_PREBUILD', 'LD_PRELOAD', 'ASAN_OPTIONS', 'UBSAN_OPTIONS'].filter((name) => process.env[name] !== undefined);
  const args = [...addresses.flatMap((address) => ['-l', address]), ...extra, ...passed.flatMap((name) => ['-E', name]), ...command];
  const child = spawn(activate, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let listening: () => void = () => {};
  const reports: string[] = [];
  let reported: (() => void) | undefined;
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    reports.push(...chunk.split('\n').filter((line) => line.startsWith('{')));
    reported?.();
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
    if ((stderr.match(/Listening on /g) ?? []).length === addresses.length) listening();
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  await within(
    new Promise<void>((resolve, reject) => {
      listening = resolve;
      void exited.then(() => reject(new Error(`systemd-socket-activate exited: ${stderr}`)));
    }),
    10_000,
    'systemd-socket-activate listening',
  );
  const report = async (): Promise<Record<string, unknown>> => {
    while (reports.length === 0) {
      await within(
        new Promise<void>((resolve, reject) => {
          reported = resolve;
          void exited.then(() => reject(new Error(`exited before reporting: ${stderr}`)));
        }),
        10_000,
        'the service reporting',
      );
    }
    return JSON.parse(reports.shift()!) as Record<string, unknown>;
  };
  return { child, stdout: () => stdout, stderr: () => stderr, report, exited };
}

/** A TCP port nobody listens on just now (systemd-socket-activate takes no port 0). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function httpGet(options: http.RequestOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ ...options, agent: false }, (response) => {
        let body = '';
        response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
        response.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}

/** The line a service answers on a connection to `address` (a path, or a port on 127.0.0.1). */
function lineFrom(address: string | number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = typeof address === 'number' ? net.connect(address, '127.0.0.1') : net.connect(address);
    let text = '';
    socket.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
    socket.on('end', () => resolve(text.trimEnd()));
    socket.on('error', reject);
  });
}

async function stop(activated: Activated): Promise<number | null> {
  activated.child.kill('SIGTERM');
  return within(activated.exited, 10_000, 'the service stopping');
}

/** Runs test with a service under systemd-socket-activate, which it stops whatever happens. */
async function withActivated(
  addresses: string[],
  extra: string[],
  command: string[],
  test: (activated: Activated) => Promise<void>,
): Promise<void> {
  const activated = await startActivated(addresses, extra, command);
  try {
    await test(activated);
  } finally {
    if (activated.child.exitCode === null && activated.child.signalCode === null) activated.child.kill('SIGKILL');
    await activated.exited;
  }
}

describe('listenFds() in a service started by systemd-socket-activate', () => {
  it('examples/systemd-activation.ts on a TCP port gets its socket from listenFds() and serves a request', async () => {
    const port = await freePort();
    const command = [process.execPath, '--import', 'tsx', example];
    await withActivated([`127.0.0.1:${port}`], ['--fdname=http'], command, async (activated) => {
      // The first connection starts the service: systemd-socket-activate execs it, same pid.
      const pid = activated.child.pid!;
      expect(await within(httpGet({ host: '127.0.0.1', port, path: '/' }), 20_000, 'GET /')).toBe(
        `hello from pid ${pid}, served on fd 3 ('http'), the socket systemd opened\n`,
      );
      expect(await httpGet({ host: '127.0.0.1', port, path: '/again' })).toContain(`hello from pid ${pid}`);
      expect(await stop(activated)).toBe(0);
      expect(activated.stdout()).toBe(
        `server ${pid}: listenFds() took fd 3 named 'http' (LISTEN_* left in the environment: none)\n` +
          `server ${pid}: SIGTERM, stopped\n`,
      );
    });
  });

  it('examples/systemd-activation.ts run on its own starts itself under systemd-socket-activate, asks once and stops it', async () => {
    const peer = spawnPeer(tsx, [example]);
    const { code, stdout, stderr } = await within(peer.exited, 30_000, 'the example');
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
    const pid = /systemd-socket-activate \(pid (\d+)\) listens on .*http\.sock; connecting starts the server/.exec(stdout)?.[1];
    expect(pid).toBeDefined();
    expect(stdout).toContain(`server ${pid}: listenFds() took fd 3 named 'http' (LISTEN_* left in the environment: none)`);
    expect(stdout).toContain(`client: GET / answered: hello from pid ${pid}, served on fd 3 ('http'), the socket systemd opened`);
    expect(stdout).toContain('client: the server exited with code 0');
  });

  it('two sockets named by --fdname: in order, close-on-exec, LISTEN_* removed, not inherited by a child; a second call takes nothing', async () => {
    const socketPath = path.join(dir, 'api.sock');
    const port = await freePort();
    await withActivated([socketPath, `127.0.0.1:${port}`], ['--fdname=api:metrics'], [process.execPath, service], async (activated) => {
      const first = lineFrom(socketPath); // starts the service
      first.catch(() => {}); // awaited below, unless an assertion fails first
      const report = await activated.report();
      const pid = activated.child.pid!;
      expect(report).toEqual({
        pid,
        before: { environment: { LISTEN_PID: String(pid), LISTEN_FDS: '2', LISTEN_FDNAMES: 'api:metrics' }, closeOnExec3: false },
        fds: [
          { fd: 3, name: 'api' },
          { fd: 4, name: 'metrics' },
        ],
        closeOnExec: [true, true],
        after: { environment: { LISTEN_PID: null, LISTEN_FDS: null, LISTEN_FDNAMES: null }, closeOnExec3: true },
        inheritedByChild: [],
        again: [],
      });
      expect(await first).toBe(`api ${pid}`);
      expect(await lineFrom(port)).toBe(`metrics ${pid}`);
      expect(await stop(activated)).toBe(0);
    });
  });

  it("unsetEnvironment: false keeps LISTEN_*; unnamed fds are 'unknown'; a second call returns the same fds, opening nothing", async () => {
    const socketPath = path.join(dir, 'kept.sock');
    await withActivated([socketPath], [], [process.execPath, service, 'keep'], async (activated) => {
      const first = lineFrom(socketPath);
      first.catch(() => {});
      const report = await activated.report();
      const pid = activated.child.pid!;
      expect(report).toMatchObject({
        before: { closeOnExec3: false },
        fds: [{ fd: 3, name: 'unknown' }],
        closeOnExec: [true],
        after: { environment: { LISTEN_PID: String(pid), LISTEN_FDS: '1', LISTEN_FDNAMES: null }, closeOnExec3: true },
        inheritedByChild: [],
        again: [{ fd: 3, name: 'unknown' }],
      });
      expect(await first).toBe(`unknown ${pid}`);
      expect(await stop(activated)).toBe(0);
    });
  });
});

describe('listenFds() without systemd', () => {
  /** Runs the service fixture with a socket as its fd 3 and `environment`; its report. */
  async function runService(environment: Record<string, string>, shell?: string): Promise<Record<string, unknown>> {
    const [mine, theirs] = socketpair();
    try {
      // With a shell command: `exec` keeps the shell's pid, so LISTEN_PID=$$ names the service.
      const peer = shell
        ? spawnPeer('/bin/sh', ['-c', `${shell}; exec "$0" "$1"`, process.execPath, service], [theirs], environment)
        : spawnPeer(process.execPath, [service], [theirs], environment);
      const { code, stdout, stderr } = await within(peer.exited, 10_000, 'the service fixture');
      expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
      return JSON.parse(stdout) as Record<string, unknown>;
    } finally {
      closeSync(mine);
      closeSync(theirs);
    }
  }

  it("LISTEN_PID is another process's: nothing taken, fd 3 left inheritable, the variables removed (as sd_listen_fds does)", async () => {
    const report = await runService({ LISTEN_PID: String(process.pid), LISTEN_FDS: '1', LISTEN_FDNAMES: 'web' });
    expect(report).toMatchObject({
      before: { closeOnExec3: false },
      fds: [],
      after: { environment: { LISTEN_PID: null, LISTEN_FDS: null, LISTEN_FDNAMES: null }, closeOnExec3: false },
    });
  });

  it('LISTEN_FDNAMES with a name too few: ERR_FDPASS_INVALID_ENVIRONMENT, the fd made close-on-exec first, the variables removed', async () => {
    const report = await runService({ LISTEN_FDS: '1', LISTEN_FDNAMES: 'a:b' }, 'export LISTEN_PID=$$');
    expect(report).toMatchObject({
      before: { closeOnExec3: false },
      error: { code: 'ERR_FDPASS_INVALID_ENVIRONMENT', message: "LISTEN_FDNAMES has 2 name(s) for LISTEN_FDS=1: 'a:b'" },
      after: { environment: { LISTEN_PID: null, LISTEN_FDS: null, LISTEN_FDNAMES: null }, closeOnExec3: true },
    });
  });

  it('LISTEN_FDS counts an fd that is not open: EBADF from fcntl, naming it', async () => {
    // Past fd 3 come the fds Node opened for itself: the count runs on to the first closed one.
    const report = await runService({ LISTEN_FDS: '1000' }, 'export LISTEN_PID=$$');
    expect(report).toMatchObject({
      error: { code: 'EBADF', syscall: 'fcntl', message: expect.stringMatching(/LISTEN_FDS=1000, but fd \d+ is not open/) },
      after: { environment: { LISTEN_PID: null, LISTEN_FDS: null }, closeOnExec3: true },
    });
  });

  describe('in this process', () => {
    const saved = { ...process.env };
    afterEach(() => {
      for (const name of ['LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES', 'LISTEN_PIDFDID']) {
        if (saved[name] === undefined) delete process.env[name];
        else process.env[name] = saved[name];
      }
    });

    it('not activated: [], with nothing to remove', () => {
      delete process.env.LISTEN_PID;
      process.env.LISTEN_FDS = '1';
      expect(listenFds({ unsetEnvironment: false })).toEqual([]);
      expect(process.env.LISTEN_FDS).toBe('1');
      expect(listenFds()).toEqual([]);
      expect(process.env.LISTEN_FDS).toBeUndefined();
    });

    it.each([
      ['LISTEN_PID', 'abc', 'LISTEN_PID must be an integer from 1 to 2147483647'],
      ['LISTEN_PID', '0', 'LISTEN_PID must be an integer'],
      ['LISTEN_PID', ' 7', 'LISTEN_PID must be an integer'],
      ['LISTEN_FDS', '0', 'LISTEN_FDS must be an integer from 1 to 2147483644'],
      ['LISTEN_FDS', '-1', 'LISTEN_FDS must be an integer'],
      ['LISTEN_FDS', '1e3', 'LISTEN_FDS must be an integer'],
      ['LISTEN_FDS', '99999999999', 'LISTEN_FDS must be an integer'],
    ])('%s=%j: ERR_FDPASS_INVALID_ENVIRONMENT, before any fd is touched, and the variables removed', (name, value, message) => {
      process.env.LISTEN_PID = String(process.pid);
      process.env.LISTEN_FDS = '1';
      process.env[name] = value;
      expect(() => listenFds()).toThrow(
        expect.objectContaining({ code: 'ERR_FDPASS_INVALID_ENVIRONMENT', message: expect.stringContaining(message) }),
      );
      expect([process.env.LISTEN_PID, process.env.LISTEN_FDS]).toEqual([undefined, undefined]);
    });

    it('bad options are TypeErrors, and leave the environment alone', () => {
      process.env.LISTEN_PID = '1';
      expect(() => listenFds({ unsetEnvironment: 'no' as unknown as boolean })).toThrow(
        expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' }),
      );
      expect(() => listenFds(7 as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
      expect(process.env.LISTEN_PID).toBe('1');
    });
  });
});

describe('notify() and storeFds() to NOTIFY_SOCKET', () => {
  afterEach(() => {
    delete process.env.NOTIFY_SOCKET;
  });

  interface Datagram {
    text: string;
    flags: number;
    fds: Array<{ dev: string; ino: string; kind: string; content?: string; port?: number | null }>;
  }

  /** The Python receiver bound at address (NOTIFY_SOCKET's form), and a way to ask it. */
  async function startReceiver(address: string): Promise<{ peer: Peer; ask: (command: string) => Promise<Datagram[]> }> {
    const peer = spawnPeer(python, [path.join(fixtures, 'notify-receiver.py'), address], [], {}, 'pipe');
    expect(await within(peer.line(), 10_000, 'the receiver starting')).toBe('ready');
    const ask = async (command: string): Promise<Datagram[]> => {
      peer.child.stdin!.write(`${command}\n`);
      return JSON.parse(await within(peer.line(), 10_000, `the receiver: ${command}`)) as Datagram[];
    };
    return { peer, ask };
  }

  async function stopReceiver(peer: Peer): Promise<void> {
    peer.child.stdin!.end();
    expect((await within(peer.exited, 10_000, 'the receiver exiting')).code).toBe(0);
  }

  const identity = (fd: number): { dev: string; ino: string } => {
    const stats = fstatSync(fd, { bigint: true });
    return { dev: String(stats.dev), ino: String(stats.ino) };
  };

  it('storeFds() to a path: one datagram, FDSTORE=1 and FDNAME, with the same open files (a file, a listening TCP socket)', async () => {
    const address = path.join(dir, 'notify.sock');
    const { peer, ask } = await startReceiver(address);
    const file = path.join(dir, 'state.txt');
    writeFileSync(file, 'kept across restarts');
    const fd = openSync(file, 'r');
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const before = countFds();
      process.env.NOTIFY_SOCKET = address;
      await expect(storeFds([fd, server], { name: 'web' })).resolves.toBe(true);
      expect(countFds()).toBe(before);
      const serverFd = (server as unknown as { _handle: { fd: number } })._handle.fd;
      expect(await ask('recv 1')).toEqual([
        {
          text: 'FDSTORE=1\nFDNAME=web',
          flags: 0,
          fds: [
            { ...identity(fd), kind: 'file', content: 'kept across restarts' },
            { ...identity(serverFd), kind: 'socket', port: (server.address() as net.AddressInfo).port },
          ],
        },
      ]);
      expect(await ask('pending')).toEqual([]); // exactly one datagram
    } finally {
      closeSync(fd);
      await new Promise((resolve) => server.close(resolve));
      await stopReceiver(peer);
    }
  });

  it("notify() to an abstract '@name': the variables one a line, with an fd; FDPOLL=0 for poll: false", async () => {
    const name = `@fdpass-notify-${process.pid}`;
    const { peer, ask } = await startReceiver(name);
    const [readEnd, writeEnd] = socketpair();
    try {
      process.env.NOTIFY_SOCKET = name;
      await expect(notify({ READY: 1, STATUS: 'serving on 2 sockets' }, { fds: [readEnd] })).resolves.toBe(true);
      await expect(notify('WATCHDOG=1')).resolves.toBe(true);
      await expect(storeFds([writeEnd], { name: 'pipe', poll: false })).resolves.toBe(true);
      expect(await ask('recv 3')).toEqual([
        { text: 'READY=1\nSTATUS=serving on 2 sockets', flags: 0, fds: [{ ...identity(readEnd), kind: 'socket', port: null }] },
        { text: 'WATCHDOG=1', flags: 0, fds: [] },
        { text: 'FDSTORE=1\nFDNAME=pipe\nFDPOLL=0', flags: 0, fds: [{ ...identity(writeEnd), kind: 'socket', port: null }] },
      ]);
      expect(await ask('pending')).toEqual([]);
    } finally {
      closeSync(readEnd);
      closeSync(writeEnd);
      await stopReceiver(peer);
    }
  });

  it('NOTIFY_SOCKET unset: resolves false, sends nothing, opens nothing', async () => {
    delete process.env.NOTIFY_SOCKET;
    const before = countFds();
    await expect(notify('READY=1')).resolves.toBe(false);
    await expect(storeFds([0], { name: 'stdin' })).resolves.toBe(false);
    expect(countFds()).toBe(before);
  });

  /** Runs test with NOTIFY_SOCKET at a receiver whose queue is full of `count` datagrams 'filler'. */
  async function withFullReceiver(
    test: (receiver: { ask: (command: string) => Promise<Datagram[]>; count: number; file: number }) => Promise<void>,
  ): Promise<void> {
    const address = path.join(dir, 'full.sock');
    const { peer, ask } = await startReceiver(address);
    const filler = fillQueue(address);
    const file = openSync(path.join(dir, 'late.txt'), 'w+');
    try {
      process.env.NOTIFY_SOCKET = address;
      await test({ ask, count: filler.count, file });
      expect(await ask('pending')).toEqual([]);
    } finally {
      closeSync(file);
      binding.close(filler.sock);
      rmSync(address);
      await stopReceiver(peer);
    }
  }

  const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

  it("while the receiver's queue is full, a call waits and sends once there is room; an aborted one sends nothing", async () => {
    await withFullReceiver(async ({ ask, count, file }) => {
      const settled: string[] = [];
      const controller = new AbortController();
      const stored = storeFds([file], { name: 'late' }).then((sent) => settled.push(`stored ${sent}`));
      const aborted = notify('STATUS=never', { signal: controller.signal }).catch((error: Error & { code: string }) => {
        settled.push(error.code);
      });
      await sleep(200);
      expect(settled).toEqual([]);
      controller.abort();
      await aborted;
      expect(settled).toEqual(['ABORT_ERR']);
      const received = await ask(`recv ${count + 1}`);
      await within(stored, 5_000, 'storeFds() once there is room');
      expect(settled).toEqual(['ABORT_ERR', 'stored true']);
      expect(received.slice(0, count).every((datagram) => datagram.text === 'filler')).toBe(true);
      expect(received[count]).toEqual({
        text: 'FDSTORE=1\nFDNAME=late',
        flags: 0,
        fds: [{ ...identity(file), kind: 'file', content: '' }],
      });
    });
  });

  it('a later call does not overtake one that waits for room, though room comes just before it is made', async () => {
    await withFullReceiver(async ({ ask, count, file }) => {
      const settled: string[] = [];
      const stored = storeFds([file], { name: 'first' }).then((sent) => settled.push(`stored ${sent}`));
      await sleep(100);
      expect((await ask('recv 1'))[0]!.text).toBe('filler'); // room for one datagram
      const after = notify('STATUS=second').then((sent) => settled.push(`after ${sent}`));
      await within(stored, 5_000, 'the first call');
      await sleep(100);
      expect(settled).toEqual(['stored true']); // the first took the room; the second waits for more
      const received = await ask(`recv ${count + 1}`);
      await within(after, 5_000, 'the second call');
      expect(settled).toEqual(['stored true', 'after true']);
      expect(received.slice(count - 1).map((datagram) => datagram.text)).toEqual(['FDSTORE=1\nFDNAME=first', 'STATUS=second']);
    });
  });

  it('calls in a row hold no memory once settled (the line of calls keeps no chain of results)', async () => {
    // In a child with --expose-gc: heap after 20 000 settled calls, then after 60 000 more.
    const script = `
      const { notify } = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
      const heapAfter = async (calls) => {
        for (let i = 0; i < calls; i++) await notify('WATCHDOG=1');
        gc();
        return process.memoryUsage().heapUsed;
      };
      (async () => console.log(JSON.stringify([await heapAfter(20000), await heapAfter(60000)])))();`;
    const peer = spawnPeer(process.execPath, ['--expose-gc', '-e', script]);
    const { code, stdout, stderr } = await within(peer.exited, 20_000, 'the child');
    expect({ code, stderr }).toEqual({ code: 0, stderr: '' });
    const [warm, later] = JSON.parse(stdout) as [number, number];
    expect(later - warm).toBeLessThan(2_000_000); // a chain of results grew 10 MB here
  });

  it('a NOTIFY_SOCKET that is no Unix socket address, or where nothing listens, rejects with a clear error', async () => {
    process.env.NOTIFY_SOCKET = 'run/notify';
    await expect(notify('READY=1')).rejects.toMatchObject({
      code: 'ERR_FDPASS_INVALID_ENVIRONMENT',
      message: expect.stringContaining("NOTIFY_SOCKET must be an absolute path or '@' and an abstract name, not 'run/notify'"),
    });
    process.env.NOTIFY_SOCKET = 'vsock:2:1234';
    await expect(notify('READY=1')).rejects.toMatchObject({ code: 'ERR_FDPASS_INVALID_ENVIRONMENT' });
    process.env.NOTIFY_SOCKET = '@';
    await expect(notify('READY=1')).rejects.toMatchObject({ code: 'ERR_FDPASS_INVALID_ENVIRONMENT' });
    process.env.NOTIFY_SOCKET = path.join(dir, 'nobody-here.sock');
    await expect(notify('READY=1')).rejects.toMatchObject({
      code: 'ENOENT',
      syscall: 'connect',
      message: expect.stringContaining('nobody-here.sock'),
    });
    process.env.NOTIFY_SOCKET = `/${'x'.repeat(200)}`;
    await expect(notify('READY=1')).rejects.toMatchObject({ code: 'ENAMETOOLONG' });

    // A stream socket is not systemd's notify socket.
    const streamPath = path.join(dir, 'stream.sock');
    const server = net.createServer().listen(streamPath);
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      process.env.NOTIFY_SOCKET = streamPath;
      await expect(notify('READY=1')).rejects.toMatchObject({ code: 'EPROTOTYPE', syscall: 'connect' });
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('bad arguments throw at the call, before anything is sent', async () => {
    process.env.NOTIFY_SOCKET = path.join(dir, 'never-reached.sock');
    const invalidValue = expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' });
    const invalidType = expect.objectContaining({ name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
    expect(() => storeFds([0], { name: 'a:b' })).toThrow(invalidValue);
    expect(() => storeFds([0], { name: '' })).toThrow(invalidValue);
    expect(() => storeFds([0], { name: 'x'.repeat(256) })).toThrow(invalidValue);
    expect(() => storeFds([0], { name: 'tab\there' })).toThrow(invalidValue);
    expect(() => storeFds([0], { name: 'caf\u00e9' })).toThrow(invalidValue);
    expect(() => storeFds([0], { name: 7 as unknown as string })).toThrow(invalidType);
    expect(() => storeFds([0], { poll: 0 as unknown as boolean })).toThrow(invalidType);
    expect(() => storeFds([])).toThrow(invalidType);
    expect(() => storeFds(3 as never)).toThrow(invalidType);
    expect(() => notify('READY=1\0')).toThrow(invalidValue);
    expect(() => notify({ 'A=B': '1' })).toThrow(invalidValue);
    expect(() => notify({ '': '1' })).toThrow(invalidValue);
    expect(() => notify({ STATUS: 'two\nlines' })).toThrow(invalidValue);
    expect(() => notify({ STATUS: null } as never)).toThrow(invalidType);
    expect(() => notify(42 as never)).toThrow(invalidType);
    expect(() => notify('READY=1', { fds: [-1] })).toThrow(expect.objectContaining({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }));
    expect(() => notify('READY=1', { fds: new Array<number>(254).fill(0) })).toThrow(
      expect.objectContaining({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' }),
    );
    expect(() => notify('READY=1', { signal: 'soon' as never })).toThrow(invalidType);
    await expect(storeFds([0], { name: 'x'.repeat(255) })).rejects.toMatchObject({ code: 'ENOENT' }); // the longest name is taken
  });

  it('an already aborted signal rejects with AbortError, nothing sent', async () => {
    process.env.NOTIFY_SOCKET = path.join(dir, 'never-reached.sock');
    const reason = new Error('stopping');
    await expect(notify('READY=1', { signal: AbortSignal.abort(reason) })).rejects.toMatchObject({
      name: 'AbortError',
      code: 'ABORT_ERR',
      cause: reason,
    });
  });
});

describe('on Windows', () => {
  it('listenFds(), notify() and storeFds() throw ERR_FEATURE_UNAVAILABLE_ON_PLATFORM', () => {
    const platform = Object.getOwnPropertyDescriptor(process, 'platform')!;
    Object.defineProperty(process, 'platform', { ...platform, value: 'win32' });
    try {
      const unavailable = expect.objectContaining({
        code: 'ERR_FEATURE_UNAVAILABLE_ON_PLATFORM',
        message: expect.stringContaining('Linux'),
      });
      expect(() => listenFds()).toThrow(unavailable);
      expect(() => notify('READY=1')).toThrow(unavailable);
      expect(() => storeFds([0])).toThrow(unavailable);
    } finally {
      Object.defineProperty(process, 'platform', platform);
    }
  });
});

/** A datagram socket connected to address that sent 'filler' until the receiver's queue was full. */
function fillQueue(address: string): { sock: number; count: number } {
  const sock = binding.unixSocket(constants.SOCK_DGRAM);
  expect(binding.connectUnix(sock, Buffer.from(address), false)).toBe(0);
  const text = Buffer.from('filler');
  let count = 0;
  while (binding.sendmsg(sock, text, 0, text.length, new Int32Array(0), 0) >= 0) count++;
  return { sock, count };
}
