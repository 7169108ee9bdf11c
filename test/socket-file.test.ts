// A server's socket file in a directory others may write to: never a mode changed through a
// symlink, exactly one winner when processes race for a stale path, never another's file
// removed, a stale probe refused permission reported as such, a lock file never followed.
import { spawn } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binding, constants } from '../lib/binding';
import { connect, listen } from '../lib/index';
import { lockBeside, LOCK_TIMEOUT_MS } from '../lib/socket-file';
import {
  copyForAnyUser,
  envForAnyUser,
  countFds,
  expectNoFdLeakAroundEachTest,
  fixtures,
  python,
  spawnNodePeer,
  spawnPeer,
  within,
  type Peer,
} from './helpers';

expectNoFdLeakAroundEachTest();

let dir: string;
/** More temp dirs, removed after the file's tests pass or fail. */
const scratch: string[] = [];
const scratchDir = (prefix: string): string => {
  const made = mkdtempSync(path.join(tmpdir(), prefix));
  scratch.push(made);
  return made;
};
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'fdpass-socket-file-'));
});
afterAll(() => {
  for (const made of [dir, ...scratch]) rmSync(made, { recursive: true, force: true });
});

let serial = 0;
const socketPath = (): string => path.join(dir, `s${serial++}.sock`);
const isRoot = process.getuid?.() === 0;

/** What a server that died leaves behind: a socket file nothing listens on. */
function leaveStaleSocketFile(file: string): void {
  rmSync(file, { force: true });
  const sock = binding.unixSocket(constants.SOCK_STREAM);
  try {
    expect(binding.bindUnix(sock, Buffer.from(file), false, 0o600)).toBe(0);
  } finally {
    binding.close(sock);
  }
}

/** The private directories listen() binds in: none may be left behind. */
const privateDirectories = (): string[] => readdirSync(dir).filter((name) => name.startsWith('.fdpass-'));

/** A process holding an flock on file for ms milliseconds (created if missing); "locked" once it does. */
function holdLock(file: string, ms: number): Peer {
  const code =
    'import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT, 0o600); fcntl.flock(fd, fcntl.LOCK_EX); print("locked", flush=True); time.sleep(float(sys.argv[2]) / 1000)';
  return spawnPeer(python, ['-c', code, file, String(ms)]);
}

describe('a hostile writer of the directory', () => {
  it('swapping a symlink in for the socket file never makes listen() or close() change the mode of what it points to', async () => {
    const elsewhere = scratchDir('fdpass-target-');
    const target = path.join(elsewhere, 'precious');
    writeFileSync(target, 'precious\n');
    chmodSync(target, 0o644);
    const before = statSync(target, { bigint: true });
    const file = socketPath();
    const racer = spawnPeer(python, [path.join(fixtures, 'swap-symlink.py'), file, target]);
    expect(await racer.line()).toBe('ready');

    let listened = 0;
    const refusals = new Map<string, number>();
    try {
      for (const deadline = Date.now() + 2000; Date.now() < deadline;) {
        try {
          const server = await listen({ path: file, mode: 0o666 });
          listened++;
          await server.close();
        } catch (error) {
          const code = String((error as { code?: unknown }).code);
          refusals.set(code, (refusals.get(code) ?? 0) + 1);
        }
      }
    } finally {
      racer.child.kill('SIGTERM');
    }
    const swaps = Number((await racer.exited).stdout.split('\n')[1]);

    const after = statSync(target, { bigint: true });
    expect((after.mode & 0o777n).toString(8)).toBe('644');
    expect(after.ctimeNs).toBe(before.ctimeNs); // nothing chmod-ed or wrote it, even to the same mode
    expect(readFileSync(target, 'utf8')).toBe('precious\n');
    expect([...refusals.keys()].filter((code) => code !== 'EADDRINUSE')).toEqual([]);
    expect(swaps).toBeGreaterThan(1000); // the racer did race
    expect(listened + (refusals.get('EADDRINUSE') ?? 0)).toBeGreaterThan(100);
    expect(privateDirectories()).toEqual([]);
  });
});

describe('processes racing for a stale path', () => {
  it('of 8 processes calling listen() on one stale path at once, exactly one wins, 100 times over, and a client reaches it', async () => {
    const file = socketPath();
    const racers = Array.from({ length: 8 }, () => spawnNodePeer('listen-racer.mjs', [file], [], {}, 'pipe'));
    const ask = (racer: Peer, command: string): Promise<string> => {
      racer.child.stdin!.write(`${command}\n`);
      return within(racer.line(), 20_000, `${command} in racer ${racer.child.pid}`);
    };
    const fdsBefore = await Promise.all(racers.map((racer) => ask(racer, 'fds')));

    const badTrials: string[] = [];
    for (let trial = 0; trial < 100; trial++) {
      leaveStaleSocketFile(file);
      const answers = await Promise.all(racers.map((racer) => ask(racer, 'go')));
      const winners = racers.filter((_, i) => answers[i] === 'won');
      if (winners.length !== 1 || answers.some((answer) => answer !== 'won' && answer !== 'lost EADDRINUSE')) {
        badTrials.push(`trial ${trial}: ${answers.join(', ')}`);
      } else {
        const client = await connect(file);
        const hello = await client.recv();
        await client.close();
        expect(hello.data.toString()).toBe(String(winners[0]!.child.pid));
      }
      await Promise.all(winners.map((winner) => ask(winner, 'close')));
    }
    expect(badTrials).toEqual([]);
    expect(existsSync(file)).toBe(false);
    expect(await Promise.all(racers.map((racer) => ask(racer, 'fds')))).toEqual(fdsBefore);
    for (const racer of racers) racer.child.stdin!.end();
    for (const { code, stderr } of await Promise.all(racers.map((racer) => racer.exited))) expect(code, stderr).toBe(0);
    expect(privateDirectories()).toEqual([]);
  });
});

