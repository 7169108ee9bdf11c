// Channel: one socket fd in the event loop, with promises, async iteration and events.
//
// send: caller -> sendmsg at once (MSG_DONTWAIT) -> on EAGAIN queue and wait for WRITABLE -> retry in order
// recv: READABLE -> the addon drains a batch -> decode -> pending recv() / 'message' listeners / bounded inbox
import { constants as os } from 'node:os';
import EventEmitter from 'eventemitter3';
import { binding, constants, type PollWrap } from './binding';
import { decodeBareFd } from './bare-fd';
import { UV_EOF, type SystemError, abortError, closedError, errnoException, fdpassError, invalidArgType, outOfRange, truncatedError } from './errors';
import { closeFds, closeHandedFd, toFd, validateFd, type FdLike } from './fd';
import { ReceivedMessage } from './message';
import { socketpair, type SocketType } from './seed';

export interface ChannelOptions {
  /**
   * Most received fds held for nobody (no pending recv(), no 'message' listener) before the
   * channel stops reading and leaves the rest in the kernel: a fast peer cannot fill our fd table.
   * Default 128.
   */
  maxBufferedFds?: number;
}

export interface SendOptions {
  /**
   * Close the fd once the kernel has it. Ownership passes to fdpass at the call: the fd is
   * closed whether the send succeeds or fails, the way it was opened (a net.Socket is
   * destroyed, a FileHandle closed, a number closed with fs.closeSync), so that nothing in
   * Node closes that number again later.
   */
  close?: boolean;
}

export interface RecvOptions {
  signal?: AbortSignal;
}

export interface ChannelEvents {
  /** A message nobody was awaiting. The listener owns its fds. */
  message: [message: ReceivedMessage];
  /** A message that could not be delivered (cut by the kernel, malformed), or a socket error. */
  error: [error: Error];
  /** The peer closed its end. Buffered messages can still be received. */
  end: [];
  /** The channel closed: its fd is closed and every pending call settled. */
  close: [];
}

type Delivery = ReceivedMessage | Error;

interface PendingRecv {
  resolve(message: ReceivedMessage): void;
  reject(error: Error): void;
}

interface PendingSend {
  fd: number;
  /** What to close once the kernel has the fd (`close: true`), else undefined. */
  handed: FdLike | undefined;
  resolve(): void;
  reject(error: Error): void;
}

const EAGAIN = -os.errno.EAGAIN;
const EWOULDBLOCK = -os.errno.EWOULDBLOCK;
const EEXIST = -os.errno.EEXIST;

// One set of receive buffers per thread, shared by every channel: the addon fills them
// and JS decodes them within the same callback, before any other channel can run.
// Message i of a batch has its own slot: SLOT_BYTES of data and MAX_FDS_PER_MESSAGE fds.
const BATCH = constants.MAX_MESSAGES_PER_BATCH;
const MAX_FDS = constants.MAX_FDS_PER_MESSAGE;
const SLOT_BYTES = 1024;
const shared = {
  data: new Uint8Array(BATCH * SLOT_BYTES),
  fds: new Int32Array(BATCH * MAX_FDS),
  // [bytes or -errno, nfds, msg_flags] per message, then one slot: the number of messages
  // not yet claimed by JS (the addon closes an unclaimed batch's fds).
  records: new Int32Array(3 * BATCH + 1),
};
const zeroByte = new Uint8Array(1);
const sendFds = new Int32Array(1);
// A batch of queued sends for one sendmmsg: [dataOffset, dataLength, fdsOffset, nfds, sent].
const sendBatch = { records: new Int32Array(5 * BATCH), fds: new Int32Array(BATCH) };
for (let i = 0; i < BATCH; i++) sendBatch.records.set([0, 1, i, 1, 0], 5 * i);

// Socket fds of this thread's open channels. A paused channel's poll is stopped, so libuv
// no longer sees its fd and would let a second poll handle onto it (and abort later).
const channelFds = new Set<number>();

function validateOptions<T extends object>(options: T | undefined, name: string): T | Record<string, never> {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null) throw invalidArgType(name, 'of type object', options);
  return options;
}

function isWouldBlock(err: number): boolean {
  return err === EAGAIN || err === EWOULDBLOCK;
}

