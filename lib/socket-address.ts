// A Unix socket's name as the caller gives it (a path, or a Linux abstract name) and as
// the kernel takes it (bytes for sun_path), validated before any syscall.
import { constants as os } from 'node:os';
import { constants } from './binding';
import { errnoException, invalidArgType, invalidArgValue, unavailableOnPlatform } from './errors';
import { socketTypeNumber } from './socket-type';
import { validateOptions } from './validators';

/** The socket types a server listens with and a client connects with. */
export type ServerSocketType = 'stream' | 'seqpacket';

/** Where a server listens or a client connects: what listen() and connect() take alike. */
export interface SocketPathOptions {
  /** A file path, or with `abstract` a name in Linux's abstract namespace. */
  path: string;
  /**
   * A Linux abstract name: no file, so no file permissions either; anyone on the host who
   * knows the name can connect, and a server's `allow` is the only guard.
   */
  abstract?: boolean;
  /** Default 'stream'. */
  type?: ServerSocketType;
}

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
  if (isAbstract && !constants.HAVE_ABSTRACT_NAMES) throw unavailableOnPlatform('abstract socket names exist only on Linux');
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

/**
 * listen()'s and connect()'s first argument (a path, or options with one), checked: the
 * options, the address, and the socket type as a name and as the kernel's number.
 */
export function socketPathOptions<T extends SocketPathOptions>(
  pathOrOptions: string | T,
  syscall: string,
): { options: Partial<T>; address: SocketAddress; type: ServerSocketType; typeNumber: number } {
  const options: Partial<T> =
    typeof pathOrOptions === 'string' ? ({ path: pathOrOptions } as Partial<T>) : validateOptions(pathOrOptions, 'options');
  const address = socketAddress(options.path, options.abstract, syscall);
  const type = options.type ?? 'stream';
  return { options, address, type, typeNumber: socketTypeNumber(type, ['stream', 'seqpacket']) };
}
