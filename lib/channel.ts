// Channel: one connected Unix socket in the event loop, with promises, async iteration and
// events. It owns the socket and its poll handle, and two halves:
//
// send: caller -> check (outgoing.ts) -> SendQueue (send-queue.ts): sendmsg at once, from the
//       caller's payload, else copy (frame-store.ts) and queue in order until WRITABLE (or a
//       pause, when the kernel is short of room), then sendmmsg; small messages that follow
//       one sent at once in the same turn are copied too, and go a sendmmsg at a time in a microtask
// recv: READABLE -> the addon reads what the budget has room for (binding.ts) -> Receiver
//       (receiver.ts): decode, then a waiting recv() / iterator / 'message' listener / inbox
import { constants as os } from 'node:os';
import { debuglog } from 'node:util';
import { binding, constants, type PollWrap } from './binding';
import { UV_EOF, abortError, closedError, errnoException, invalidArgValue, unavailableOnPlatform, type SystemError } from './errors';
import { closeFds, type FdLike } from './fd';
import { emitSafely } from './emit-safely';
import { ListenerWatchingEmitter } from './listener-watch';
import type { ReceivedMessage } from './message';
import { toOutgoing, closeHanded, type Message } from './outgoing';
import { readPeerCredentials, type PeerCredentials } from './peer';
import { ReceiveBudget } from './receive-budget';
import { channelOptions, type ChannelOptions } from './channel-options';
import { Receiver, receiveBuffersFor } from './receiver';
import { SendQueue } from './send-queue';
import { WindowsChannel } from './win/channel';
import { ChannelOffer, connectChannel, type HandshakeOptions } from './win/handshake';
import { socketTypeName, type SocketType } from './socket-type';
import { socketpair } from './socketpair';
import { validateAbortSignal, validateFd, validateOptions } from './validators';

const debug = debuglog('fdpass');

export { channelOptions, type ChannelOptions };

/** Options of `Channel#send()`. */
export interface SendOptions {
  /**
   * Close the fd once the kernel has it. Ownership passes to fdpass at the call: the fd is
   * closed whether the send succeeds or fails, the way it was opened (a net.Socket is
   * destroyed, a FileHandle closed, a number closed with fs.closeSync), so that nothing in
   * Node closes that number again later.
   */
  close?: boolean;
}

/** Options of `Channel#recv()`. */
export interface RecvOptions {
  /**
   * Stops waiting: the call rejects with an AbortError (`code: 'ABORT_ERR'`, `cause`: the signal's reason), and a message that arrives later waits for the next receiver.
   */
  signal?: AbortSignal;
}

/** The events a Channel emits, each with its listener's arguments. */
export interface ChannelEvents {
  /** A message nobody was awaiting. The listener owns its fds. */
  message: [message: ReceivedMessage];
  /**
   * A message that could not be delivered (over a limit, malformed, cut by the kernel): the
   * channel goes on. Or the error that ended reading (a socket error, a broken stream).
   */
  error: [error: Error];
  /** The peer closed its end. Buffered messages can still be received. */
  end: [];
  /** The channel closed: its fd is closed and every pending call settled. */
  close: [];
}

const EBADF = -os.errno.EBADF;
const EEXIST = -os.errno.EEXIST;

/**
 * How a Server hands a Channel an accepted fd: the fd leaves the server's ledger as the
 * channel's poll handle takes it, and what the channel buffers counts against the server's
 * budget until the application takes the channel. Not part of the public API.
 */
export const adoption = Symbol('fdpass.adoption');
/** Counts what a channel holds against its own budget from now on (a server handed it out). */
export const useOwnBudget = Symbol('fdpass.useOwnBudget');

interface AdoptionOptions extends ChannelOptions {
  [adoption]?: { fromLedger: Int32Array; budget: ReceiveBudget };
}

function adoptionOf(options: AdoptionOptions | undefined): AdoptionOptions[typeof adoption] {
  return options?.[adoption];
}

