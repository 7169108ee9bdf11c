// What counts as an fd in fdpass's API, and how fdpass closes fds it owns.
import type { Server, Socket } from 'node:net';
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

/** Closes fds fdpass owns (or the caller asked it to close). */
export function closeFds(fds: ArrayLike<number>, count = fds.length): void {
  for (let i = 0; i < count; i++) binding.close(fds[i]!);
}
