// The native addon, loaded once per thread by node-gyp-build, with its types.
import path from 'node:path';
import load from 'node-gyp-build';

export interface PollWrap {
  /** 0 or -errno. Takes ownership of fd when ownsFd: the close callback closes it. */
  open(fd: number, ownsFd: boolean): number;
  /** 0 or -errno; both false stops polling. batchLimit: most records per wake-up (default: what the buffers hold). */
  start(readable: boolean, writable: boolean, batchLimit?: number): number;
  ref(): this;
  unref(): this;
  hasRef(): boolean;
  /** true when onClose will be called (after the fd is closed). */
  close(onClose: () => void): boolean;
  /**
   * Where JS records the received fds it holds for nobody: [head, tail, fds...]. Read when
   * the handle starts closing (close() or teardown); those fds are closed with it.
   */
  setLedger(slots: Int32Array): void;
}

export interface PollWrapConstructor {
  /**
   * onEvent(status, records, writable): status < 0 is a poll error; records is the number
   * of messages the native side received into the shared buffers on this wake-up: message
   * i's bytes at data[i * slotBytes], its fds at fds[i * MAX_FDS_PER_MESSAGE], and
   * [bytes or -errno, nfds, msg_flags] at records[3 * i]. records ends with one extra slot
   * that JS zeroes to claim the batch; else the addon closes its fds.
   */
  new (
    onEvent: (status: number, records: number, writable: boolean) => void,
    data: Uint8Array,
    fds: Int32Array,
    records: Int32Array,
    slotBytes: number,
    /** A listening socket: each wake-up accepts connections, connection i's fd at fds[i * MAX_FDS_PER_MESSAGE]. */
    accepts?: boolean,
  ): PollWrap;
}

export interface Binding {
  socketpair(type: number, out: Int32Array): number;
  socketType(fd: number): number;
  setNonBlocking(fd: number, nonBlocking: boolean): number;
  sendmsg(sock: number, data: Uint8Array, offset: number, length: number, fds: Int32Array, nfds: number, flags: number): number;
  /**
   * Up to MAX_MESSAGES_PER_BATCH messages in one call, never blocking. records holds
   * [dataOffset, dataLength, fdsOffset, nfds, bytesSent (out)] per message.
   * Returns how many the kernel took, or -errno if none.
   */
  sendmmsg(sock: number, data: Uint8Array, records: Int32Array, fds: Int32Array, count: number): number;
  /** IO::FDPass's message, one zero byte carrying fd: 1 once sent, or -errno. */
  sendFd(sock: number, fd: number, flags: number): number;
  /**
   * One message: its fd if it is a bare fd (one zero byte, one fd); -errno; or
   * constants.NOT_BARE_FD with the message in the receive report and its fds open.
   */
  recvFd(sock: number, flags: number): number;
  /**
   * Registers, for this thread, where recvFd reports a message that is not a bare fd:
   * [bytes, nfds, msg_flags, first data byte, fds...], at least 4 + MAX_FDS_PER_MESSAGE long.
   */
  setReceiveReport(slots: Int32Array): number;
  /** 0 or -errno. */
  close(fd: number): number;
  /** Closes fds[0..count): runs of consecutive numbers in one close_range(2) each. */
  closeMany(fds: Int32Array, count: number): number;
  /** socket(AF_UNIX, type), close-on-exec and non-blocking: the fd or -errno. */
  unixSocket(type: number): number;
  /** The file, if any, is created with permission bits `mode` from the start. */
  bindUnix(sock: number, name: Uint8Array, abstract: boolean, mode: number): number;
  listen(sock: number, backlog: number): number;
  /** 0 once connected; -EAGAIN while the listener's backlog is full. */
  connectUnix(sock: number, name: Uint8Array, abstract: boolean): number;
  /** out = [pid (-1 if unknown), uid, gid] as int32. */
  peerCredentials(sock: number, out: Int32Array): number;
  /**
   * A directory to name things in (on Linux O_PATH), close-on-exec: the fd or -errno. dir is
   * constants.AT_FDCWD for a path. Unless follow, a symlink at name fails (ELOOP or ENOTDIR).
   */
  openDirectoryAt(dir: number, name: Uint8Array, follow: boolean): number;
  makeDirectoryAt(dir: number, name: Uint8Array, mode: number): number;
  /** Read-write, created 0600 if missing, never through a symlink (ELOOP), never blocking: the fd or -errno. */
  openLockFileAt(dir: number, name: Uint8Array): number;
  /** flock(LOCK_EX | LOCK_NB): 0, or -EWOULDBLOCK while another open file holds it. Closing fd releases it. */
  tryLockExclusive(fd: number): number;
  /** fchmodat(2), which follows a symlink at name: only where nobody else can write. */
  changeModeAt(dir: number, name: Uint8Array, mode: number): number;
  /** fstatat(2) of name itself, a symlink included: out = [dev, ino, st_mode, uid]. */
  statAt(dir: number, name: Uint8Array, out: BigUint64Array): number;
  /** linkat(2): -EEXIST if `to` exists, which it never replaces. */
  linkAt(fromDir: number, from: Uint8Array, toDir: number, to: Uint8Array): number;
  /** unlinkat(2); with directory, an empty directory. */
  unlinkAt(dir: number, name: Uint8Array, directory: boolean): number;
  PollWrap: PollWrapConstructor;
  constants: {
    SOCK_STREAM: number;
    SOCK_DGRAM: number;
    SOCK_SEQPACKET: number;
    MSG_DONTWAIT: number;
    MSG_CTRUNC: number;
    MSG_TRUNC: number;
    MAX_FDS_PER_MESSAGE: number;
    MAX_MESSAGES_PER_BATCH: number;
    /** recvFd's answer for a message that is not a bare fd; below every -errno. */
    NOT_BARE_FD: number;
    ETOOMANYREFS: number;
    /** Bytes of a socket name in sun_path, without the NUL. */
    MAX_SOCKET_PATH_BYTES: number;
    HAVE_ABSTRACT_NAMES: boolean;
    /** The dir argument of the *At calls that makes name a path from the working directory. */
    AT_FDCWD: number;
  };
}

// Both lib/ (under tsx or vitest) and dist/ sit one level below the package root.
export const binding = load(path.join(__dirname, '..')) as Binding;
export const constants = binding.constants;
