// A net.Socket over an fd known to be a connected TCP socket, made without the type check
// Node makes of every fd it is given: `new net.Socket({ fd })` asks the kernel what the fd is
// (isatty, fstat, getsockname, getsockopt), four syscalls per connection that a pool worker,
// which is told its connections are TCP, need not pay. Node has no public way to say "this fd
// is TCP", so the handle class Node made for the first socket (socket._handle.constructor,
// its TCP wrap) opens each later fd, as Node's own accept path does with a new handle.
// Anything unexpected falls back to the public way, for good; test/tcp-socket.test.ts fails
// when a Node version changes what this relies on.
import { Socket, type SocketConstructorOpts } from 'node:net';

interface TcpHandle {
  open(fd: number): number;
  close(): void;
}
type TcpHandleClass = new (type: number) => TcpHandle;

// TCPConstants.SOCKET in Node's tcp_wrap: a handle for a connection, not a listener.
const TCP_SOCKET = 0;

/** Node's TCP handle class once learned; null if it could not be (the public way is used). */
let handleClass: TcpHandleClass | null | undefined;

/**
 * A net.Socket that owns `fd`, a connected TCP socket, from here on. Throws Node's error if
 * Node cannot open it; the fd is then still the caller's.
 */
export function tcpSocket(
  fd: number,
  // noDelay: true tells the socket the fd has TCP_NODELAY already (its setNoDelay(true) is then
  // no setsockopt); net.Socket takes it, though @types/node 20 does not list it.
  options: Omit<SocketConstructorOpts, 'fd' | 'readable' | 'writable'> & { noDelay?: boolean },
): Socket {
  if (handleClass) {
    const handle = newHandle(handleClass);
    // The caller's options spread first: written { noDelay, ...options, ... }, this literal
    // made a pool worker's scavenges keep 0.15 MB more each (--trace-gc-nvp), for reasons
    // of V8's that were not pinned down.
    if (handle?.open(fd) === 0) return new Socket({ ...options, handle, readable: true, writable: true } as SocketConstructorOpts);
    // Not opened: the public way below throws Node's own error for it.
    handle?.close();
  }
  const socket = new Socket({ ...options, fd, readable: true, writable: true });
  handleClass ??= handleClassOf(socket);
  return socket;
}

/** Whether sockets are made without the type check (after the first one): for tests. */
export function skipsTypeCheck(): boolean {
  return typeof handleClass === 'function';
}

/** A new handle of the class, or undefined (and the public way from here on) if it will not make one. */
function newHandle(made: TcpHandleClass): TcpHandle | undefined {
  try {
    return new made(TCP_SOCKET);
  } catch {
    handleClass = null;
    return undefined;
  }
}

function handleClassOf(socket: Socket): TcpHandleClass | null {
  const handle = (socket as unknown as { _handle?: unknown })._handle;
  const made: unknown = typeof handle === 'object' && handle !== null ? handle.constructor : undefined;
  if (typeof made !== 'function' || made.name !== 'TCP') return null;
  const prototype = made.prototype as Partial<TcpHandle>;
  return typeof prototype.open === 'function' && typeof prototype.close === 'function' ? (made as TcpHandleClass) : null;
}
