// What counts as an fd in fdpass's API, and how fdpass closes fds.
import { Socket as DgramSocket } from 'node:dgram';
import { closeSync } from 'node:fs';
import { Server, Socket } from 'node:net';
import { binding, constants } from './binding';
import { errnoException, fdpassError, invalidArgType } from './errors';
import { validateFd } from './validators';

/**
 * Anything that has an fd: a number, a FileHandle, a net.Socket / net.Server with an open
 * handle, or a bound dgram.Socket.
 */
export type FdLike =
  | number
  | {
      /** Anything with an fd, such as an fs.promises.FileHandle. */
      readonly fd: number;
    }
  | Socket
  | Server
  | DgramSocket;

/** The fd behind an FdLike, validated. */
export function toFd(value: unknown, name: string): number {
  if (typeof value === 'number') return validateFd(value, name);
  if (value instanceof DgramSocket) return dgramFd(value, name);
  if (typeof value === 'object' && value !== null) {
    if ('fd' in value && typeof value.fd === 'number') return validateFd(value.fd, `${name}.fd`);
    // net.Socket and net.Server keep their fd on the libuv handle wrap (Node has no public
    // accessor; test/misuse.test.ts tells when that changes).
    const handle = (value as { _handle?: { fd?: unknown } | null })._handle;
    if (handle && typeof handle.fd === 'number' && handle.fd >= 0) return validateFd(handle.fd, `${name}._handle.fd`);
  }
  throw invalidArgType(
    name,
    'an fd: a number, a FileHandle, a net.Socket or net.Server with an open handle, or a bound dgram.Socket',
    value,
  );
}

// A dgram.Socket's handle is in its internal state object, under a symbol described 'state
// symbol': reading socket._handle instead prints a deprecation warning (DEP0112) on Node 20,
// which has no public accessor. test/conversions.test.ts tells when either changes.
let dgramState: symbol | undefined;

function dgramFd(socket: DgramSocket, name: string): number {
  dgramState ??= Object.getOwnPropertySymbols(socket).find((symbol) => symbol.description === 'state symbol');
  const state =
    dgramState === undefined
      ? undefined
      : (socket as unknown as Record<symbol, { handle?: { fd?: unknown } | null } | undefined>)[dgramState];
  const fd = state?.handle?.fd;
  if (typeof fd === 'number' && fd >= 0) return validateFd(fd, `${name} (a dgram.Socket)`);
  throw invalidArgType(name, "a bound dgram.Socket (wait for its 'listening' event)", socket);
}

/**
 * The fd of what is about to be sent. A net.Socket only where sending it cannot lose bytes:
 * the far side reads from the kernel, never what this process's Node has read or queued.
 */
export function toSendableFd(value: unknown, name: string): number {
  if (typeof value === 'number' || !(value instanceof Socket)) return toFd(value, name);
  // While connecting, a socket may have no fd yet: say why rather than that it has none.
  if (value.connecting) throw socketInUse(name, 'net.Socket', 'is still connecting (Node reads from it once connected)');
  const fd = toFd(value, name);
  const reason = bytesAtRisk(value);
  if (reason !== undefined) throw socketInUse(name, `net.Socket (fd ${fd})`, reason);
  return fd;
}

function bytesAtRisk(socket: Socket): string | undefined {
  if (socket.readableLength > 0) return `holds ${socket.readableLength} bytes Node has read and nobody has consumed`;
  // Node's own record of whether libuv reads the socket (net.js sets it at each readStart and
  // readStop; test/conversions.test.ts tells when that changes). Anything but false is
  // unknown, and refused.
  const handle = (socket as unknown as { _handle?: { reading?: unknown } | null })._handle;
  if (handle?.reading !== false) return 'Node is reading from (whatever arrives before it is closed here stays in this process)';
  if (socket.writableLength > 0) return `has ${socket.writableLength} bytes written to it that Node has not yet handed to the kernel`;
  return undefined;
}

function socketInUse(name: string, what: string, reason: string): Error {
  return fdpassError(
    'ERR_FDPASS_SOCKET_IN_USE',
    `${name} is a ${what} that ${reason}: sending it would lose those bytes. Send sockets Node has not read ` +
      "from: accept them with net.createServer({ pauseOnConnect: true }), or pause() a client socket before its 'connect'",
  );
}

// Where fds held in a plain array are copied for a native call that takes an Int32Array.
const scratch = new Int32Array(constants.MAX_FDS_PER_MESSAGE);

/**
 * Closes fds fdpass was given (received, or handed over with `close: true`): one native call
 * per message. An fd a Channel owns is left to its channel.
 */
export function closeFds(fds: ArrayLike<number>, count = fds.length): void {
  if (count === 1) {
    binding.close(fds[0]!);
  } else if (fds instanceof Int32Array) {
    binding.closeMany(fds, count);
  } else {
    for (let start = 0; start < count; start += scratch.length) {
      const chunk = Math.min(scratch.length, count - start);
      for (let i = 0; i < chunk; i++) scratch[i] = fds[start + i]!;
      binding.closeMany(scratch, chunk);
    }
  }
}

/**
 * Closes an fd that recv() (or a received message) gave you. Unlike fs.closeSync, it does
 * not warn in a worker thread, where Node warns about closing fds that fs did not open.
 * Throws a system error (code 'EBADF'...) if the fd is not open, and
 * 'ERR_FDPASS_FD_OWNED_BY_CHANNEL' for a Channel's own socket: close the channel instead.
 */
export function closeFd(fd: number): void {
  validateFd(fd, 'fd');
  const err = binding.close(fd);
  if (err === constants.FD_OWNED_BY_CHANNEL) {
    throw fdpassError('ERR_FDPASS_FD_OWNED_BY_CHANNEL', `fd ${fd} is a Channel's socket: close the channel (channel.close()) instead`);
  }
  if (err < 0) throw errnoException(err, 'close');
}

/**
 * Closes an fd the caller handed over with `close: true`, through whatever opened it: a
 * socket or server is destroyed, a FileHandle closed, a number closed by fs. Closing the
 * number underneath would leave Node's own record of it (a libuv handle, a FileHandle, a
 * worker's fd tracking) to close that number again later, when it may be someone else's.
 */
export function closeHandedFd(value: FdLike): void {
  try {
    if (typeof value === 'number') closeSync(value);
    else if (value instanceof Socket) value.destroy();
    else if (value instanceof Server) value.close();
    else if (hasClose(value)) void Promise.resolve(value.close()).catch(() => {});
    else closeSync(value.fd);
  } catch {
    // Already closed or never valid: the send reported that; nothing is left to close.
  }
}

function hasClose(value: object): value is { close(): unknown } {
  return typeof (value as { close?: unknown }).close === 'function';
}
