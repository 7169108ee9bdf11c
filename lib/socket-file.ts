// A server's socket file, in a directory others may write to: made where nobody else can
// reach it, given its mode there, published with link(2), which never replaces a file; a
// dead server's file replaced only under a lock that every fdpass process takes; removed
// only while it is still the file this process published. Names are looked up relative to
// an open directory, never twice by path, and no symlink is ever followed.
import { randomBytes } from 'node:crypto';
import { constants as fs, fstatSync, readFileSync } from 'node:fs';
import { constants as os } from 'node:os';
import { resolve as resolvePath } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { binding, constants } from './binding';
import { errnoException, errnoName, invalidArgValue } from './errors';
import { closeFds } from './fd';
import { describeAddress, type SocketAddress } from './socket-address';

/** How long listen() and close() wait for another process's lock on a path before giving up. */
export const LOCK_TIMEOUT_MS = 5000;
const MAX_LOCK_PAUSE_MS = 4;

/**
 * Linux binds in a private directory and publishes with link(2). Elsewhere there is no
 * /proc/self/fd to keep the private name short, and the file is bound in place, its mode
 * set by the umask around bind (addon/unix_socket.cc): never wider, but while the lock is
 * held a process that does not take it could still swap the file between bind and stat.
 */
const PUBLISH_BY_LINK = process.platform === 'linux';
const STAGED_NAME = Buffer.from('s');

const EADDRINUSE = -os.errno.EADDRINUSE;
const EEXIST = -os.errno.EEXIST;
const ENOENT = -os.errno.ENOENT;
const EAGAIN = -os.errno.EAGAIN;
const ECONNREFUSED = -os.errno.ECONNREFUSED;
const EACCES = -os.errno.EACCES;
const EPERM = -os.errno.EPERM;
const EPROTOTYPE = -os.errno.EPROTOTYPE;
const ETIMEDOUT = -os.errno.ETIMEDOUT;
const EWOULDBLOCK = -os.errno.EWOULDBLOCK;

/** A listening socket, and its file unless it has an abstract name. */
export interface BoundListener {
  sock: number;
  file: SocketFile | undefined;
}

/**
 * A socket of `type`, bound to address and listening. A path gets a file with exactly
 * `mode`, never wider at any moment; a dead server's file there is replaced, anything else
 * is refused with EADDRINUSE.
 */
export async function bindListener(address: SocketAddress, type: number, mode: number, backlog: number): Promise<BoundListener> {
  const sock = binding.unixSocket(type);
  if (sock < 0) throw errnoException(sock, 'socket');
  try {
    if (address.abstract) {
      check(binding.bindUnix(sock, address.name, true, 0), 'bind', describeAddress(address));
      check(binding.listen(sock, backlog), 'listen', describeAddress(address));
      return { sock, file: undefined };
    }
    return { sock, file: await publish(sock, address, type, mode, backlog) };
  } catch (error) {
    closeFds([sock]);
    throw error;
  }
}

/** Where a socket file lives: its directory (absolute, so that close() finds it after a chdir) and its name there. */
export interface Place {
  path: string;
  directory: string;
  name: Uint8Array;
  lockName: Uint8Array;
  lockPath: string;
}

function placeOf(path: string): Place {
  const slash = path.lastIndexOf('/');
  const name = path.slice(slash + 1);
  if (name === '') throw invalidArgValue('path', "must name a file, not end with '/'", path);
  const directory = resolvePath(slash === -1 ? '.' : path.slice(0, slash + 1));
  return { path, directory, name: Buffer.from(name), lockName: Buffer.from(`${name}.lock`), lockPath: `${path}.lock` };
}

/** dev and ino of a file, as statAt reports them: what makes it this file and no other. */
type Identity = readonly [dev: bigint, ino: bigint];

/** The socket file this process published: remove() takes it away while it is still ours. */
export class SocketFile {
  readonly #place: Place;
  readonly #identity: Identity;
  #removed: Promise<void> | undefined;

  constructor(place: Place, identity: Identity) {
    this.#place = place;
    this.#identity = identity;
  }

