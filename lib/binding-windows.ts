// The Windows addon (addon/win/), and what the POSIX binding is on Windows: calls that throw
// ERR_FEATURE_UNAVAILABLE_ON_PLATFORM when made, so that every module loads and only what
// Windows lacks fails, at its call, saying so.
import { closeSync } from 'node:fs';
import { unavailableOnPlatform } from './errors';

/** What addon/win/ exports. Handle values are BigInts; errors are libuv's negative codes. */
export interface WindowsBinding {
  /** GetProcessHandleCount of this process, or -error: the Windows count of open fds. */
  processHandleCount(): number;
  /** Each open handle value below 2^16 with its object's type name (for tests: what a count that went up left open). */
  openHandles(): [number, string][];
  /** Wine's version (ntdll's wine_get_version), or null on Windows itself. */
  wineVersion(): string | null;
  /** A connected loopback TCP pair, both non-blocking: out = [fd, fd]; 0 or -error. */
  socketpair(out: Int32Array): number;
  /** A listener on 127.0.0.1:port (0: any), blocking: its fd or -error. */
  listenLoopback(port: number): number;
  /** The port a socket is bound to, or -error. */
  localPort(fd: number): number;
  /** accept(2) on a listener's fd: the connection's fd or -error. */
  accept(fd: number): number;
  /** A blocking connection to 127.0.0.1:port: its fd or -error. */
  connectLoopback(port: number): number;
  setNonBlocking(fd: number, nonBlocking: boolean): number;
  /** recv(2) into buffer[offset, offset + length): bytes, 0 at end of stream, or -error (EAGAIN). */
  recv(fd: number, buffer: Uint8Array, offset: number, length: number): number;
  /** send(2) of all of buffer (waits for room once the first bytes went, 5 s at most): bytes, or -error (EAGAIN if none went, ETIMEDOUT if the peer stopped reading). */
  sendAll(fd: number, buffer: Uint8Array): number;
  /** A socket's handle value and both its addresses, as text, or -error: tells it from a later socket with the same fd number. */
  socketIdentity(fd: number): string | number;
  /** A private, non-inheritable copy of fd's handle, in this process: its value, or -error. */
  duplicateOwnHandle(fd: number): bigint | number;
  closeHandle(handle: bigint): number;
  /**
   * The process at the other end of a connected socket; 0 when the system names none (Wine);
   * or -error with stage[0] the call that refused: 0 getsockname, 1 WSAIoctl, 2 getpeername
   * (EAFNOSUPPORT: neither AF_UNIX nor loopback), 3 GetExtendedTcpTable (ENOTCONN: no row).
   */
  peerProcessId(fd: number, stage: Int32Array): number;
  /** A handle to process pid that may take handles out of it (PROCESS_DUP_HANDLE), or -error. */
  openProcess(pid: number): bigint | number;
  /**
   * Takes handle out of process (DUPLICATE_CLOSE_SOURCE) as a node.exe fd, or -error with
   * stage[0] the call that failed: 1 DuplicateHandle, 2 uv_open_osfhandle. The caller closes process.
   */
  pullHandle(process: bigint, handle: bigint, stage: Int32Array): number;
}

// The POSIX calls that have a Windows meaning without SCM_RIGHTS: closing an fd (node.exe's
// own fds, which its fs closes) and asking whether a channel owns one (none does yet).
const windowsStandIns: Record<string, unknown> = {
  close(fd: number): number {
    try {
      closeSync(fd);
      return 0;
    } catch (error) {
      return (error as { errno?: number }).errno ?? -1;
    }
  },
  closeMany(fds: Int32Array, count: number): number {
    for (let i = 0; i < count; i++) (windowsStandIns.close as (fd: number) => number)(fds[i]!);
    return 0;
  },
  isOwnedFd: () => false,
  // fd.ts sizes its close batches from this: without it closeFds of an array never ends.
  constants: { MAX_FDS_PER_MESSAGE: 253 },
};

/** The POSIX binding's shape on Windows: each call the platform lacks throws when made. */
export function posixCallsUnavailable<T extends object>(): T {
  return new Proxy(windowsStandIns, {
    get(target, name) {
      if (typeof name !== 'string' || name in target) return target[name as string];
      return () => {
        throw unavailableOnPlatform(
          `fdpass: ${name}() is not available on Windows (it needs Unix domain sockets with SCM_RIGHTS); ` +
            'see README "Windows" for what fdpass offers there',
        );
      };
    },
  }) as T;
}
