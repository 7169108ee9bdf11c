// What counts as an fd in fdpass's API, and how fdpass closes fds it owns.
import { closeSync } from 'node:fs';
import { Server, Socket } from 'node:net';
import { binding } from './binding';
import { invalidArgType, outOfRange } from './errors';

/** Anything that has an fd: a number, a FileHandle, or a net.Socket / net.Server with an open handle. */
export type FdLike = number | { readonly fd: number } | Socket | Server;

const MAX_FD = 0x7fffffff;

export function validateFd(value: unknown, name: string): number {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value);
  if (!Number.isInteger(value) || value < 0 || value > MAX_FD) {
    throw outOfRange(name, `an integer >= 0 and <= ${MAX_FD}`, value);
  }
  return value;
}

/** The fd behind an FdLike, validated. */
export function toFd(value: unknown, name: string): number {
  if (typeof value === 'number') return validateFd(value, name);
  if (typeof value === 'object' && value !== null) {
    if ('fd' in value && typeof value.fd === 'number') return validateFd(value.fd, `${name}.fd`);
    // net.Socket and net.Server keep their fd on the libuv handle wrap.
    const handle = (value as { _handle?: { fd?: unknown } | null })._handle;
    if (handle && typeof handle.fd === 'number' && handle.fd >= 0) return validateFd(handle.fd, `${name}._handle.fd`);
  }
  throw invalidArgType(name, 'an fd: a number, a FileHandle, or a net.Socket or net.Server with an open handle', value);
}

// Where fds held in a plain array are copied for a native call that takes an Int32Array.
const scratch = new Int32Array(binding.constants.MAX_FDS_PER_MESSAGE);

/** fds[start..start + count) copied into a shared Int32Array, valid until the next call. */
function asInt32Array(fds: ArrayLike<number>, start = 0, count = fds.length - start): Int32Array {
  for (let i = 0; i < count; i++) scratch[i] = fds[start + i]!;
  return scratch;
}

/** Closes fds fdpass owns (or the caller asked it to close): one native call per message. */
export function closeFds(fds: ArrayLike<number>, count = fds.length): void {
  if (count === 1) {
    binding.close(fds[0]!);
  } else if (fds instanceof Int32Array) {
    binding.closeMany(fds, count);
  } else {
    for (let start = 0; start < count; start += scratch.length) {
      const chunk = Math.min(scratch.length, count - start);
      binding.closeMany(asInt32Array(fds, start, chunk), chunk);
    }
  }
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
