// The IO::FDPass wire format: one message is one zero byte carrying exactly one fd.

/**
 * Why a message recvmsg returned is not a bare fd (the addon hands a bare fd straight
 * back): 'eof', or a description. firstByte is its first data byte, if it had any.
 * The caller closes the message's fds.
 */
export function whyNotBareFd(bytes: number, firstByte: number, nfds: number): string {
  if (bytes === 0 && nfds === 0) return 'eof';
  if (nfds === 0) return `${bytes} byte(s) of data arrived without an fd`;
  if (nfds > 1) return `${nfds} fds arrived in one message, where one was expected; all were closed`;
  return `an fd arrived with ${bytes} byte(s) of data other than one zero byte (${firstByte}); it was closed`;
}