/** The error a recv() gets after the peer closed: code 'EOF', as libuv names it. */
function eofError(): Error {
  return errnoException(UV_EOF, 'recvmsg', 'the peer closed the channel');
}

export class Channel extends EventEmitter<ChannelEvents> {
  readonly #fd: number;
  readonly #type: SocketType;
  readonly #poll: PollWrap;
  readonly #maxBufferedFds: number;

  #state: 'open' | 'closing' | 'closed' = 'open';
  #closed: Promise<void> | undefined;
  /** Why reading stopped for good: EOF or a socket error. */
  #endError: Error | undefined;

  readonly #sendQueue: PendingSend[] = [];
  readonly #recvQueue: PendingRecv[] = [];
  readonly #inbox: Delivery[] = [];
  #inboxFds = 0;
  #iterators = 0;

  #watchReadable = false;
  #watchWritable = false;
  #explicitRef: boolean | undefined;
  #refd = true;

  /** A connected pair of channels over a new socketpair. */
  static pair(type: SocketType = 'stream', options?: ChannelOptions): [Channel, Channel] {
    maxBufferedFdsOption(options);
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
   * A channel over a connected Unix socket fd. The channel owns the fd from here on:
   * it makes it non-blocking and closes it on close(). If the constructor throws,
   * the fd is still the caller's.
   */
  constructor(fd: number, options?: ChannelOptions) {
    super();
    validateFd(fd, 'fd');
    const maxBufferedFds = maxBufferedFdsOption(options);
    if (channelFds.has(fd)) {
      throw errnoException(EEXIST, 'uv_poll_init', `fd ${fd} is already owned by another channel`);
    }
    const type = binding.socketType(fd);
    if (type < 0) throw errnoException(type, 'getsockopt', `fd ${fd} is not a usable socket`);
    this.#type = type === constants.SOCK_DGRAM ? 'dgram' : type === constants.SOCK_SEQPACKET ? 'seqpacket' : 'stream';

    this.#fd = fd;
    this.#maxBufferedFds = maxBufferedFds;
    this.#poll = new binding.PollWrap(
      (status, records, writable) => this.#onPoll(status, records, writable),
      shared.data,
      shared.fds,
      shared.records,
      SLOT_BYTES,
    );
    const err = this.#poll.open(fd, true);
    if (err < 0) {
      throw errnoException(err, 'uv_poll_init', err === EEXIST ? `fd ${fd} is already watched by another poll handle` : `fd ${fd}`);
    }
    channelFds.add(fd);
    this.#updateRef();
    this.#updatePoll();
  }

  /** The socket fd the channel owns (-1 once closed). */
  get fd(): number {
    return this.#state === 'closed' ? -1 : this.#fd;
  }

  get type(): SocketType {
    return this.#type;
  }

  get closed(): boolean {
    return this.#state !== 'open';
  }

  /**
   * Sends fd to the peer, after every send called before it. Resolves once the kernel has
   * it (the sender keeps its fd unless `close` is set); waits while the socket is full.
   */
  send(fd: FdLike, options?: SendOptions): Promise<void> {
    const fdNumber = toFd(fd, 'fd');
    const handed = validateOptions(options, 'options').close === true ? fd : undefined;
    if (this.#state !== 'open') {
      if (handed !== undefined) closeHandedFd(handed);
      return Promise.reject(closedError());
    }
    if (this.#sendQueue.length === 0) {
      const err = this.#sendNow(fdNumber);
      if (err === 0) {
        if (handed !== undefined) closeHandedFd(handed);
        return Promise.resolve();
      }
      if (!isWouldBlock(err)) {
        if (handed !== undefined) closeHandedFd(handed);
        return Promise.reject(errnoException(err, 'sendmsg'));
      }
    }
    return new Promise<void>((resolve, reject) => {
      this.#sendQueue.push({ fd: fdNumber, handed, resolve, reject });
      this.#updatePoll();
      this.#updateRef();
    });
  }