describe('the lock beside the socket file', () => {
  it('listen() waits while another process holds the lock, then goes on', async () => {
    const file = socketPath();
    leaveStaleSocketFile(file);
    const holder = holdLock(`${file}.lock`, 300);
    expect(await holder.line()).toBe('locked');
    const start = performance.now();
    const server = await listen(file);
    expect(performance.now() - start).toBeGreaterThan(200);
    await holder.exited;
    const client = await connect(file);
    await client.close();
    await server.close();
    expect(existsSync(file)).toBe(false);
    expect(existsSync(`${file}.lock`)).toBe(true); // it stays: removing it would let two processes lock two files
  });

  it('close() waits for the lock too before it removes the file', async () => {
    const file = socketPath();
    const server = await listen(file);
    const holder = holdLock(`${file}.lock`, 300);
    expect(await holder.line()).toBe('locked');
    const start = performance.now();
    await server.close();
    expect(performance.now() - start).toBeGreaterThan(200);
    expect(existsSync(file)).toBe(false);
    await holder.exited;
  });

  it('while close() waits for the lock it accepts no one: clients wait in the backlog, no fd piles up, the loop stays idle', async () => {
    const file = socketPath();
    const server = await listen(file);
    const holder = holdLock(`${file}.lock`, 600);
    expect(await holder.line()).toBe('locked');
    const before = countFds();
    const closing = server.close();
    const clients = Array.from({ length: 200 }, () => {
      const sock = binding.unixSocket(binding.constants.SOCK_STREAM);
      binding.connectUnix(sock, Buffer.from(file), false); // the backlog takes what it can
      return sock;
    });
    const cpu = process.cpuUsage();
    await new Promise((resolve) => setTimeout(resolve, 300));
    const used = process.cpuUsage(cpu);
    // The 200 clients' sockets, and the lock file and directory close() holds while it waits.
    expect(countFds() - before, 'fds held beyond the 200 client sockets').toBeLessThanOrEqual(200 + 2);
    expect((used.user + used.system) / 1000, 'CPU ms in 300 ms of waiting').toBeLessThan(100);
    await closing;
    for (const sock of clients) closeSync(sock);
    await holder.exited;
  });

  it('a lock held past the timeout: ETIMEDOUT naming the lock file, and the lock fd closed', async () => {
    const file = socketPath();
    const holder = holdLock(`${file}.lock`, 5000);
    expect(await holder.line()).toBe('locked');
    const parent = binding.openDirectoryAt(constants.AT_FDCWD, Buffer.from(dir), true);
    try {
      const start = performance.now();
      const lock = lockBeside(parent, Buffer.from(`${path.basename(file)}.lock`), `${file}.lock`, 300);
      await expect(lock).rejects.toMatchObject({ code: 'ETIMEDOUT', syscall: 'flock', message: expect.stringContaining(`${file}.lock`) });
      expect(performance.now() - start).toBeGreaterThan(250);
    } finally {
      binding.close(parent);
      holder.child.kill();
      await holder.exited;
    }
    expect(LOCK_TIMEOUT_MS).toBe(5000); // what the README says listen() and close() wait
  });

  it('a symlink at the lock path is not followed: ELOOP, and nothing is created where it points', async () => {
    const file = socketPath();
    const pointedAt = path.join(dir, `created-through-a-link-${serial++}`);
    symlinkSync(pointedAt, `${file}.lock`);
    await expect(listen(file)).rejects.toMatchObject({ code: 'ELOOP', syscall: 'open', message: expect.stringContaining(`${file}.lock`) });
    expect(existsSync(pointedAt)).toBe(false);
    expect(existsSync(file)).toBe(false);
    expect(privateDirectories()).toEqual([]);
  });
});

