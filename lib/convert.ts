// Node objects out of received fds: one call turns an fd into what it is (a net.Socket, a
// listening net.Server, a dgram.Socket, a file stream), and hands the fd to that object.
//
// Each conversion checks what the fd is first (describe()) and gives Node nothing it would
// make a half-working object of; the fd leaves its message (or the caller) only once the new
// object holds it. On any error it is where it was, still open.
import { once } from 'node:events';
import dgram from 'node:dgram';
import { createReadStream, createWriteStream, open, read, write, writev, type ReadStream, type WriteStream } from 'node:fs';
import net from 'node:net';
import { binding } from './binding';
import { describeFd, kindPhrase, type FdDescription, type FdKind } from './describe';
import { errnoException, fdpassError, invalidArgType, invalidArgValue, outOfRange, wrongFdKindError } from './errors';
import { ReceivedMessage, fdAt } from './message';
import { validateFd, validateInteger, validateOptions } from './validators';

/** An fd to convert: a number you own, or a received message (its fd at `options.index`). */
export type FdSource = number | ReceivedMessage;

/** What every conversion takes: which fd of a message. */
export interface ConvertOptions {
  /** Which of a message's fds (default 0, its first). Only with a ReceivedMessage. */
  index?: number;
}

// fs names these types but does not export them.
type ReadStreamOptions = Exclude<Parameters<typeof createReadStream>[1], string | undefined>;
type WriteStreamOptions = Exclude<Parameters<typeof createWriteStream>[1], string | undefined>;

/** Options of {@link toSocket}: net.Socket's (but fd, readable and writable), and which fd. */
export interface ToSocketOptions extends ConvertOptions, Omit<net.SocketConstructorOpts, 'fd' | 'readable' | 'writable'> {}

/** Options of {@link toServer}: net.Server's, or a server of yours, and which fd. */
export interface ToServerOptions<S extends net.Server = net.Server> extends ConvertOptions, net.ServerOpts {
  /**
   * The server to listen with, not yet listening (an http.Server, say): by default a new
   * net.Server made with the other options, which may not be given with this one.
   */
  server?: S;
  /** The backlog Node gives listen(2) again, as it always does: default 511. */
  backlog?: number;
}

/** Options of {@link toUdpSocket}: dgram.createSocket's (but type and reuseAddr), and which fd. */
export interface ToUdpSocketOptions extends ConvertOptions, Omit<dgram.SocketOptions, 'type' | 'reuseAddr'> {}

/** Options of {@link toReadStream}: fs.createReadStream's that apply to an open fd, and which fd. */
export interface ToReadStreamOptions
  extends ConvertOptions, Pick<ReadStreamOptions, 'encoding' | 'start' | 'end' | 'highWaterMark' | 'signal'> {}

/** Options of {@link toWriteStream}: fs.createWriteStream's that apply to an open fd, and which fd. */
export interface ToWriteStreamOptions
  extends ConvertOptions, Pick<WriteStreamOptions, 'encoding' | 'start' | 'highWaterMark' | 'signal' | 'flush'> {}

/**
 * A connected TCP or Unix stream socket, or a pipe end, as a net.Socket, which owns the fd
 * from here on (`socket.destroy()` closes it; `message.close()` no longer does). A pipe end
 * is readable or writable as it was opened.
 *
 * Shared with the sender, who may still hold a copy: the socket itself (what one process
 * reads the other never sees; `end()` shuts down writing for both, so a sender that is done
 * with its copy closes it with `destroy()`), and the open file description's flags: libuv
 * sets O_NONBLOCK on it, which a sender that still uses its copy in blocking mode (Perl, C)
 * then sees too. The fd stays close-on-exec, as received: a child process gets the socket
 * only as one of its stdio entries, which Node dup()s for it.
 *
 * Throws `ERR_FDPASS_WRONG_FD_KIND` (a TypeError that says what the fd is) for any other
 * kind of fd, and Node's error if Node cannot open it (`EEXIST`: this thread already
 * watches it); either way the fd is where it was. Not on Windows yet.
 *
 * @example
 * const message = await channel.recv();
 * const socket = toSocket(message);          // the socket owns message.fds[0] now
 * socket.end('hello from the worker\n');
 */
export function toSocket(fd: FdSource, options?: ToSocketOptions): net.Socket {
  const { index, ...socketOptions } = validateOptions(options, 'options');
  const claim = claimFd(fd, index, 'toSocket()', ['tcp', 'unix', 'pipe'], 'a TCP or Unix stream socket, or a pipe');
  const { readable, writable } = claim.description;
  if (!readable && !writable) throw wrongKind(claim, 'toSocket()', 'one open for reading or writing');
  const socket = new net.Socket({ ...socketOptions, fd: claim.fd, readable, writable });
  claim.take();
  return socket;
}

