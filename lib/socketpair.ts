// Unix sockets made or set up by hand: a connected pair, and blocking mode.
import { binding } from './binding';
import { errnoException } from './errors';
import { socketTypeNumber, type SocketType } from './socket-type';
import { validateBoolean, validateFd } from './validators';

/** A connected pair of Unix sockets, both ends close-on-exec and non-blocking. */
export function socketpair(type: SocketType = 'stream'): [number, number] {
  const out = new Int32Array(2);
  const err = binding.socketpair(socketTypeNumber(type), out);
  if (err < 0) throw errnoException(err, 'socketpair');
  return [out[0]!, out[1]!];
}

/** Makes fd blocking (IO::FDPass's default) or non-blocking. */
export function setBlocking(fd: number, blocking: boolean): void {
  validateFd(fd, 'fd');
  validateBoolean(blocking, 'blocking');
  const err = binding.setNonBlocking(fd, !blocking);
  if (err < 0) throw errnoException(err, 'fcntl');
}
