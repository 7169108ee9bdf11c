// The Windows Channel's native transport (addon/win/channel_win.cc), as the Windows build
// registers it on the addon: loopback TCP sockets, the peer's process id, handles pushed into
// the peer and adopted as Node fds. Each call returns a value or a negative libuv error code.
import { windowsBinding } from '../binding';

export interface WinPollWrap {
  /**
   * Watches sock: 0 or -err. The wrap owns sock (and process, a peer's process handle, if
   * given) from here on, and closes them after the poll, or at the environment's teardown.
   * With fd, sock is the socket behind that Node fd, and the wrap owns and closes the fd.
   */
  open(sock: number, process?: number, fd?: number): number;
  /** Gives the wrap the peer's process handle, to close with the socket: 0 or -err. */
  ownProcess(process: number): number;
  /**
   * A new Channel(fd) verification under way holds process (its handle to the claimed process)
   * and challenge (pushed there, or 0): the environment's cleanup hook undoes them if no JS
   * runs again (a worker that ends). 0 or -err. Replaces what the last call gave.
   */
  holdVerification(process: number, challenge: number): number;
  /** JS undoes what the verification holds from here on (call it before undoing them). */
  releaseVerification(): void;
  /** 0 or -err; both false stops polling. */
  start(readable: boolean, writable: boolean): number;
  ref(): this;
  unref(): this;
  hasRef(): boolean;
  /** true when onClose will be called, after the socket is closed. */
  close(onClose: () => void): boolean;
}

export interface WinChannelTransport {
  /** Two connected loopback sockets of this process: out = [a, b]; 0 or -err. */
  tcpPair(out: Float64Array): number;
  /** A listener on 127.0.0.1: out = [listener, port]; 0 or -err. */
  listen(out: Float64Array): number;
  /** A connection waiting on the listener, or -err (UV_EAGAIN: none yet). */
  accept(listener: number): number;
  /** A socket connected to 127.0.0.1:port, or -err. */
  connect(port: number): number;
  closeSocket(sock: number): number;
  send(sock: number, bytes: Uint8Array, offset: number, length: number): number;
  recv(sock: number, bytes: Uint8Array, offset: number, length: number): number;
  /** A handle that may duplicate handles into process pid, or -err. */
  openProcess(pid: number): number;
  closeProcess(process: number): number;
  /**
   * Writes fd's entry body at entry[4..] for the peer: KIND_HANDLE or KIND_SOCKET, or -err
   * with stage[0] the call that refused (PUSH_STAGES).
   */
  pushFd(fd: number, process: number, pid: number, entry: Uint8Array, stage: Int32Array): number;
  /** Closes a duplicate made in the peer that the peer never got: 0 or -err. */
  unpush(process: number, value: number): number;
  /** A Node fd owning a pushed handle value, or -err (the value is left alone). */
  adoptHandle(value: number): number;
  /** Closes a pushed handle value nobody takes: 0 or -err (refused: EPERM, EBADF, EINVAL). */
  discardHandle(value: number): number;
  /** Releases what a socket entry nobody takes left in this process: 0 or -err (refused: EPERM, EBADF, EINVAL). */
  discardSocket(entry: Uint8Array): number;
  /**
   * The value of the handle a socket entry pushed into the peer (Wine's form), for unpush; 0
   * for Windows' own form, which names none (the sender cannot take it back); or -err.
   */
  pushedSocketValue(entry: Uint8Array): number;
  /** A Node fd owning a new socket made from a socket entry, or -err (a refused entry is left alone). */
  adoptSocket(entry: Uint8Array): number;
  /**
   * The SOCKET behind Node fd `fd` if it is a connected IPv4 stream socket, with its local and
   * remote address and port written in addresses (12 bytes); or -err. The fd keeps it.
   */
  socketOfFd(fd: number, addresses: Uint8Array): number;
  /** 0 with a connected transport socket's local and remote address and port written in addresses (12 bytes), as socketOfFd writes them; or -err. */
  socketAddresses(sock: number, addresses: Uint8Array): number;
  /** The value in `process` of a read-only handle to a new section holding content; or -err. unpush removes it. */
  pushChallenge(process: number, content: Uint8Array): number;
  /** 0 with out filled from the section a peer pushed as value (which stays open); or -err. */
  readChallenge(value: number, out: Uint8Array): number;
  /** An anonymous pipe as Node fds (Node makes none on Windows; for tests): out = [read, write]; 0 or -err. */
  pipe(out: Int32Array): number;
  WinPollWrap: new (onEvent: (status: number, readable: boolean, writable: boolean) => void) => WinPollWrap;
  KIND_HANDLE: number;
  KIND_SOCKET: number;
  /** The largest entry: a kind (4 bytes) and a WSAPROTOCOL_INFOW. */
  ENTRY_BYTES: number;
  /** A handle entry: a kind (4 bytes) and the value (8 bytes). */
  HANDLE_ENTRY_BYTES: number;
}

/** The calls pushFd's stage names. */
export const PUSH_STAGES = ['DuplicateHandle', 'WSADuplicateSocketW'] as const;

/** The transport, on Windows; undefined elsewhere. */
export const win = process.platform === 'win32' ? (windowsBinding as unknown as { winChannel: WinChannelTransport }).winChannel : undefined;

/** The transport, or a clear error where there is none (not Windows). */
export function windowsTransport(): WinChannelTransport {
  if (win === undefined) throw new Error('fdpass: the Windows channel transport exists only on Windows');
  return win;
}
