// What counts as an fd in fdpass's API, and how fdpass closes fds.
import { closeSync } from 'node:fs';
import { Server, Socket } from 'node:net';
import { binding, constants } from './binding';
import { errnoException, fdpassError, invalidArgType } from './errors';
import { validateFd } from './validators';

/** Anything that has an fd: a number, a FileHandle, or a net.Socket / net.Server with an open handle. */
export type FdLike = number | { readonly fd: number } | Socket | Server;

/** The fd behind an FdLike, validated. */
export function toFd(value: unknown, name: string): number {
  if (typeof value === 'number') return validateFd(value, name);
  if (typeof value === 'object' && value !== null) {
    if ('fd' in value && typeof value.fd === 'number') return validateFd(value.fd, `${name}.fd`);
    // net.Socket and net.Server keep their fd on the libuv handle wrap (Node has no public
    // accessor; test/misuse.test.ts tells when that changes).
    const handle = (value as { _handle?: { fd?: unknown } | null })._handle;
    if (handle && typeof handle.fd === 'number' && handle.fd >= 0) return validateFd(handle.fd, `${name}._handle.fd`);
  }
  throw invalidArgType(name, 'an fd: a number, a FileHandle, or a net.Socket or net.Server with an open handle', value);
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
