// The IO::FDPass wire format: one message is one zero byte carrying exactly one fd.

/**
 * Decodes a message that recvmsg returned: the fd, 'eof', or why it is not a bare fd.
 * firstByte is its first data byte, if it had any. The caller closes the fds when this
 * does not return one.
 */
export function decodeBareFd(bytes: number, firstByte: number, fds: ArrayLike<number>, nfds: number): number | 'eof' | string {
  if (bytes === 0 && nfds === 0) return 'eof';
  if (bytes === 1 && nfds === 1 && firstByte === 0) return fds[0]!;
  if (nfds === 0) return `${bytes} byte(s) of data arrived without an fd`;
  if (nfds > 1) return `${nfds} fds arrived in one message, where one was expected; all were closed`;
  return `an fd arrived with ${bytes} byte(s) of data other than one zero byte; it was closed`;
}
