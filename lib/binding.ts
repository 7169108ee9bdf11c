// The native addon, loaded once per thread by node-gyp-build, with its types, and the one
// description of the memory JS and the addon share.
//
// Receiving (a PollWrap's wake-up, all in one callback):
//   - the addon reads what the budget has room for (see Budget below) into the thread's
//     shared receive buffers: message i's bytes at data[i * slotBytes], and the record
//     [bytes or -errno, nfds, msg_flags] at records[i * RECORD_STRIDE]; a stream socket's
//     reads in RECEIVE_PACKETS mode (a RawStream's bytes) are packed instead: read i's bytes
//     right after read i - 1's, from data[0];
//   - it appends each message's fds, in order, to the handle's ledger;
//   - then it calls onEvent(status, count, writable), and JS decodes the batch before
//     returning, so the shared buffers are free for the next handle.
//   A listening socket's handle (RECEIVE_ACCEPT) accepts instead: each record is one
//   connection, [0 or -errno, 1 or 0, 0], its fd appended to the ledger. With slotBytes of at
//   least INET_ADDRESS_BYTES, the client's address (from accept(2) itself) is in the data
//   slot: [family 4 | 6 | 0, text length, port (2 bytes, little-endian), address as text], and
//   the record's first field is INET_ADDRESS_BYTES.
//
// The ledger (Int32Array, one per handle) is where every fd JS holds for nobody is recorded,
// oldest first, at slots[LEDGER_FIRST_FD + head .. LEDGER_FIRST_FD + tail):
//   - the addon appends at tail (and may move what is held to the front to make room);
//   - JS hands fds out from the head by advancing head, without a native call;
//   - JS closes fds in the middle with poll.closeLedgerFds(offset, count), which closes and
//     removes them in one step;
//   - when the handle starts closing (close(), or teardown of a terminated worker, when no JS
//     runs again) the addon closes whatever is left. So every received fd has one owner at
//     every moment: the ledger, or whoever JS handed it to.
//   slots[LEDGER_READ_CAP] tells the addon, when the budget is full, how many bytes it may
//   still read on a stream: the rest of a frame that has begun, which only its end can pay
//   for (0: read nothing).
//
// The budget (Float64Array, one per channel, or shared by a server's channels that nobody
// has taken yet): [maxFds, heldFds, maxBytes, heldBytes]. JS keeps the held counts; at each
// wake-up the addon reads the room left and asks the kernel for no more messages than could
// fit if each carried the most fds (and, on packet sockets, bytes) a message can. The room is
// recounted after each message, so a wake-up exceeds the budget by one message at most.
import path from 'node:path';
import { posixCallsUnavailable, type WindowsBinding } from './binding-windows';
import { loadAddon } from './load-addon';

export interface PollWrap {
  /**
   * Watches fd, which the handle owns from here on (0, -errno, or FD_OWNED_BY_CHANNEL when
   * another handle owns it). fromLedger: another handle's ledger whose oldest fd is fd (an
   * accepted connection); fd leaves it in the same step.
   */
  open(fd: number, fromLedger?: Int32Array): number;
  /** 0 or -errno; both false stops polling. -EBADF if fd was closed or reused behind the handle's back. */
  start(readable: boolean, writable: boolean): number;
  ref(): this;
  unref(): this;
  hasRef(): boolean;
  /** true when onClose will be called (after the fd and the ledger's fds are closed). */
  close(onClose: () => void): boolean;
  setLedger(slots: Int32Array): void;
  setBudget(budget: Float64Array): void;
  /** Closes the ledger's fds at head + offset .. head + offset + count and takes them out: 0 or -EINVAL. */
  closeLedgerFds(offset: number, count: number): number;
}

export interface PollWrapConstructor {
  /**
   * onEvent(status, count, writable): status < 0 is a poll error; count is the number of
   * records this wake-up filled; writable says the socket can take more.
   */
  new (
    onEvent: (status: number, count: number, writable: boolean) => void,
    data: Uint8Array,
    records: Int32Array,
    slotBytes: number,
    /** constants.RECEIVE_STREAM, RECEIVE_PACKETS, or RECEIVE_ACCEPT (a listening socket: each record one accepted connection). */
    mode: number,
  ): PollWrap;
}