  /**
   * The next message, in the order the calls were made. Rejects with code 'EOF' once the
   * peer has closed and nothing is left, 'ERR_FDPASS_CHANNEL_CLOSED' after close(),
   * 'ABORT_ERR' when the signal aborts.
   */
  recv(options?: RecvOptions): Promise<ReceivedMessage> {
    let signal: AbortSignal | undefined;
    try {
      signal = validateOptions(options, 'options').signal;
    } catch (error) {
      return Promise.reject(error);
    }
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      return Promise.reject(invalidArgType('options.signal', 'an instance of AbortSignal', signal));
    }
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const buffered = this.#takeBuffered();
    if (buffered) return buffered instanceof Error ? Promise.reject(buffered) : Promise.resolve(buffered);
    if (this.#endError) return Promise.reject(this.#endError);
    if (this.#state !== 'open') return Promise.reject(closedError());

    return new Promise<ReceivedMessage>((resolve, reject) => {
      const pending: PendingRecv = { resolve, reject };
      if (signal) {
        const onAbort = (): void => {
          const index = this.#recvQueue.indexOf(pending);
          if (index !== -1) this.#recvQueue.splice(index, 1);
          this.#updateRef();
          reject(abortError(signal));
        };
        signal.addEventListener('abort', onAbort, { once: true });
        const done = (): void => signal.removeEventListener('abort', onAbort);
        pending.resolve = (message) => {
          done();
          resolve(message);
        };
        pending.reject = (error) => {
          done();
          reject(error);
        };
      }
      this.#recvQueue.push(pending);
      this.#updateRef();
    });
  }

  /** Yields every message until the peer closes (or the channel is closed). */
  [Symbol.asyncIterator](): AsyncIterableIterator<ReceivedMessage> {
    let active = true;
    this.#iterators++;
    this.#updateRef();
    const finish = (): IteratorResult<ReceivedMessage> => {
      if (active) {
        active = false;
        this.#iterators--;
        this.#updateRef();
      }
      return { done: true, value: undefined };
    };
    const yielded = (value: ReceivedMessage): IteratorResult<ReceivedMessage> => ({ done: false, value });
    const ended = (error: unknown): IteratorResult<ReceivedMessage> => {
      const code = (error as { code?: unknown }).code;
      if (code === 'EOF' || code === 'ERR_FDPASS_CHANNEL_CLOSED') return finish();
      finish();
      throw error;
    };
    const iterator: AsyncIterableIterator<ReceivedMessage> = {
      // One promise reaction per message, not an async function's several: a busy channel
      // yields tens of thousands of messages a second.
      next: () => (active ? this.recv().then(yielded, ended) : Promise.resolve(finish())),
      return: async () => finish(),
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  /**
   * Closes the channel: pending sends and receives reject with 'ERR_FDPASS_CHANNEL_CLOSED',
   * received fds nobody took are closed, the poll handle is released, then the socket fd is
   * closed. Resolves when all of that is done; calling it again returns the same promise.
   */
  close(): Promise<void> {
    if (this.#closed) return this.#closed;
    this.#state = 'closing';
    const error = closedError();
    for (const pending of this.#sendQueue.splice(0)) {
      if (pending.handed !== undefined) closeHandedFd(pending.handed);
      pending.reject(error);
    }
    for (const pending of this.#recvQueue.splice(0)) pending.reject(this.#endError ?? error);
    // The poll handle closes the inbox's fds (it holds them) once it has closed.
    this.#inbox.length = 0;
    this.#inboxFds = 0;
    this.#closed = new Promise<void>((resolve) => {
      this.#poll.close(() => {
        channelFds.delete(this.#fd);
        this.#state = 'closed';
        this.#emitSafely('close');
        resolve();
      });
    });
    return this.#closed;
  }

  /** Keep the process alive while the channel is open, whether or not anyone waits. */
  ref(): this {
    this.#explicitRef = true;
    this.#updateRef();
    return this;
  }

  /** Never keep the process alive for this channel, even with calls pending. */
  unref(): this {
    this.#explicitRef = false;
    this.#updateRef();
    return this;
  }

  hasRef(): boolean {
    return this.#state !== 'closed' && this.#refd;
  }

  // eventemitter3 has no 'newListener': a 'message' listener changes who receives and what
  // keeps the process alive, so every way of adding or removing one is seen here.
  override on<T extends keyof ChannelEvents>(event: T, fn: EventEmitter.EventListener<ChannelEvents, T>, context?: unknown): this {
    super.on(event, fn, context);
    return this.#listenersChanged();
  }

  override addListener<T extends keyof ChannelEvents>(event: T, fn: EventEmitter.EventListener<ChannelEvents, T>, context?: unknown): this {
    return this.on(event, fn, context);
  }

  override once<T extends keyof ChannelEvents>(event: T, fn: EventEmitter.EventListener<ChannelEvents, T>, context?: unknown): this {
    super.once(event, fn, context);
    return this.#listenersChanged();
  }

  override removeListener<T extends keyof ChannelEvents>(
    event: T,
    fn?: EventEmitter.EventListener<ChannelEvents, T>,
    context?: unknown,
    once?: boolean,
  ): this {
    super.removeListener(event, fn, context, once);
    return this.#listenersChanged();
  }

  override off<T extends keyof ChannelEvents>(event: T, fn?: EventEmitter.EventListener<ChannelEvents, T>, context?: unknown, once?: boolean): this {
    return this.removeListener(event, fn, context, once);
  }

  override removeAllListeners(event?: keyof ChannelEvents): this {
    super.removeAllListeners(event);
    return this.#listenersChanged();
  }

  #listenersChanged(): this {
    this.#updateRef();
    // Messages buffered while nobody listened go to a new listener, after the caller's code.
    if (this.#inbox.length > 0 && this.listenerCount('message') > 0) queueMicrotask(() => this.#drainInboxToListeners());
    return this;
  }

  #drainInboxToListeners(): void {
    while (this.#inbox.length > 0 && this.#recvQueue.length === 0 && this.listenerCount('message') > 0) {
      const item = this.#takeBuffered()!;
      if (item instanceof Error) this.#emitSafely('error', item);
      else this.#emitSafely('message', item);
    }
    this.#updateRef();
  }

  /**
   * A listener that throws must not stop the channel mid-batch (the rest of the batch's fds
   * would have no owner): the error is rethrown on its own tick, as an uncaught exception.
   */
  #emitSafely<T extends keyof ChannelEvents>(event: T, ...args: EventEmitter.EventArgs<ChannelEvents, T>): void {
    try {
      this.emit(event, ...args);
    } catch (error) {
      process.nextTick(() => {
        throw error;
      });
    }
  }

