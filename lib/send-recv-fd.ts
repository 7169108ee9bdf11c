// IO::FDPass's two calls, on its wire format: one zero byte of data carrying one fd.
// Blocking or not as the socket is; the reason for a failure is kept for lastError().
import { whyNotBareFd } from './bare-fd';
import { binding, constants } from './binding';
import { UV_EOF, errnoException, fdpassError, truncatedError, type FdpassError, type SystemError } from './errors';
import { closeFds, toSendableFd, type FdLike } from './fd';
import { recvHandle, sendHandle } from './send-recv-fd-windows';
import { validateFd } from './validators';

const windows = process.platform === 'win32';

// Where recv() finds a message that is not a bare fd: [bytes, nfds, msg_flags, first data
// byte, fds...]. A bare fd, the common case, passes no buffer at all.
const REPORT_FDS = 4;
const receiveReport = new Int32Array(new ArrayBuffer(4 * (REPORT_FDS + constants.MAX_FDS_PER_MESSAGE)));
if (!windows) binding.setReceiveReport(receiveReport);

let last: SystemError | FdpassError | null = null;

/**
 * Why the last `send` or `recv` of this thread failed (`code` 'EAGAIN', 'EOF', 'EBADF',
 * 'ERR_FDPASS_BAD_MESSAGE'...), or null after a success: JavaScript's `$!`.
 */
export function lastError(): SystemError | FdpassError | null {
  return last;
}

/**
 * Sends fd over socketFd. The sender keeps its fd. false on failure: see lastError().
 * On Windows, IO::FDPass's record (process id and handle value) over a stream socket: the
 * receiver takes the handle from this process, which must still be running then.
 * @example
 * import { send, recv, lastError, socketpair, setBlocking } from 'fdpass';
 *
 * const [a, b] = socketpair();
 * setBlocking(a, true);
 * setBlocking(b, true);
 * if (!send(a, fd)) throw lastError(); // true, or false with the reason in lastError()
 * const received = recv(b);            // the fd, or -1 (see lastError())
 */
export function send(socketFd: number, fd: FdLike): boolean {
  validateFd(socketFd, 'socketFd');
  if (windows) {
    last = sendHandle(socketFd, toSendableFd(fd, 'fd'));
    return last === null;
  }
  const sent = binding.sendFd(socketFd, toSendableFd(fd, 'fd'), 0);
  if (sent < 0) {
    last = errnoException(sent, 'sendmsg');
    return false;
  }
  last = null;
  return true;
}

/**
 * Receives one fd from socketFd; the caller owns it (close-on-exec is set).
 * -1 on failure: see lastError(), whose code is 'EOF' when the peer has closed.
 */
export function recv(socketFd: number): number {
  validateFd(socketFd, 'socketFd');
  if (windows) {
    const received = recvHandle(socketFd);
    last = typeof received === 'number' ? null : received;
    return typeof received === 'number' ? received : -1;
  }
  const received = binding.recvFd(socketFd, 0);
  if (received >= 0) {
    last = null;
    return received;
  }
  if (received !== constants.NOT_BARE_FD) {
    last = errnoException(received, 'recvmsg');
    return -1;
  }
  const bytes = receiveReport[0]!;
  const nfds = receiveReport[1]!;
  const flags = receiveReport[2]!;
  const firstByte = receiveReport[3]!;
  const fds = receiveReport.subarray(REPORT_FDS, REPORT_FDS + nfds);
  if (flags & constants.MSG_CTRUNC) {
    last = truncatedError('recvmsg'); // the addon closed what arrived
    return -1;
  }
  const result = whyNotBareFd(bytes, firstByte, nfds);
  closeFds(fds, nfds); // not a bare fd: nothing here is returned
  last =
    result === 'eof'
      ? errnoException(UV_EOF, 'recvmsg', 'the peer closed the socket')
      : fdpassError('ERR_FDPASS_BAD_MESSAGE', `recvmsg: ${result}`);
  return -1;
}