  /**
   * Removes the file if it is still the one published: never a file another process has
   * put at the path since. Under the lock, so that no fdpass process replaces it between
   * the check and the unlink. The directory is opened again rather than kept open for the
   * server's life: no fd to leak if a worker is terminated, and a directory gone or
   * renamed since only means the file stays, as a crashed server's would.
   */
  remove(): Promise<void> {
    this.#removed ??= this.#remove();
    return this.#removed;
  }

  async #remove(): Promise<void> {
    const dir = binding.openDirectoryAt(constants.AT_FDCWD, Buffer.from(this.#place.directory), true);
    if (dir === ENOENT) return; // and the file with it
    if (dir < 0) throw errnoException(dir, 'open', this.#place.directory);
    try {
      await underLock(dir, this.#place, () => check(unlinkIfStill(dir, this.#place, this.#identity), 'unlink', this.#place.path));
    } finally {
      closeFds([dir]);
    }
  }
}

async function publish(sock: number, address: SocketAddress, type: number, mode: number, backlog: number): Promise<SocketFile> {
  const place = placeOf(address.path);
  const dir = binding.openDirectoryAt(constants.AT_FDCWD, Buffer.from(place.directory), true);
  // As bind(2) would say it: ENOENT for a directory that is not there, EACCES, ENOTDIR...
  if (dir < 0) throw errnoException(dir, 'bind', address.path);
  try {
    return PUBLISH_BY_LINK
      ? await publishByLink(sock, dir, place, address, type, mode, backlog)
      : await bindInPlace(sock, dir, place, address, type, mode, backlog);
  } finally {
    closeFds([dir]);
  }
}

/**
 * Linux: bound, given its mode and listening in a private directory, the socket appears at
 * its path by link(2), complete: a client, or another process's stale probe, never finds
 * it without a server behind it, nor with a wider mode than asked.
 */
async function publishByLink(
  sock: number,
  dir: number,
  place: Place,
  address: SocketAddress,
  type: number,
  mode: number,
  backlog: number,
): Promise<SocketFile> {
  const staging = stage(sock, dir, place, mode);
  try {
    check(binding.listen(sock, backlog), 'listen', place.path);
    await underLock(dir, place, () => claim(dir, place, address, type, () => binding.linkAt(staging.dir, STAGED_NAME, dir, place.name)));
    return new SocketFile(place, staging.identity);
  } finally {
    unstage(staging, dir);
  }
}

/**
 * Elsewhere: bound in place, the mode set by the umask around bind (never wider), and
 * listening before the lock is let go, so that no fdpass process probes the socket between
 * bind and listen and takes it for dead. A process that does not take the lock could still
 * swap the file between bind and the stat that records it.
 */
async function bindInPlace(
  sock: number,
  dir: number,
  place: Place,
  address: SocketAddress,
  type: number,
  mode: number,
  backlog: number,
): Promise<SocketFile> {
  return underLock(dir, place, () => {
    claim(dir, place, address, type, () => binding.bindUnix(sock, address.name, false, mode));
    const identity = identityAt(dir, place.name);
    if (!identity) throw errnoException(ENOENT, 'stat', place.path);
    const err = binding.listen(sock, backlog);
    if (err < 0) {
      unlinkIfStill(dir, place, identity);
      throw errnoException(err, 'listen', place.path);
    }
    return new SocketFile(place, identity);
  });
}

/**
 * Makes the socket appear at the path with `appear` (link or bind: 0, or EEXIST /
 * EADDRINUSE while the name is taken), replacing a dead server's file. Anything else at
 * the path is refused with EADDRINUSE, saying what is there. Call it under the lock.
 */
function claim(dir: number, place: Place, address: SocketAddress, type: number, appear: () => number): void {
  let err = appear();
  let detail = place.path;
  if (err === EEXIST || err === EADDRINUSE) {
    const holder = whoHolds(dir, place, address, type);
    if (typeof holder === 'string') {
      detail += `: ${holder}`;
    } else {
      const unlinked = holder.stale ? unlinkIfStill(dir, place, holder.stale) : 0;
      if (unlinked < 0) {
        detail += `: a dead server's file, which could not be removed (unlink ${errnoName(unlinked)})`;
      } else {
        err = appear();
        if (err === EEXIST || err === EADDRINUSE) detail += ': another process put a file there meanwhile';
      }
    }
  }
  // link(2) says EEXIST; bind(2), which the caller asked for, would say EADDRINUSE.
  if (err < 0) throw errnoException(err === EEXIST ? EADDRINUSE : err, 'bind', detail);
}

/** A socket bound in a private directory beside its path, waiting to be linked there. */
interface Staging {
  /** The private directory, open, and its name in the socket's directory. */
  dir: number;
  name: Uint8Array;
  identity: Identity;
}

/**
 * Binds sock in a fresh directory of our own (0700) in the socket's directory and sets its
 * mode there, by name, which is safe only because nobody else can write in that directory.
 * The bind goes through /proc/self/fd/<dir>: the name stays short however long the path,
 * and it reaches the directory we opened even if its name was swapped since.
 */
function stage(sock: number, parent: number, place: Place, mode: number): Staging {
  let name: string;
  for (let attempt = 1; ; attempt++) {
    name = `.fdpass-${randomBytes(6).toString('hex')}`;
    const err = binding.makeDirectoryAt(parent, Buffer.from(name), 0o700);
    if (err === 0) break;
    if (err !== EEXIST || attempt === 5) throw errnoException(err, 'mkdir', `${place.directory}/${name}`);
  }
  const privatePath = `${place.directory}/${name}`;
  const dir = binding.openDirectoryAt(parent, Buffer.from(name), false);
  if (dir < 0) {
    binding.unlinkAt(parent, Buffer.from(name), true);
    throw errnoException(dir, 'open', privatePath);
  }
  const staging: Staging = { dir, name: Buffer.from(name), identity: [0n, 0n] };
  let ours = false;
  try {
    // Whoever can write in the socket's directory can swap ours for theirs before we open
    // it: then touch nothing in theirs.
    const opened = fstatSync(dir);
    ours = opened.isDirectory() && opened.uid === process.geteuid!() && (opened.mode & 0o077) === 0;
    if (!ours) throw errnoException(EPERM, 'open', `${privatePath}: not the private directory just made (swapped by another user?)`);
    const bindName = Buffer.from(`/proc/self/fd/${dir}/${STAGED_NAME.toString()}`);
    const err = binding.bindUnix(sock, bindName, false, mode);
    if (err < 0)
      throw errnoException(err, 'bind', `${place.path}: binding by ${bindName.toString()}${err === ENOENT ? ', which needs /proc' : ''}`);
    // bind gave the file the mode less the umask; make it exactly what was asked.
    check(binding.changeModeAt(dir, STAGED_NAME, mode), 'chmod', `${privatePath}/s`);
    const identity = identityAt(dir, STAGED_NAME);
    if (!identity) throw errnoException(ENOENT, 'stat', `${privatePath}/s`);
    staging.identity = identity;
    return staging;
  } catch (error) {
    if (ours) unstage(staging, parent);
    else closeFds([dir]);
    throw error;
  }
}

/**
 * Removes the private name and directory. Once linked, the socket file lives on at its
 * path; if someone renamed our directory meanwhile, the rmdir may fail (it stays behind,
 * empty) or remove an empty directory of theirs by that name, never anything else.
 */
function unstage(staging: Staging, parent: number): void {
  binding.unlinkAt(staging.dir, STAGED_NAME, false);
  binding.unlinkAt(parent, staging.name, true);
  closeFds([staging.dir]);
}

/** fn() while holding the lock on place's path. */
async function underLock<T>(dir: number, place: Place, fn: () => T): Promise<T> {
  const lock = await lockBeside(dir, place.lockName, place.lockPath);
  try {
    return fn();
  } finally {
    closeFds([lock]);
  }
}

/**
 * The lock on a socket path: an flock on `<name>.lock` beside it, which every fdpass
 * process takes from its stale probe until its file is published, and around its check
 * and unlink in close(). The lock file stays: were it removed, two processes could each
 * lock a file of that name, the removed one and its successor. Resolves to the lock's fd
 * (closing it releases the lock); waits with short pauses, up to timeoutMs.
 */
export async function lockBeside(dir: number, lockName: Uint8Array, lockPath: string, timeoutMs = LOCK_TIMEOUT_MS): Promise<number> {
  const lock = binding.openLockFileAt(dir, lockName);
  if (lock < 0) throw errnoException(lock, 'open', lockPath);
  try {
    const giveUpAt = performance.now() + timeoutMs;
    for (let pause = 1; ; pause = Math.min(2 * pause, MAX_LOCK_PAUSE_MS)) {
      const err = binding.tryLockExclusive(lock);
      if (err === 0) return lock;
      if (err !== EWOULDBLOCK) throw errnoException(err, 'flock', lockPath);
      if (performance.now() >= giveUpAt)
        throw errnoException(ETIMEDOUT, 'flock', `${lockPath}: another process held it for ${timeoutMs} ms`);
      await sleep(pause);
    }
  } catch (error) {
    closeFds([lock]);
    throw error;
  }
}

/** The file at name in dir, a symlink not followed; undefined if there is none. */
function identityAt(dir: number, name: Uint8Array): Identity | undefined {
  const stat = new BigUint64Array(4);
  return binding.statAt(dir, name, stat) === 0 ? [stat[0]!, stat[1]!] : undefined;
}

/** Why the path is taken, or the dead server's file that may be replaced. */
function whoHolds(dir: number, place: Place, address: SocketAddress, type: number): string | { stale?: Identity } {
  const stat = new BigUint64Array(4);
  const err = binding.statAt(dir, place.name, stat);
  if (err === ENOENT) return {}; // gone since we looked: nothing to remove
  if (err < 0) return `cannot tell what is there (lstat ${errnoName(err)})`;
  if ((stat[2]! & BigInt(fs.S_IFMT)) !== BigInt(fs.S_IFSOCK)) return 'the path exists and is not a socket';
  const probe = binding.unixSocket(type);
  if (probe < 0) return `cannot tell whether a server is there (socket ${errnoName(probe)})`;
  const refused = binding.connectUnix(probe, probeName(dir, place, address), false);
  closeFds([probe]);
  if (refused === 0 || refused === EAGAIN) return 'a server is listening there';
  if (refused === EACCES || refused === EPERM) {
    return `the probe's connect was refused permission (${errnoName(refused)}): the file may belong to another user, so it is left alone`;
  }
  if (refused === EPROTOTYPE) return 'a socket of another type is bound there';
  if (refused !== ECONNREFUSED && refused !== ENOENT) return `cannot tell whether a server is there (connect ${errnoName(refused)})`;
  // A server between its bind() and listen() refuses too, and Linux lists its socket by the
  // name it was bound to. fdpass servers are listed under their private name and appear at
  // the path only once listening, so a match here is some other program's socket.
  if (isBoundOnLinux(address.path)) return 'a socket is bound there, not yet listening';
  return { stale: [stat[0]!, stat[1]!] };
}

/** The name to probe: through the directory we opened where the name fits, else the path. */
function probeName(dir: number, place: Place, address: SocketAddress): Uint8Array {
  if (!PUBLISH_BY_LINK) return address.name;
  const name = Buffer.concat([Buffer.from(`/proc/self/fd/${dir}/`), place.name]);
  return name.length <= constants.MAX_SOCKET_PATH_BYTES ? name : address.name;
}

/**
 * Unlinks name if it is still the file `seen` (a symlink not followed): 0, or the unlink's
 * -errno. Nothing there any more, or another file: 0, and nothing done.
 */
function unlinkIfStill(dir: number, place: Place, seen: Identity): number {
  const now = identityAt(dir, place.name);
  if (now === undefined || now[0] !== seen[0] || now[1] !== seen[1]) return 0;
  const err = binding.unlinkAt(dir, place.name, false);
  return err === ENOENT ? 0 : err;
}

/** Whether a live socket is bound to path, by /proc/net/unix (false where there is none). */
function isBoundOnLinux(path: string): boolean {
  let table: string;
  try {
    table = readFileSync('/proc/net/unix', 'latin1');
  } catch {
    return false;
  }
  // Each line ends with the name the socket was bound to, as its process spelled it.
  const endings = [path, resolvePath(path)].map((name) => ` ${Buffer.from(name).toString('latin1')}`);
  return table.split('\n').some((line) => endings.some((ending) => line.endsWith(ending)));
}

function check(err: number, syscall: string, detail: string): void {
  if (err < 0) throw errnoException(err, syscall, detail);
}
