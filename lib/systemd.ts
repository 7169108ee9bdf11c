// systemd's two fd protocols, from the service's side: the sockets systemd (or
// systemd-socket-activate) opened for this process, found through LISTEN_PID, LISTEN_FDS and
// LISTEN_FDNAMES (sd_listen_fds(3)); and state, with fds for the fd store, sent to the manager
// over NOTIFY_SOCKET (sd_pid_notify_with_fds(3)).
import { constants as os } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { debuglog } from 'node:util';
import { binding, constants } from './binding';
import { abortError, errnoException, fdpassError, invalidArgType, invalidArgValue, outOfRange, unavailableOnPlatform } from './errors';
import { toFd, type FdLike } from './fd';
import { describeAddress, socketAddress, type SocketAddress } from './socket-address';
import { validateAbortSignal, validateBoolean, validateOptions, validateString } from './validators';

const debug = debuglog('fdpass');

/** The first fd systemd passes (SD_LISTEN_FDS_START): the rest follow it, in order. */
export const LISTEN_FDS_START = 3;

/** What listenFds() reads, and by default removes from process.env (LISTEN_PIDFDID: newer systemd only). */
const LISTEN_VARIABLES = ['LISTEN_PID', 'LISTEN_PIDFDID', 'LISTEN_FDS', 'LISTEN_FDNAMES'] as const;

/** systemd's name for an fd when LISTEN_FDNAMES is absent. */
const UNNAMED = 'unknown';

/** An fd systemd passed to this process, and its name (a socket unit's FileDescriptorName=, or --fdname=). */
export interface ListenFd {
  /** The fd: 3 and up, in systemd's order. */
  readonly fd: number;
  /** Its name from LISTEN_FDNAMES, or 'unknown' without one. */
  readonly name: string;
}

/** Options of {@link listenFds}. */
export interface ListenFdsOptions {
  /**
   * Remove LISTEN_PID, LISTEN_PIDFDID, LISTEN_FDS and LISTEN_FDNAMES from process.env, whatever
   * the outcome (sd_listen_fds(unset_environment)), so that a child cannot mistake them for
   * its own. Default true.
   */
  unsetEnvironment?: boolean;
}

/**
 * The fds systemd passed to this process, in order from fd 3, with their names (from
 * LISTEN_FDNAMES; 'unknown' without it): sd_listen_fds_with_names(3) for Node. Each is made
 * close-on-exec, so this process's children do not inherit it. They are yours from here on:
 * hand a listening socket to `net.createServer().listen({ fd })`, which then owns it.
 *
 * An empty array when the process was not socket-activated: no LISTEN_PID, or a LISTEN_PID
 * that is another process's (as under a wrapper that forks: npx, npm start, tsx's own CLI; run
 * `node --import tsx` instead). LISTEN_PIDFDID, when set, is not checked.
 * Malformed variables throw ERR_FDPASS_INVALID_ENVIRONMENT; an fd that LISTEN_FDS counts but
 * is not open throws EBADF (syscall 'fcntl').
 *
 * Take them once: a second call returns [] if the first unset the variables (the default), or
 * the same fd numbers again if it kept them; it never opens anything.
 * @example
 * import http from 'node:http';
 * import { listenFds, notify } from 'fdpass';
 *
 * const web = listenFds().find((socket) => socket.name === 'http'); // [] when not socket-activated
 * http.createServer(handler).listen(web ? { fd: web.fd } : 8080);   // the server owns the fd now
 * await notify({ READY: 1, STATUS: 'serving' });
 */
export function listenFds(options?: ListenFdsOptions): ListenFd[] {
  const { unsetEnvironment = true } = validateOptions(options, 'options');
  validateBoolean(unsetEnvironment, 'options.unsetEnvironment');
  if (process.platform === 'win32') throw unavailableOnPlatform('listenFds(): systemd socket activation exists only on Linux');
  try {
    return takeListenFds();
  } finally {
    if (unsetEnvironment) for (const name of LISTEN_VARIABLES) delete process.env[name];
  }
}

function takeListenFds(): ListenFd[] {
  const pidValue = process.env.LISTEN_PID;
  if (pidValue === undefined) return [];
  const pid = positiveInteger('LISTEN_PID', pidValue, 0x7fff_ffff);
  if (pid !== process.pid) {
    debug('listenFds: LISTEN_PID=%d is not this process (%d): no fds taken', pid, process.pid);
    return [];
  }
  const countValue = process.env.LISTEN_FDS;
  if (countValue === undefined) return [];
  const count = positiveInteger('LISTEN_FDS', countValue, 0x7fff_ffff - LISTEN_FDS_START);
  const fds: number[] = [];
  for (let fd = LISTEN_FDS_START; fd < LISTEN_FDS_START + count; fd++) {
    const err = binding.setCloseOnExec(fd, true);
    if (err < 0) throw errnoException(err, 'fcntl', `LISTEN_FDS=${count}, but fd ${fd} is not open`);
    fds.push(fd);
  }
  // As systemd does: the fds are close-on-exec before a wrong count of names is an error.
  const namesValue = process.env.LISTEN_FDNAMES;
  const names = namesValue === undefined ? fds.map(() => UNNAMED) : namesValue.split(':');
  if (names.length !== count) {
    throw fdpassError(
      'ERR_FDPASS_INVALID_ENVIRONMENT',
      `LISTEN_FDNAMES has ${names.length} name(s) for LISTEN_FDS=${count}: '${excerpt(namesValue ?? '')}'`,
    );
  }
  return fds.map((fd, i) => Object.freeze({ fd, name: names[i]! }));
}