  #sendNow(fd: number): number {
    sendFds[0] = fd;
    const sent = binding.sendmsg(this.#fd, zeroByte, 0, 1, sendFds, 1, constants.MSG_DONTWAIT);
    return sent < 0 ? sent : 0;
  }

  /** The socket is writable again: sends what waited, a batch per syscall. */
  #flushSends(): void {
    const queue = this.#sendQueue;
    while (queue.length > 0 && this.#state === 'open') {
      const count = Math.min(queue.length, BATCH);
      for (let i = 0; i < count; i++) sendBatch.fds[i] = queue[i]!.fd;
      const sent = binding.sendmmsg(this.#fd, zeroByte, sendBatch.records, sendBatch.fds, count);
      if (isWouldBlock(sent)) break;
      // A failure belongs to the first message the kernel refused; the rest try again.
      const settled = queue.splice(0, sent < 0 ? 1 : sent);
      for (const pending of settled) {
        if (pending.handed !== undefined) closeHandedFd(pending.handed);
        if (sent < 0) pending.reject(errnoException(sent, 'sendmsg'));
        else pending.resolve();
      }
      if (sent >= 0 && sent < count) break; // the socket is full again
    }
    this.#updatePoll();
    this.#updateRef();
  }

  #onPoll(status: number, records: number, writable: boolean): void {
    if (this.#state !== 'open') return; // the addon closes the unclaimed batch
    if (status < 0) {
      this.#endReading(errnoException(status, 'poll'));
      return;
    }
    if (records > 0) this.#decode(records);
    if (writable) this.#flushSends();
  }