/**
 * One end of a Unix domain socket that carries fds and data both ways, integrated with the
 * event loop: `send()` and `recv()` return promises that wait while the socket is full or empty
 * and keep their order; `for await` yields what arrives until the peer closes; and it is an
 * EventEmitter (eventemitter3) of {@link ChannelEvents}. A channel owns its socket's fd and
 * closes it in `close()`. An idle channel does not keep the process alive.
 *
 * Make one with `Channel.pair()`, `new Channel(fd)` over a connected Unix socket,
 * {@link connect}, a {@link Server}, or {@link spawnWithChannel} and its kin.
 *
 * @example
 * import { Channel } from 'fdpass';
 *
 * const [a, b] = Channel.pair();
 * await a.send(fileHandle);                  // a number, a FileHandle, a net.Socket, net.Server or dgram.Socket
 * await a.send({ data: 'hello', fds: [socket, logFile] }); // a payload and fds, arriving together
 * const { fd } = await b.recv();             // the receiver owns fd (close-on-exec)
 * for await (const message of b) serve(message.fd);         // until the peer closes
 * await Promise.all([a.close(), b.close()]);
 */
export class Channel extends ListenerWatchingEmitter<ChannelEvents> {
  // Assigned by the constructor, except on Windows, where it returns a WindowsChannel instead.
  readonly #fd!: number;
  readonly #type!: SocketType;
  readonly #poll!: PollWrap;
  readonly #receiver!: Receiver;
  readonly #sender!: SendQueue;
  readonly #ownBudget!: ReceiveBudget;

  #state: 'open' | 'closing' | 'closed' = 'open';
  #closed: Promise<void> | undefined;
  #peer: PeerCredentials | undefined;
  /** What the poll watches now. */
  #readable = false;
  #writable = false;
  /** The fd was closed or reused behind the channel's back: watch nothing more. */
  #pollBroken = false;
  #explicitRef: boolean | undefined;
  #refd = true;
  /** A stopped poll keeps nothing alive: while a ref'd channel's poll is stopped, this does. */
  #keepAlive: NodeJS.Timeout | undefined;

  /** A connected pair of channels over a new socketpair. */
  static pair(type: SocketType = 'stream', options?: ChannelOptions): [Channel, Channel] {
    // Windows has no socketpair with SCM_RIGHTS: its channels are lib/win/channel.ts's.
    if (process.platform === 'win32') return WindowsChannel.pair(type, options) as unknown as [Channel, Channel];
    channelOptions(options);
    const [a, b] = socketpair(type);
    let first: Channel | undefined;
    try {
      first = new Channel(a, options);
      return [first, new Channel(b, options)];
    } catch (error) {
      if (first) void first.close();
      else closeFds([a]);
      closeFds([b]);
      throw error;
    }
  }

  /**
   * Windows: offers a channel to another process (docs/windows-channel-protocol.md). Give
   * `offer.address` to that process, which calls Channel.connectTo(address); `offer.accept()`
   * resolves with this side's channel. Elsewhere: ERR_FEATURE_UNAVAILABLE_ON_PLATFORM (use
   * spawnWithChannel, or listen and connect).
   */
  static offer(): ChannelOffer {
    if (process.platform !== 'win32')
      throw unavailableOnPlatform('Channel.offer() is for Windows: on Unix use spawnWithChannel(), or listen() and connect()');
    return new ChannelOffer();
  }

  /** Windows: the other side of Channel.offer(). Elsewhere: ERR_FEATURE_UNAVAILABLE_ON_PLATFORM. */
  static connectTo(address: string, options?: HandshakeOptions): Promise<Channel> {
    if (process.platform !== 'win32') {
      return Promise.reject(unavailableOnPlatform('Channel.connectTo() is for Windows: on Unix use connect()'));
    }
    return connectChannel(address, options) as unknown as Promise<Channel>;
  }