function positiveInteger(variable: string, value: string, max: number): number {
  const number = /^[1-9]\d{0,9}$/.test(value) ? Number(value) : NaN;
  if (!(number <= max)) {
    throw fdpassError('ERR_FDPASS_INVALID_ENVIRONMENT', `${variable} must be an integer from 1 to ${max}, not '${excerpt(value)}'`);
  }
  return number;
}

function excerpt(value: string): string {
  return value.length > 40 ? `${value.slice(0, 37)}...` : value;
}

/**
 * What notify() sends: the text of one datagram ('READY=1', 'STATUS=up\nMAINPID=42'), or its
 * variables, sent one a line in the object's order.
 */
export type NotifyState = string | Readonly<Record<string, string | number>>;

/** Options of {@link notify}. */
export interface NotifyOptions {
  /** Sent with the state, in SCM_RIGHTS (at most 253). The caller keeps them: keep them open until the call settles. */
  fds?: readonly FdLike[];
  /** Gives up waiting for room at the manager's socket: rejects with an AbortError, nothing sent. */
  signal?: AbortSignal;
}

/**
 * Sends state (and fds) to the service manager in one datagram to NOTIFY_SOCKET, a path or,
 * when it starts with '@', an abstract name: sd_pid_notify_with_fds(3) for Node. Resolves true
 * once the manager's socket has it, or false, sending nothing, when NOTIFY_SOCKET is not set
 * (not started by systemd). While the manager's socket is full it waits and tries again; calls
 * are sent in the order they were made.
 *
 * Throws a TypeError or RangeError at the call for a bad argument; rejects with a system error
 * (code, errno, syscall 'connect' or 'sendmsg') when the kernel refuses, and with
 * ERR_FDPASS_INVALID_ENVIRONMENT when NOTIFY_SOCKET is no Unix socket address.
 */
export function notify(state: NotifyState, options?: NotifyOptions): Promise<boolean> {
  const { fds, signal } = validateOptions(options, 'options');
  const datagram = notifyText(state);
  const fdNumbers = fdsOf(fds);
  validateAbortSignal(signal, 'options.signal');
  if (process.platform === 'win32') throw unavailableOnPlatform('notify(): systemd exists only on Linux');
  const earlier = earlierNotifies;
  const call = waitForTurn(earlier, signal).then(() => sendToManager(datagram, fdNumbers, signal));
  // An aborted call leaves the line at once, but the next still waits for the ones before it.
  // (Settling to undefined: a chain of results would grow with every call.)
  earlierNotifies = Promise.allSettled([earlier, call]).then(() => undefined);
  return call;
}

/** Settles once every notify() called so far has: the next one sends after them, in call order. */
let earlierNotifies: Promise<void> = Promise.resolve();

/** Resolves when earlier settles; rejects with an AbortError if the signal aborts first. */
async function waitForTurn(earlier: Promise<void>, signal: AbortSignal | undefined): Promise<void> {
  if (signal === undefined) {
    await earlier;
    return;
  }
  if (signal.aborted) throw abortError(signal);
  let onAbort: (() => void) | undefined;
  try {
    await Promise.race([
      earlier,
      new Promise<never>((_, reject) => {
        onAbort = () => reject(abortError(signal));
        signal.addEventListener('abort', onAbort, { once: true });
      }),
    ]);
  } finally {
    signal.removeEventListener('abort', onAbort!);
  }
}

/** Options of {@link storeFds}. */
export interface StoreFdsOptions {
  /**
   * FDNAME=: the name the fds come back with in LISTEN_FDNAMES after a restart (1 to 255
   * printable ASCII characters, no ':'). Default: systemd's, 'stored'.
   */
  name?: string;
  /** false sends FDPOLL=0: the manager does not drop the fds from the store when they report POLLHUP or POLLERR. Default true. */
  poll?: boolean;
  /** Gives up waiting for room at the manager's socket: rejects with an AbortError, nothing sent. */
  signal?: AbortSignal;
}

/**
 * Hands fds to systemd's fd store (FDSTORE=1, with FDNAME= and the fds in one datagram), which
 * keeps them across a restart of the service and passes them back through listenFds(). The
 * unit needs FileDescriptorStoreMax= above 0, or the manager closes them. The caller keeps
 * its own fds. Resolves as notify() does: false when NOTIFY_SOCKET is not set.
 */