  #decode(records: number): void {
    const { data, fds, records: info } = shared;
    info[info.length - 1] = 0; // the batch is ours now: every fd below ends delivered or closed
    for (let i = 0; i < records; i++) {
      const bytes = info[3 * i]!;
      const nfds = info[3 * i + 1]!;
      const flags = info[3 * i + 2]!;
      const dataOffset = i * SLOT_BYTES;
      const fdOffset = i * MAX_FDS;
      if (this.#state !== 'open' || this.#endError !== undefined) {
        // A listener closed the channel, or the stream ended, mid-batch: whatever the
        // rest of the batch holds is ours to close.
        closeFds(fds.subarray(fdOffset, fdOffset + nfds));
        continue;
      }
      if (bytes < 0) {
        this.#endReading(errnoException(bytes, 'recvmsg'));
        continue;
      }
      if (flags & constants.MSG_CTRUNC) {
        this.#deliver(truncatedError('recvmsg'));
      } else if (bytes === 0 && nfds === 0 && this.#type !== 'dgram') {
        this.#endReading(eofError());
      } else {
        const result = decodeBareFd(data, bytes, fds, nfds, dataOffset, fdOffset);
        if (typeof result === 'number') {
          this.#deliver(new ReceivedMessage([result]));
        } else {
          closeFds(fds.subarray(fdOffset, fdOffset + nfds));
          this.#deliver(fdpassError('ERR_FDPASS_BAD_MESSAGE', `recvmsg: ${result}`));
        }
      }
    }
    this.#updatePoll();
    this.#updateRef();
  }

  /** Hands a message (or a per-message error) to the first taker, else buffers it. */
  #deliver(item: Delivery): void {
    const pending = this.#recvQueue.shift();
    if (pending) {
      if (item instanceof Error) pending.reject(item);
      else pending.resolve(item);
      return;
    }
    const event = item instanceof Error ? 'error' : 'message';
    if (this.#inbox.length === 0 && this.listenerCount(event) > 0) {
      if (item instanceof Error) this.#emitSafely('error', item);
      else this.#emitSafely('message', item);
      return;
    }
    this.#inbox.push(item);
    if (item instanceof ReceivedMessage) {
      this.#inboxFds += item.fds.length;
      for (const fd of item.fds) this.#poll.hold(fd);
    }
  }

  #takeBuffered(): Delivery | undefined {
    const item = this.#inbox.shift();
    if (item === undefined) return undefined;
    if (item instanceof ReceivedMessage) {
      this.#inboxFds -= item.fds.length;
      for (const fd of item.fds) this.#poll.release(fd);
    }
    if (this.#inbox.length === 0 && this.#endError && this.#state === 'open') {
      void this.close(); // the peer is gone and nothing is left to hand out
    } else {
      this.#updatePoll();
    }
    return item;
  }

  /** EOF or a socket error: no more reading; waiters get the reason; close once drained. */
  #endReading(reason: Error): void {
    this.#endError = reason;
    for (const pending of this.#recvQueue.splice(0)) pending.reject(reason);
    if ((reason as SystemError).errno === UV_EOF) this.#emitSafely('end');
    else if (this.listenerCount('error') > 0) this.#emitSafely('error', reason);
    if (this.#inbox.length === 0) void this.close();
    else this.#updatePoll();
  }

  #updatePoll(): void {
    if (this.#state !== 'open') return;
    const readable = this.#endError === undefined && this.#inboxFds < this.#maxBufferedFds;
    const writable = this.#sendQueue.length > 0;
    if (readable === this.#watchReadable && writable === this.#watchWritable) return;
    this.#watchReadable = readable;
    this.#watchWritable = writable;
    const err = this.#poll.start(readable, writable);
    if (err < 0) this.#endReading(errnoException(err, 'uv_poll_start'));
  }

  #updateRef(): void {
    if (this.#state !== 'open') return;
    const wanted =
      this.#explicitRef ??
      (this.#recvQueue.length > 0 || this.#sendQueue.length > 0 || this.#iterators > 0 || this.listenerCount('message') > 0);
    if (wanted === this.#refd) return;
    this.#refd = wanted;
    if (wanted) this.#poll.ref();
    else this.#poll.unref();
  }
}

function maxBufferedFdsOption(options: ChannelOptions | undefined): number {
  const maxBufferedFds = validateOptions(options, 'options').maxBufferedFds ?? 128;
  if (!Number.isInteger(maxBufferedFds) || maxBufferedFds < 1) {
    throw outOfRange('options.maxBufferedFds', 'an integer >= 1', maxBufferedFds);
  }
  return maxBufferedFds;
}
