// Test helpers: real child processes with a socket on fd 3, and fd counting through /proc.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, readSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeAll, beforeEach, expect } from 'vitest';

export const root = path.resolve(__dirname, '..');
export const fixtures = path.join(root, 'test', 'fixtures');

/** Open fds of a process, as /proc/<pid>/fd lists them (fd number -> link target). */
export function openFds(pid: number | 'self' = 'self'): Map<number, string> {
  const dir = `/proc/${pid}/fd`;
  const fds = new Map<number, string>();
  for (const name of readdirSync(dir)) {
    try {
      fds.set(Number(name), readlinkSync(`${dir}/${name}`));
    } catch {
      // the fd closed between readdir and readlink (the readdir's own fd, typically)
    }
  }
  return fds;
}

/**
 * Open fds of a process, less any on /proc or /sys: the runtime opens those for a moment on
 * threads of its own. glibc reads /proc/sys/vm/overcommit_memory once per process, when a
 * thread's malloc arena first shrinks; in a fresh Node process that is a V8 worker, often just
 * as the process prints 'ready', so a count taken then could be one too many.
 */
export function countFds(pid: number | 'self' = 'self'): number {
  let count = 0;
  for (const target of openFds(pid).values()) if (!/^\/(proc|sys)\//.test(target)) count++;
  return count;
}

/** The file status flags of fd (O_NONBLOCK, O_CLOEXEC...), as /proc/<pid>/fdinfo shows them. */
export function statusFlags(fd: number, pid: number | 'self' = 'self'): number {
  const flags = /^flags:\s+([0-7]+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'));
  if (!flags?.[1]) throw new Error(`no flags in fdinfo for ${fd}`);
  return parseInt(flags[1], 8);
}

export const isCloexec = (fd: number, pid: number | 'self' = 'self'): boolean => (statusFlags(fd, pid) & 0o2000000) !== 0;
export const isNonBlocking = (fd: number): boolean => (statusFlags(fd) & 0o4000) !== 0;

/**
 * Checks that every test of the calling file leaves this process's fd count as it found it.
 * libuv opens its SIGCHLD pipe at the first spawn and keeps it: open it before any count.
 */
export function expectNoFdLeakAroundEachTest(): void {
  let baseline = 0;
  beforeAll(async () => {
    await new Promise((resolve) => spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' }).on('close', resolve));
  });
  beforeEach(() => {
    baseline = countFds();
  });
  afterEach(() => {
    expect(countFds()).toBe(baseline);
  });
}

/** What the file behind fd holds, read from position 0: proves the fd works. */
export function contentOf(fd: number): string {
  const buf = Buffer.alloc(256);
  const n = readSync(fd, buf, 0, buf.length, 0);
  return buf.subarray(0, n).toString();
}

/** p, or a rejection naming what hung: a hang fails the test instead of stalling it. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still pending after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Debian's python3, when there is one: a pyenv shim costs seconds per start. */
/**
 * How much slower than a plain build this run is: .ci/asan sets FDPASS_TEST_TIME_SCALE (the
 * sanitizers cost each process 2-3x), and a test that bounds a latency scales the bound and
 * the load it measures under by it alike, so the bound keeps its meaning.
 */
export const timeScale = Number(process.env.FDPASS_TEST_TIME_SCALE ?? '1');

export const python = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

export interface Peer {
  child: ChildProcess;
  /** Everything the child printed on stdout, once it exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
  /** Resolves with the next line the child prints on stdout. */
  line(): Promise<string>;
}

/**
 * Spawns `command args` with `socketFd` as the child's fd 3 (and more fds at 4, 5...).
 * The parent keeps its own copy of socketFd: close it when the child should own the only one.
 * With stdin 'pipe', write the child's commands to child.stdin.
 */
export function spawnPeer(
  command: string,
  args: string[],
  extraFds: number[] = [],
  env: NodeJS.ProcessEnv = {},
  stdin: 'ignore' | 'pipe' = 'ignore',
): Peer {
  const child = spawn(command, args, {
    stdio: [stdin, 'pipe', 'pipe', ...extraFds],
    env: { ...process.env, ...env },
  });
  let stdout = '';
  let stderr = '';
  let buffered = '';
  const waiting: Array<(line: string) => void> = [];
  const lines: string[] = [];
  child.stdout!.setEncoding('utf8');
  child.stderr!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    stdout += chunk;
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) !== -1) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      const resolve = waiting.shift();
      if (resolve) resolve(line);
      else lines.push(line);
    }
  });
  child.stderr!.on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return {
    child,
    exited,
    line: () =>
      new Promise<string>((resolve, reject) => {
        const next = lines.shift();
        if (next !== undefined) return resolve(next);
        waiting.push(resolve);
        exited.then(({ stderr: err }) => reject(new Error(`child exited before printing a line; stderr: ${err}`)), reject);
      }),
  };
}

/** Runs a Node fixture (an .mjs file under test/fixtures, importing the built dist/). */
export function spawnNodePeer(
  fixture: string,
  args: string[],
  extraFds: number[] = [],
  env: NodeJS.ProcessEnv = {},
  stdin: 'ignore' | 'pipe' = 'ignore',
): Peer {
  return spawnPeer(process.execPath, [path.join(fixtures, fixture), ...args], extraFds, env, stdin);
}

/**
 * A copy of the built package (package.json, dist/, the addon, the runtime dependencies and
 * test/fixtures, and `extraParts` of the checkout, such as 'examples') in a fresh temp dir that
 * every uid can read: a child running under another uid loads fdpass from there, wherever the
 * checkout lives (under /root, mode 0700, say). The caller removes it (rmSync recursive) when done.
 */
export function copyForAnyUser(extraParts: readonly string[] = []): string {
  const copy = mkdtempSync(path.join(tmpdir(), 'fdpass-any-user-'));
  const parts = ['package.json', 'dist', 'test/fixtures', 'node_modules/eventemitter3', 'node_modules/node-gyp-build', ...extraParts];
  for (const part of parts) {
    cpSync(path.join(root, part), path.join(copy, part), { recursive: true });
  }
  // The addon this process loaded: the sanitized one under npm run test:asan (see envForAnyUser).
  const addonRoot = process.env.FDPASS_PREBUILD ?? root;
  cpSync(path.join(addonRoot, 'build', 'Release', 'fdpass.node'), path.join(copy, 'build', 'Release', 'fdpass.node'));
  openToAll(copy);
  return copy;
}

/**
 * The environment for a child that loads fdpass from a copyForAnyUser() copy: where
 * FDPASS_PREBUILD points the addon elsewhere (npm run test:asan), it points into the copy,
 * which the other uid can read.
 */
export function envForAnyUser(copy: string): NodeJS.ProcessEnv {
  return process.env.FDPASS_PREBUILD === undefined ? process.env : { ...process.env, FDPASS_PREBUILD: copy };
}

/** Readable by all (and searchable, for directories), whatever the umask was at the checkout. */
function openToAll(file: string): void {
  const stats = statSync(file);
  chmodSync(file, (stats.mode & 0o777) | (stats.isDirectory() ? 0o555 : 0o444));
  if (stats.isDirectory()) for (const name of readdirSync(file)) openToAll(path.join(file, name));
}