export function storeFds(fds: readonly FdLike[], options?: StoreFdsOptions): Promise<boolean> {
  const { name, poll = true, signal } = validateOptions(options, 'options');
  if (!Array.isArray(fds) || fds.length === 0) throw invalidArgType('fds', 'a non-empty array of fds', fds);
  validateBoolean(poll, 'options.poll');
  const state: Record<string, string> = { FDSTORE: '1' };
  if (name !== undefined) state.FDNAME = fdName(name);
  if (!poll) state.FDPOLL = '0';
  return notify(state, { fds, signal });
}

/** systemd's rule for a name in LISTEN_FDNAMES (fdname_is_valid), less the empty name, which only confuses. */
function fdName(name: unknown): string {
  validateString(name, 'options.name');
  if (!/^[\x20-\x39\x3b-\x7e]{1,255}$/.test(name as string)) {
    throw invalidArgValue('options.name', "must be 1 to 255 printable ASCII characters, without ':'", name);
  }
  return name as string;
}

function notifyText(state: unknown): Buffer {
  let text: string;
  if (typeof state === 'string') {
    text = state;
  } else if (typeof state === 'object' && state !== null && !Array.isArray(state)) {
    text = Object.entries(state as Record<string, unknown>)
      .map(([key, value]) => `${notifyKey(key)}=${notifyValue(key, value)}`)
      .join('\n');
  } else {
    throw invalidArgType('state', 'a string or an object of variables', state);
  }
  // The manager drops a message with a NUL in it.
  if (text.includes('\0')) throw invalidArgValue('state', 'must not contain null bytes', state);
  return Buffer.from(text, 'utf8');
}

function notifyKey(key: string): string {
  if (!/^[^=\n]+$/.test(key)) throw invalidArgValue('state', `has a variable name that is empty or holds '=' or a newline`, key);
  return key;
}

function notifyValue(key: string, value: unknown): string {
  if (typeof value !== 'string' && typeof value !== 'number') throw invalidArgType(`state.${key}`, 'a string or a number', value);
  const text = String(value);
  if (text.includes('\n')) throw invalidArgValue(`state.${key}`, 'must not contain a newline (one variable a line)', value);
  return text;
}

function fdsOf(fds: unknown): Int32Array {
  if (fds === undefined) return new Int32Array(0);
  if (!Array.isArray(fds)) throw invalidArgType('options.fds', 'an array of fds', fds);
  if (fds.length > constants.MAX_FDS_PER_MESSAGE) {
    throw outOfRange('options.fds.length', `at most ${constants.MAX_FDS_PER_MESSAGE} (Linux's limit per message)`, fds.length);
  }
  return Int32Array.from(fds as unknown[], (fd, i) => toFd(fd, `options.fds[${i}]`));
}

/** NOTIFY_SOCKET's address, or undefined when it is not set. */
function managerAddress(): SocketAddress | undefined {
  const value = process.env.NOTIFY_SOCKET;
  if (value === undefined) return undefined;
  if ((value[0] !== '/' && value[0] !== '@') || value.length === 1) {
    throw fdpassError(
      'ERR_FDPASS_INVALID_ENVIRONMENT',
      `NOTIFY_SOCKET must be an absolute path or '@' and an abstract name, not '${excerpt(value)}' (vsock addresses are not supported)`,
    );
  }
  return value[0] === '@' ? socketAddress(value.slice(1), true, 'connect') : socketAddress(value, false, 'connect');
}

/** The longest wait between two tries while the manager's socket is full, in ms. */
const MAX_RETRY_WAIT_MS = 50;

async function sendToManager(datagram: Buffer, fds: Int32Array, signal: AbortSignal | undefined): Promise<boolean> {
  if (signal?.aborted) throw abortError(signal);
  const address = managerAddress();
  if (address === undefined) return false;
  const sock = binding.unixSocket(constants.SOCK_DGRAM);
  if (sock < 0) throw errnoException(sock, 'socket');
  try {
    // connect, then send: the one datagram sendto would send, from calls the addon has.
    const err = binding.connectUnix(sock, address.name, address.abstract);
    if (err < 0) throw errnoException(err, 'connect', describeAddress(address));
    for (let wait = 1; ; wait = Math.min(2 * wait, MAX_RETRY_WAIT_MS)) {
      const sent = binding.sendmsg(sock, datagram, 0, datagram.length, fds, fds.length);
      if (sent >= 0) return true; // a datagram goes whole or not at all
      if (sent !== -os.errno.EAGAIN) throw errnoException(sent, 'sendmsg', describeAddress(address));
      // The manager's receive queue is full. Its socket cannot be watched for room from here
      // (no poll handle for a lone datagram socket): try again shortly.
      try {
        await sleep(wait, undefined, { signal });
      } catch {
        throw abortError(signal!);
      }
    }
  } finally {
    binding.close(sock);
  }
}