  /**
   * A channel over a connected Unix socket fd. The channel owns the fd from here on: it
   * makes it non-blocking and closes it on close(). If the constructor throws, the fd is
   * still the caller's. A TCP socket, a listening socket, an unconnected one, an fd that
   * another Channel owns or that Node already watches are refused, with a message that says so.
   *
   * Windows: `fd` is a Node fd of a connected loopback TCP socket (an end of `socketpair()`,
   * a socket received through a channel) whose other end is also a `new Channel(fd)`. The
   * peers prove their process ids to each other before anything is pushed (see
   * docs/windows-channel-protocol.md); `options.handshakeTimeout` bounds that (default 5 s).
   */
  constructor(fd: number, options?: ChannelOptions & { handshakeTimeout?: number }) {
    super();
    validateFd(fd, 'fd');
    // One Channel class: the Windows channel is returned in place of this one.
    if (process.platform === 'win32') return WindowsChannel.overFd(fd, options) as unknown as Channel;
    const { maxBufferedFds, maxBufferedBytes, limits } = channelOptions(options);
    const type = checkChannelSocket(fd);
    const buffers = receiveBuffersFor(type, limits);
    const adopted = adoptionOf(options);
    this.#poll = new binding.PollWrap(
      (status, count, writable) => this.#onPoll(status, count, writable),
      buffers.data,
      buffers.records,
      buffers.slotBytes,
      buffers.mode,
    );
    const err = this.#poll.open(fd, adopted?.fromLedger);
    if (err < 0) throw openError(err, fd);
    // From here the channel owns fd: nothing below may throw.
    this.#fd = fd;
    this.#type = type;
    this.#ownBudget = new ReceiveBudget(maxBufferedFds, maxBufferedBytes);
    this.#receiver = new Receiver(this.#poll, fd, type, limits, buffers, adopted?.budget ?? this.#ownBudget, adopted !== undefined, {
      listenerCount: (event) => this.listenerCount(event),
      emitMessage: (message) => emitSafely(this, 'message', message),
      emitError: (error) => emitSafely(this, 'error', error),
      readingEnded: (reason) => {
        if ((reason as SystemError).errno === UV_EOF) emitSafely(this, 'end');
      },
      drained: () => void this.close(),
      changed: () => this.#update(),
    });
    this.#sender = new SendQueue(fd, { changed: () => this.#update() });
    if (debug.enabled) debug('fd %d: channel open (%s)', fd, type);
    this.#update();
  }

  /** The socket fd the channel owns (-1 once closed). */
  get fd(): number {
    return this.#state === 'closed' ? -1 : this.#fd;
  }

  /** The socket's type: 'stream', 'seqpacket' or 'dgram'. */
  get type(): SocketType {
    return this.#type;
  }

  /** true from the moment the channel starts closing (a `close()` call, or an error that ended it). */
  get closed(): boolean {
    return this.#state !== 'open';
  }

  /** Received fds the channel holds for nobody right now (see maxBufferedFds). */
  get bufferedFds(): number {
    return this.#receiver.bufferedFds;
  }

  /** What the channel holds for nobody right now, in bytes as maxBufferedBytes counts them. */
  get bufferedBytes(): number {
    return this.#receiver.bufferedBytes;
  }

  /**
   * Errors nobody could be told about: messages dropped (over a limit, malformed) while no
   * recv() waited and no 'error' listener listened, and an error that ended the channel
   * unheard. The first one also raises a process warning ('FDPASS_UNOBSERVED_ERRORS').
   */
  get unobservedErrors(): number {
    return this.#receiver.unobservedErrors;
  }

  /**
   * The process at the other end: its pid, uid and gid as of its connect() or socketpair()
   * (SO_PEERCRED on Linux). Read once, on first use; throws 'ERR_FDPASS_CHANNEL_CLOSED' if
   * the channel closed before that, or a system error where the socket has no peer.
   */
  get peer(): PeerCredentials {
    if (this.#peer === undefined) {
      if (this.#state === 'closed') throw this.#closedError();
      this.#peer = readPeerCredentials(this.#fd);
    }
    return this.#peer;
  }

  /**
   * Sends a bare fd, or a message `{ data, fds }`, after every send called before it.
   * Resolves once the kernel has all of it (the sender keeps its fds unless `close` is
   * set); waits while the socket is full. A bare fd, or a message of no data and one fd,
   * goes in IO::FDPass's format; anything else as a frame (docs/wire-format.md).
   * Throws a TypeError or RangeError at the call for a bad argument, taking nothing.
   */
  send(value: FdLike | Message, options?: SendOptions): Promise<void> {
    const outgoing = toOutgoing(value, validateOptions(options, 'options').close === true);
    if (this.#state !== 'open') {
      closeHanded(outgoing);
      return Promise.reject(this.#closedError());
    }
    return this.#sender.send(outgoing);
  }

  /**
   * The next message, in the order the calls were made, or the next per-message error
   * (the channel goes on). Rejects with code 'EOF' once the peer has closed and nothing is
   * left, 'ERR_FDPASS_CHANNEL_CLOSED' after close(), 'ABORT_ERR' when the signal aborts.
   */
  recv(options?: RecvOptions): Promise<ReceivedMessage> {
    let signal: AbortSignal | undefined;
    try {
      signal = validateAbortSignal(validateOptions(options, 'options').signal, 'options.signal');
    } catch (error) {
      return Promise.reject(error);
    }
    if (signal?.aborted) return Promise.reject(abortError(signal));
    return this.#receiver.recv(signal);
  }

  /**
   * Yields every message until the peer closes (or the channel is closed). Messages dropped
   * for a limit go to 'error' listeners, not to the loop; an error that ends reading (a
   * socket error, a broken stream) is thrown from it.
   */
  [Symbol.asyncIterator](): AsyncIterableIterator<ReceivedMessage> {
    return this.#receiver.iterate();
  }

  /**
   * Closes the channel: pending sends and receives reject with 'ERR_FDPASS_CHANNEL_CLOSED',
   * received fds nobody took are closed, the poll handle is released, then the socket fd is
   * closed. Resolves when all of that is done; calling it again returns the same promise.
   */
  close(): Promise<void> {
    if (this.#closed) return this.#closed;
    this.#state = 'closing';
    this.#setKeepAlive(false);
    const error = this.#closedError();
    this.#sender.close(error);
    this.#receiver.close(error);
    this.#closed = new Promise<void>((resolve) => {
      // The poll handle takes the ledger's fds as it starts closing, and closes them with the socket.
      this.#poll.close(() => {
        this.#state = 'closed';
        if (debug.enabled) debug('fd %d: channel closed', this.#fd);
        emitSafely(this, 'close');
        resolve();
      });
    });
    return this.#closed;
  }

  /** Keep the process alive while the channel is open, whether or not anyone waits. */
  ref(): this {
    this.#explicitRef = true;
    this.#update();
    return this;
  }

  /** Never keep the process alive for this channel, even with calls pending. */
  unref(): this {
    this.#explicitRef = false;
    if (this.#refd && this.#state === 'open') this.#setRef(false);
    this.#update();
    return this;
  }

  /** Whether the channel keeps the process alive (never once it is closing). */
  hasRef(): boolean {
    return this.#state === 'open' && this.#refd;
  }

  /** See useOwnBudget. */
  [useOwnBudget](): void {
    this.#receiver.useBudget(this.#ownBudget);
  }

  protected override listenersChanged(): void {
    this.#update();
    // Messages buffered while nobody listened go to a new listener, after the caller's code.
    if (this.listenerCount('message') > 0) queueMicrotask(() => this.#receiver.drainToListeners());
  }

  #onPoll(status: number, count: number, writable: boolean): void {
    if (this.#state !== 'open') return; // the ledger already holds whatever the batch brought
    if (status < 0) {
      this.#readable = this.#writable = false; // libuv stopped watching
      this.#receiver.pollFailed(errnoException(status, 'poll'));
      return;
    }
    if (count > 0) this.#receiver.onBatch(count);
    else if (!writable) this.#receiver.recheck(); // readable, but no room: stop watching until there is
    if (writable && this.#state === 'open') this.#sender.flush();
  }

  /** The poll watches what the halves want; the process stays alive while anyone waits. */
  #update(): void {
    if (this.#state !== 'open') return;
    const readable = !this.#pollBroken && this.#receiver.wantsToRead;
    const writable = !this.#pollBroken && this.#sender.wantsWritable;
    if (readable !== this.#readable || writable !== this.#writable) {
      const err = this.#poll.start(readable, writable);
      if (debug.enabled)
        debug('fd %d: poll %s%s', this.#fd, readable ? 'readable ' : '', writable ? 'writable' : readable ? '' : 'stopped');
      if (err < 0) {
        this.#pollFailed(err);
        return;
      }
      this.#readable = readable;
      this.#writable = writable;
    }
    this.#updateRef();
  }

  /** Whether the channel should keep the process alive: an explicit ref(), else anyone waiting. */
  #wantsRef(): boolean {
    return this.#explicitRef ?? (this.#receiver.awaited || this.#sender.length > 0 || this.listenerCount('message') > 0);
  }

  #updateRef(): void {
    const wanted = this.#wantsRef();
    if (wanted !== this.#refd) this.#setRef(wanted);
    else this.#setKeepAlive(this.#refd && !this.#readable && !this.#writable && this.#receiver.endError === undefined);
  }

  #setRef(refd: boolean): void {
    this.#refd = refd;
    if (refd) this.#poll.ref();
    else this.#poll.unref();
    this.#sender.setRef(refd);
    this.#setKeepAlive(refd && !this.#readable && !this.#writable && this.#receiver.endError === undefined);
  }

  /** The fd was closed (or its number reused) behind the channel's back: fail, never abort. */
  #pollFailed(err: number): void {
    this.#pollBroken = true;
    this.#readable = this.#writable = false;
    const error = errnoException(
      err,
      'uv_poll_start',
      err === EBADF
        ? `fd ${this.#fd} was closed, or its number reused, behind the channel's back (was it closed with fs.closeSync?)`
        : `fd ${this.#fd}`,
    );
    this.#sender.close(error);
    this.#receiver.pollFailed(error);
  }

  #setKeepAlive(on: boolean): void {
    if (on && this.#keepAlive === undefined) {
      this.#keepAlive = setInterval(() => {}, 0x7fff_ffff);
    } else if (!on && this.#keepAlive !== undefined) {
      clearInterval(this.#keepAlive);
      this.#keepAlive = undefined;
    }
  }

  /** ERR_FDPASS_CHANNEL_CLOSED, with the error that ended the channel, if one did, as its cause. */
  #closedError(): Error {
    return closedError(this.#receiver.endError);
  }
}