export interface Binding {
  socketpair(type: number, out: Int32Array): number;
  socketType(fd: number): number;
  /** pipe(2), both ends close-on-exec and non-blocking: out = [read end, write end]; 0 or -errno. */
  pipe(out: Int32Array): number;
  /** read(2) of what is there into buffer[offset, offset + length): bytes, 0 at end of file, or -errno (-EAGAIN: nothing yet). */
  read(fd: number, buffer: Uint8Array, offset: number, length: number): number;
  /** out = [domain, type, listening (0/1), connected (0/1)]: 0 or -errno (-ENOTSOCK). */
  inspectSocket(fd: number, out: Int32Array): number;
  /**
   * What fd is, raw (lib/describe.ts names it): out (FD_FACTS_LENGTH long) = [st_mode &
   * S_IFMT, fcntl(F_GETFL) flags, domain, type, protocol, listening (0/1)], the last four for
   * a socket (-1, -1, -1, 0 otherwise, and for an fd that is no open socket); protocol is -1
   * where the system has no SO_PROTOCOL. 0, or -errno with out[0] naming the call that failed:
   * 0 fstat, 1 fcntl, 2 getsockopt.
   */
  describeFd(fd: number, out: Int32Array): number;
  setNonBlocking(fd: number, nonBlocking: boolean): number;
  setCloseOnExec(fd: number, closeOnExec: boolean): number;
  /** fcntl(F_DUPFD_CLOEXEC): a new fd for the same open file, close-on-exec, or -errno. */
  dupCloseOnExec(fd: number): number;
  /** shutdown(SHUT_WR): the peer reads EOF once what was sent is read; 0 or -errno. */
  shutdownWrite(sock: number): number;
  /**
   * One sendmsg of data[offset, offset + length) with the first nfds of fds (null: of the fds
   * registered with setSendScratch), never blocking (MSG_DONTWAIT: six arguments, which
   * node-addon-api keeps on the stack): bytes sent, or -errno.
   */
  sendmsg(sock: number, data: Uint8Array, offset: number, length: number, fds: Int32Array | null, nfds: number): number;
  /**
   * Registers, for this thread, where sendFrame finds its frame header (MESSAGE_HEADER_BYTES)
   * and fds: memory of its own (new ArrayBuffer), kept for the thread's life. 0 or -EINVAL.
   */
  setSendScratch(header: Uint8Array, fds: Int32Array): number;
  /** The registered header, then payload, as one message with the first nfds registered fds: bytes sent, or -errno. */
  sendFrame(sock: number, payload: Uint8Array, nfds: number, flags: number): number;
  /**
   * Up to MAX_MESSAGES_PER_BATCH messages in one call, never blocking. records holds
   * [dataOffset, dataLength, fdsOffset, nfds, bytesSent (out)] per message.
   * Returns how many the kernel took, or -errno if none; on a stream, only the last one
   * taken may have gone in part.
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
  /** 0, -errno, or FD_OWNED_BY_CHANNEL (refused: a channel's socket, in any thread). */
  close(fd: number): number;
  /** Closes fds[0..count) but those a channel owns: runs of consecutive numbers in one close_range(2) each. */
  closeMany(fds: Int32Array, count: number): number;
  /** Whether a Channel (in any thread) owns fd as its socket. */
  isOwnedFd(fd: number): boolean;
  /** socket(AF_UNIX, type), close-on-exec and non-blocking: the fd or -errno. */
  unixSocket(type: number): number;
  /** The file, if any, is created with permission bits `mode` from the start. */
  bindUnix(sock: number, name: Uint8Array, abstract: boolean, mode: number): number;
  listen(sock: number, backlog: number): number;
  /** 0 once connected; -EAGAIN while the listener's backlog is full. */
  connectUnix(sock: number, name: Uint8Array, abstract: boolean): number;
  /** out = [pid (-1 if unknown), uid, gid] as int32. */
  peerCredentials(sock: number, out: Int32Array): number;
  /** socket(AF_INET or AF_INET6, SOCK_STREAM), close-on-exec and non-blocking: the fd or -errno. */
  inetSocket(family: 4 | 6): number;
  /** setsockopt(2) of an int option: 0 or -errno. */
  setSocketOption(sock: number, level: number, name: number, value: number): number;
  /** getsockopt(2) of a non-negative int option: its value, or -errno. */
  getSocketOption(sock: number, level: number, name: number): number;
  /** The calling thread's scheduling policy (constants.SCHED_*), or -errno (-ENOSYS but on Linux). */
  schedulingPolicy(): number;
  /** Sets the calling thread's policy to SCHED_OTHER or SCHED_BATCH: 0, or -errno (-ENOSYS but on Linux). */
  setSchedulingPolicy(policy: number): number;
  /** bind(2) to an IP address given as text (inet_pton), and a port: 0, or -EINVAL for no such address. */
  bindInet(sock: number, family: 4 | 6, address: Uint8Array, port: number): number;
  /** getsockname(2) into out, INET_ADDRESS_BYTES long, in the accept slot's layout (see above). */
  localAddress(sock: number, out: Uint8Array): number;
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
    AF_UNIX: number;
    AF_INET: number;
    AF_INET6: number;
    FD_FACTS_LENGTH: number;
    O_ACCMODE: number;
    /** Linux's path-only open flag; 0 where the system has none. */
    O_PATH: number;
    SOL_SOCKET: number;
    SO_REUSEADDR: number;
    IPPROTO_IPV6: number;
    IPV6_V6ONLY: number;
    IPPROTO_TCP: number;
    TCP_NODELAY: number;
    /** An address's size in an accept slot (see above). */
    INET_ADDRESS_BYTES: number;
    MSG_DONTWAIT: number;
    SCHED_OTHER: number;
    /** Linux's batch policy; undefined where the system has none. */
    SCHED_BATCH: number | undefined;
    MSG_CTRUNC: number;
    MSG_TRUNC: number;
    MAX_FDS_PER_MESSAGE: number;
    MAX_MESSAGES_PER_BATCH: number;
    /** recvFd's answer for a message that is not a bare fd; below every -errno. */
    NOT_BARE_FD: number;
    /** close()'s and open()'s answer for an fd a channel owns; below every -errno. */
    FD_OWNED_BY_CHANNEL: number;
    ETOOMANYREFS: number;
    /** Bytes of a socket name in sun_path, without the NUL. */
    MAX_SOCKET_PATH_BYTES: number;
    HAVE_ABSTRACT_NAMES: boolean;
    /** The dir argument of the *At calls that makes name a path from the working directory. */
    AT_FDCWD: number;
    LEDGER_HEAD: number;
    LEDGER_TAIL: number;
    LEDGER_READ_CAP: number;
    LEDGER_FIRST_FD: number;
    RECORD_STRIDE: number;
    RECORD_BYTES: number;
    RECORD_FDS: number;
    RECORD_FLAGS: number;
    BUDGET_MAX_FDS: number;
    BUDGET_HELD_FDS: number;
    BUDGET_MAX_BYTES: number;
    BUDGET_HELD_BYTES: number;
    BUDGET_LENGTH: number;
    /** What a buffered message or error costs beyond its payload. */
    BUFFERED_ITEM_OVERHEAD_BYTES: number;
    /** The addon's copy of the frame header's size (framing.ts has the wire format's). */
    MESSAGE_HEADER_BYTES: number;
    RECEIVE_STREAM: number;
    RECEIVE_PACKETS: number;
    RECEIVE_ACCEPT: number;
  };
}

// Both lib/ (under tsx or vitest) and dist/ sit one level below the package root. On
// Windows node-gyp-build loads addon/win/ (see binding-windows.ts), and the POSIX calls throw
// when made.
const addon = loadAddon(path.join(__dirname, '..'));
export const binding = process.platform === 'win32' ? posixCallsUnavailable<Binding>() : (addon as Binding);
export const constants = binding.constants;
/** The Windows addon; on other systems, nothing of it exists. */
export const windowsBinding = addon as WindowsBinding;
