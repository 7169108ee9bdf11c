// Unix sockets made or set up by hand: a connected pair, and blocking mode.
import { binding, windowsBinding } from './binding';
import { errnoException, unavailableOnPlatform } from './errors';
import { socketTypeNumber, type SocketType } from './socket-type';
import { validateBoolean, validateFd, validateOneOf } from './validators';

/**
 * A connected pair of Unix sockets, both ends close-on-exec and non-blocking. On Windows, a
 * pair of loopback TCP sockets (Wine has no AF_UNIX), non-inheritable: 'stream' only.
 */
export function socketpair(type: SocketType = 'stream'): [number, number] {
  const out = new Int32Array(2);
  if (process.platform === 'win32') {
    if (validateOneOf(type, 'type', ['stream', 'seqpacket', 'dgram']) !== 'stream') {
      throw unavailableOnPlatform(`socketpair('${type}') is not available on Windows: only 'stream' (a loopback TCP pair)`);
    }
    const err = windowsBinding.socketpair(out);
    if (err < 0) throw errnoException(err, 'socketpair');
    return [out[0]!, out[1]!];
  }
  const err = binding.socketpair(socketTypeNumber(type), out);
  if (err < 0) throw errnoException(err, 'socketpair');
  return [out[0]!, out[1]!];
}

/** Makes fd blocking (IO::FDPass's default) or non-blocking. On Windows, a socket only. */
export function setBlocking(fd: number, blocking: boolean): void {
  validateFd(fd, 'fd');
  validateBoolean(blocking, 'blocking');
  if (process.platform === 'win32') {
    const err = windowsBinding.setNonBlocking(fd, !blocking);
    if (err < 0) throw errnoException(err, 'ioctlsocket');
    return;
  }
  const err = binding.setNonBlocking(fd, !blocking);
  if (err < 0) throw errnoException(err, 'fcntl');
}