describe('close()', () => {
  it("leaves a live server's file that another process renamed over ours, and a symlink put in its place", async () => {
    const file = socketPath();
    const ours = await listen(file);
    const theirsAt = socketPath();
    const theirs = spawnPeer(python, [
      '-c',
      'import socket,sys,time; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(); print("ready", flush=True); time.sleep(60)',
      theirsAt,
    ]);
    try {
      expect(await theirs.line()).toBe('ready');
      renameSync(theirsAt, file); // atomically: there is always a file at the path
      const theirIno = lstatSync(file).ino;
      await ours.close();
      expect(lstatSync(file).ino).toBe(theirIno);
      const client = await connect(file); // theirs is still reachable
      await client.close();
    } finally {
      theirs.child.kill();
      await theirs.exited;
    }

    const again = await listen(file); // theirs is stale now
    const target = socketPath();
    writeFileSync(target, '');
    symlinkSync(target, `${file}.new`);
    renameSync(`${file}.new`, file);
    await again.close();
    expect(lstatSync(file).isSymbolicLink()).toBe(true);
    expect(existsSync(target)).toBe(true);
  });
});

describe('close() when the file cannot be removed', () => {
  it("reports why to 'error' listeners, closes all the same, and leaves the file as a crashed server's", async () => {
    const sub = path.join(dir, `sub${serial++}`);
    mkdirSync(sub);
    const server = await listen(path.join(sub, 's.sock'));
    const errors: unknown[] = [];
    server.on('error', (error) => errors.push(error));
    renameSync(sub, `${sub}.moved`);
    writeFileSync(sub, 'not a directory');
    await server.close();
    expect(errors).toMatchObject([{ code: 'ENOTDIR', syscall: 'open' }]);
    expect(server.listening).toBe(false);
    expect(lstatSync(path.join(`${sub}.moved`, 's.sock')).isSocket()).toBe(true);
  });
});

describe('names', () => {
  it('a path of the full 107 bytes sun_path holds', async () => {
    const prefix = path.join(dir, 'long-');
    const file = prefix + 'x'.repeat(constants.MAX_SOCKET_PATH_BYTES - Buffer.byteLength(prefix));
    expect(Buffer.byteLength(file)).toBe(constants.MAX_SOCKET_PATH_BYTES);
    const server = await listen({ path: file, mode: 0o640 });
    expect(lstatSync(file).mode & 0o777).toBe(0o640);
    const client = await connect(file);
    await client.close();
    await server.close();
    expect(existsSync(file)).toBe(false);
  });
});

describe.skipIf(!isRoot)('another user', () => {
  // Root may connect to and remove any socket: these run listen() as uid 65534, from a copy
  // of fdpass that uid can read wherever the checkout lives.
  let anyUserRoot: string;
  beforeAll(() => {
    anyUserRoot = copyForAnyUser();
    scratch.push(anyUserRoot);
  });

  /** listen(file) in a process running as uid 65534: how it failed, and its fds leaked. */
  async function listenAsNobody(file: string): Promise<unknown> {
    const script = `
      const fs = require('node:fs');
      const fdpass = require(${JSON.stringify(path.join(anyUserRoot, 'dist', 'index.js'))});
      const fds = () => fs.readdirSync('/proc/self/fd').length;
      const before = fds();
      fdpass.listen(process.argv[1]).then(
        async (server) => { await server.close(); console.log(JSON.stringify({ listened: true })); },
        (error) => console.log(JSON.stringify({ code: error.code, syscall: error.syscall, message: error.message, leaked: fds() - before })),
      );`;
    const child = spawn(process.execPath, ['-e', script, file], {
      uid: 65534,
      gid: 65534,
      env: envForAnyUser(anyUserRoot),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await within(new Promise((resolve) => child.on('close', resolve)), 20_000, 'the child');
    expect(code, stderr).toBe(0);
    return JSON.parse(stdout);
  }

  /**
   * A dead server's socket file owned by uid 1 with `mode`, in a new directory uid 65534
   * may write to: its own, or root's and sticky, like /tmp.
   */
  function staleFileOfUid1(mode: number, directory: 'own' | 'sticky'): string {
    const shared = scratchDir('fdpass-shared-');
    if (directory === 'own') chownSync(shared, 65534, 65534);
    chmodSync(shared, directory === 'own' ? 0o755 : 0o1777);
    const file = path.join(shared, 's.sock');
    leaveStaleSocketFile(file);
    chownSync(file, 1, 1);
    chmodSync(file, mode);
    return file;
  }

  it('a stale socket the probe may not connect to: EADDRINUSE naming the permission problem, and the file stays', async () => {
    const file = staleFileOfUid1(0o600, 'own');
    const stale = lstatSync(file);
    expect(await listenAsNobody(file)).toEqual({
      code: 'EADDRINUSE',
      syscall: 'bind',
      message: expect.stringMatching(/refused permission.*another user/),
      leaked: 0,
    });
    const now = lstatSync(file);
    expect([now.ino, now.uid, now.isSocket()]).toEqual([stale.ino, 1, true]);
  });

  it("a dead server's file that may not be removed (a sticky directory, another user's file): EADDRINUSE saying so", async () => {
    const file = staleFileOfUid1(0o666, 'sticky');
    const stale = lstatSync(file);
    expect(await listenAsNobody(file)).toEqual({
      code: 'EADDRINUSE',
      syscall: 'bind',
      message: expect.stringContaining("a dead server's file, which could not be removed (unlink EPERM)"),
      leaked: 0,
    });
    expect(lstatSync(file).ino).toBe(stale.ino);
  });
});