// One public Channel class: on Windows a channel is a WindowsChannel (lib/win/channel.ts),
// which defines every public member of Channel over its own transport. Linking its prototype
// to Channel's makes `channel instanceof Channel` true there too (and EventEmitter's, as now).
Object.setPrototypeOf(WindowsChannel.prototype, Channel.prototype);

// What a channel's fd must be: a connected Unix socket of a type fdpass knows. Checked
// before the poll handle touches it, so the caller keeps a refused fd as it was.
const facts = new Int32Array(4);
export function checkChannelSocket(fd: number): SocketType {
  const err = binding.inspectSocket(fd, facts);
  if (err === -os.errno.ENOTSOCK)
    throw invalidArgValue('fd', `is fd ${fd}, which is not a socket; a Channel needs a connected Unix socket`, fd);
  if (err < 0) throw errnoException(err, 'getsockopt', `fd ${fd}`);
  const [domain, typeNumber, listening, connected] = facts as unknown as [number, number, number, number];
  const type = socketTypeName(typeNumber);
  if (domain !== constants.AF_UNIX) {
    throw invalidArgValue(
      'fd',
      `is fd ${fd}, ${describeForeignSocket(domain, type)}, not a Unix socket; fds travel only over Unix sockets`,
      fd,
    );
  }
  if (type === undefined)
    throw invalidArgValue(
      'fd',
      `is fd ${fd}, a Unix socket of type ${typeNumber}; a Channel works on stream, seqpacket and dgram sockets`,
      fd,
    );
  if (listening)
    throw invalidArgValue('fd', `is fd ${fd}, a listening socket; make a Channel of each connection it accepts (see listen())`, fd);
  if (!connected) throw invalidArgValue('fd', `is fd ${fd}, a Unix socket that is not connected; connect it first (see connect())`, fd);
  return type;
}

function describeForeignSocket(domain: number, type: SocketType | undefined): string {
  if (domain === 2 || domain === 10) return type === 'dgram' ? 'a UDP socket' : type === 'stream' ? 'a TCP socket' : 'an IP socket';
  return `a socket of address family ${domain}`;
}

export function openError(err: number, fd: number): Error {
  if (err === constants.FD_OWNED_BY_CHANNEL) return errnoException(EEXIST, 'uv_poll_init', `fd ${fd} is already owned by another Channel`);
  if (err === EEXIST)
    return errnoException(
      err,
      'uv_poll_init',
      `fd ${fd} is already watched by this thread's event loop (a net.Socket or another handle reads it)`,
    );
  return errnoException(err, 'uv_poll_init', `fd ${fd}`);
}
