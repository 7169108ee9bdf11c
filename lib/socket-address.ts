// A Unix socket's name as the caller gives it (a path, or a Linux abstract name) and as
// the kernel takes it (bytes for sun_path), validated before any syscall.
import { constants as os } from 'node:os';
import { constants } from './binding';
import { errnoException, invalidArgType, invalidArgValue } from './errors';

export interface SocketAddress {
  /** What the caller gave. */
  readonly path: string;
  readonly abstract: boolean;
  /** The bytes for sun_path, without the NUL. */
  readonly name: Uint8Array;
}

/** How an address is shown in errors: an abstract name with a leading '@', as ss(8) does. */
export function describeAddress(address: SocketAddress): string {
  return address.abstract ? `@${address.path}` : address.path;
}

/**
 * The address for path. A name too long for sun_path is a system error ENAMETOOLONG for
 * `syscall`, as the kernel would report it; wrong types are TypeErrors.
 */
export function socketAddress(path: unknown, abstract: unknown, syscall: string): SocketAddress {
  if (typeof path !== 'string') throw invalidArgType('path', 'of type string', path);
  if (abstract !== undefined && typeof abstract !== 'boolean') throw invalidArgType('abstract', 'of type boolean', abstract);
  const isAbstract = abstract === true;
  if (path.length === 0) throw invalidArgValue('path', 'must be a non-empty string', path);
  if (!isAbstract && path.includes('\0')) throw invalidArgValue('path', 'must be a string without null bytes', path);
  if (isAbstract && !constants.HAVE_ABSTRACT_NAMES) {
    const error = new Error('abstract socket names exist only on Linux') as Error & { code: string };
    error.code = 'ERR_FEATURE_UNAVAILABLE_ON_PLATFORM';
    throw error;
  }
  const name = Buffer.from(path, 'utf8');
  const address = { path, abstract: isAbstract, name };
  if (name.length > constants.MAX_SOCKET_PATH_BYTES) {
    throw errnoException(
      -os.errno.ENAMETOOLONG,
      syscall,
      `${describeAddress(address)} is ${name.length} bytes; a Unix socket name holds at most ${constants.MAX_SOCKET_PATH_BYTES}`,
    );
  }
  return address;
}