/**
 * A listening TCP or Unix stream socket as a listening net.Server (or `options.server`, an
 * http.Server say), which owns the fd from here on (`server.close()` closes it). Resolves
 * once the server listens.
 *
 * The listening socket is shared with a sender that keeps a copy: each connection goes to
 * whichever process accepts it first. Node calls listen(2) on it again, which sets the
 * backlog of the socket for both (511 unless `options.backlog`), and makes the open file
 * description non-blocking. The fd stays close-on-exec.
 *
 * Rejects with `ERR_FDPASS_WRONG_FD_KIND` for any other kind of fd, with Node's
 * `ERR_SERVER_ALREADY_LISTEN` for a server that listens already, and with Node's error if
 * it cannot open the fd; the fd is then where it was. Not in a `cluster` worker, where
 * Node's listen({ fd }) asks the primary to listen on its own fd of that number. Not on
 * Windows yet.
 *
 * @example
 * const server = await toServer(message, { server: http.createServer(app) });
 */
export async function toServer<S extends net.Server = net.Server>(fd: FdSource, options?: ToServerOptions<S>): Promise<S> {
  const { index, server: given, backlog, ...serverOptions } = validateOptions(options, 'options');
  const claim = claimFd(fd, index, 'toServer()', ['tcp-listener', 'unix-listener'], 'a listening TCP or Unix stream socket');
  if (backlog !== undefined) validateInteger(backlog, 'options.backlog', 0, 0x7fff_ffff);
  if (given !== undefined) {
    if (!(given instanceof net.Server)) throw invalidArgType('options.server', 'an instance of net.Server', given);
    if (Object.keys(serverOptions).length > 0) {
      throw invalidArgValue('options', `gives both a server and options for a new one (${Object.keys(serverOptions).join(', ')})`, options);
    }
  }
  const server = given ?? (net.createServer(serverOptions) as S);
  if (backlog === undefined) server.listen({ fd: claim.fd });
  else server.listen({ fd: claim.fd }, backlog);
  // Listening at once means Node's handle holds the fd. Otherwise Node could not open it (it
  // emits why on the next tick) and the fd is still where it was.
  if (server.listening) claim.take();
  await once(server, 'listening');
  return server;
}

/**
 * A UDP socket as a bound dgram.Socket ('udp4' or 'udp6', from the socket's family), which
 * owns the fd from here on (`socket.close()` closes it) and is receiving already: Node's
 * `bind({ fd })` opens the fd at once, so there is nothing to wait for. Options are
 * dgram.createSocket's, without `type` (the fd's family decides) and `reuseAddr` (the socket
 * is bound already).
 *
 * Shared with a sender that keeps a copy: each datagram goes to whichever process reads it
 * first, so a sender closes its copy once sent. libuv makes the open file description
 * non-blocking and sets SO_REUSEADDR on the socket. The fd stays close-on-exec.
 *
 * Throws `ERR_FDPASS_WRONG_FD_KIND` for any other kind of fd, and Node's error if it cannot
 * open it; the fd is then where it was. Not fd 0, which Node's `bind({ fd })` takes for no
 * fd. Not on Windows yet.
 *
 * @example
 * const socket = toUdpSocket(message);
 * socket.on('message', (datagram, from) => socket.send(datagram, from.port, from.address));
 */
export function toUdpSocket(fd: FdSource, options?: ToUdpSocketOptions): dgram.Socket {
  const { index, ...socketOptions } = validateOptions(options, 'options');
  const claim = claimFd(fd, index, 'toUdpSocket()', ['udp'], 'a UDP socket');
  if (claim.fd === 0) throw outOfRange('fd', "greater than 0 (Node's dgram.bind({ fd }) takes 0 for no fd)", 0);
  const type = claim.description.kind === 'udp' && claim.description.family === 'IPv6' ? 'udp6' : 'udp4';
  const socket = dgram.createSocket({ ...socketOptions, type });
  try {
    // exclusive: in a cluster worker too, this process opens the fd (not the primary).
    socket.bind({ fd: claim.fd, exclusive: true });
  } catch (error) {
    socket.close(); // its handle never held the fd
    throw error;
  }
  claim.take();
  return socket;
}

/**
 * A regular file opened for reading as a readable stream, which owns the fd from here on
 * (it closes it when it ends or is destroyed).
 *
 * Without `start` it reads from the file offset, which belongs to the open file description
 * and is shared with the sender: each read moves it for both, and what the sender reads
 * meanwhile this stream does not. With `start` (and `end`) it reads at those positions and
 * leaves the offset alone. O_NONBLOCK, if the sender set it, changes nothing for a regular
 * file. The fd stays close-on-exec.
 *
 * Throws `ERR_FDPASS_WRONG_FD_KIND` for anything but a regular file opened for reading (a
 * pipe: toSocket()); the fd is then where it was. Not on Windows yet.
 *
 * @example
 * toReadStream(message).pipe(process.stdout);
 */
export function toReadStream(fd: FdSource, options?: ToReadStreamOptions): ReadStream {
  const { index, ...streamOptions } = validateOptions(options, 'options');
  const claim = claimFile(fd, index, 'toReadStream()', 'readable');
  const stream = createReadStream('', { ...streamOptions, fd: claim.fd, autoClose: true, fs: readStreamCalls });
  claim.take();
  return stream;
}

/**
 * A regular file opened for writing as a writable stream, which owns the fd from here on
 * (it closes it when it finishes or is destroyed).
 *
 * Without `start` it writes at the file offset, shared with the sender as for
 * toReadStream(): each write moves it for both; a file the sender opened with O_APPEND is
 * appended to, whatever the offset. With `start` it writes at that position. The fd stays
 * close-on-exec.
 *
 * Throws `ERR_FDPASS_WRONG_FD_KIND` for anything but a regular file opened for writing; the
 * fd is then where it was. Not on Windows yet.
 *
 * @example
 * toWriteStream(message).end('appended by the worker\n');
 */
export function toWriteStream(fd: FdSource, options?: ToWriteStreamOptions): WriteStream {
  const { index, ...streamOptions } = validateOptions(options, 'options');
  const claim = claimFile(fd, index, 'toWriteStream()', 'writable');
  const stream = createWriteStream('', { ...streamOptions, fd: claim.fd, autoClose: true, fs: writeStreamCalls });
  claim.take();
  return stream;
}

// The streams close their fd the way message.close() does: fs.close would warn in a worker
// thread ("closed but not opened in unmanaged mode"), where fs tracks the fds it opened.
function closeReceived(fd: number, callback: (error: Error | null) => void): void {
  const err = binding.close(fd);
  process.nextTick(callback, err < 0 ? errnoException(err, 'close') : null);
}
const readStreamCalls = { open, read, close: closeReceived };
const writeStreamCalls = { open, write, writev, close: closeReceived };

/** An fd about to be converted: where it is, what it is, and how to take it from there. */
interface Claim {
  readonly fd: number;
  readonly description: FdDescription;
  /** Takes the fd from its message (nothing for a number): call once the new object holds it. */
  readonly take: () => void;
}

const takeNothing = (): void => {};

function claimFd(source: unknown, index: unknown, call: string, kinds: readonly FdKind[], expected: string): Claim {
  let fd: number;
  let take = takeNothing;
  if (source instanceof ReceivedMessage) {
    const at = index === undefined ? 0 : validateInteger(index, 'options.index', 0, Number.MAX_SAFE_INTEGER);
    fd = fdAt(source, at);
    take = () => void source.take(at);
  } else if (typeof source === 'number') {
    if (index !== undefined) throw invalidArgValue('options.index', 'is for a ReceivedMessage; the fd given is a number', index);
    fd = validateFd(source, 'fd');
  } else {
    throw invalidArgType('fd', 'an fd (a number) or a ReceivedMessage', source);
  }
  if (binding.isOwnedFd(fd)) {
    throw fdpassError('ERR_FDPASS_FD_OWNED_BY_CHANNEL', `${call}: fd ${fd} is a Channel's socket; a Channel owns it and reads from it`);
  }
  const claim = { fd, description: describeFd(fd), take };
  if (!kinds.includes(claim.description.kind)) throw wrongKind(claim, call, expected);
  return claim;
}

/** A regular file open for reading (or writing), for a stream. */
function claimFile(source: unknown, index: unknown, call: string, access: 'readable' | 'writable'): Claim {
  const expected = `a regular file opened for ${access === 'readable' ? 'reading' : 'writing'}`;
  const claim = claimFd(source, index, call, ['file'], expected);
  if (!claim.description[access]) throw wrongKind(claim, call, expected);
  return claim;
}

function wrongKind(claim: Omit<Claim, 'take'>, call: string, expected: string): Error {
  return wrongFdKindError(`${call}: fd ${claim.fd} is ${kindPhrase(claim.description)}; it takes ${expected}`);
}
