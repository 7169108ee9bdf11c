// Channel: one socket fd in the event loop, with promises, async iteration and events.
//
// send: caller -> encode (outgoing.ts) -> sendmsg at once (MSG_DONTWAIT) -> on EAGAIN queue and wait for
//       WRITABLE (on ETOOMANYREFS, for a timer) -> retry in order, bare fds a sendmmsg batch at a time
// recv: READABLE -> the addon drains a batch (recvmmsg) -> decode (framing.ts) -> pending recv() /
//       'message' listeners / bounded inbox
import { constants as os } from 'node:os';
import EventEmitter from 'eventemitter3';
import { binding, constants, type PollWrap } from './binding';
import { UV_EOF, type SystemError, abortError, closedError, errnoException, fdpassError, invalidArgType, truncatedError } from './errors';
import { closeFds, validateFd, type FdLike } from './fd';
import { FdLedger } from './fd-ledger';
import { MAX_FDS_PER_FRAME, MAX_PAYLOAD_BYTES, MESSAGE_HEADER_BYTES, StreamDecoder, decodePacket, type DecodeOutcome, type FramingLimits } from './framing';
import { ReceivedMessage } from './message';
import { integerOption, validateOptions } from './options';
import { readPeerCredentials, type PeerCredentials } from './peer';
import { closeHanded, toOutgoing, type Message, type Outgoing } from './outgoing';
import { socketpair, type SocketType } from './seed';

export interface ChannelOptions {
  /**
   * Most received fds held for nobody (no pending recv(), no 'message' listener) before the
   * channel stops reading and leaves the rest in the kernel: a fast peer cannot fill our fd table.
   * Default 128.
   */
  maxBufferedFds?: number;
  /**
   * Largest payload accepted from the peer; a larger message is dropped (its fds closed)
   * and reported as an error with code 'ERR_FDPASS_MESSAGE_TOO_LARGE'. Default 1 MiB.
   * On seqpacket and dgram sockets it also sizes the receive buffer, up to 4 MiB.
   */
  maxPayloadBytes?: number;
  /**
   * Most fds accepted in one message from the peer; a message with more is dropped (its
   * fds closed) and reported with code 'ERR_FDPASS_TOO_MANY_FDS'. Default 253, Linux's limit.
   */
  maxFdsPerMessage?: number;
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
  outgoing: Outgoing;
  resolve(): void;
  reject(error: Error): void;
}

const EAGAIN = -os.errno.EAGAIN;
const EWOULDBLOCK = -os.errno.EWOULDBLOCK;
const EEXIST = -os.errno.EEXIST;
const ECONNRESET = -os.errno.ECONNRESET;
const ETOOMANYREFS = -constants.ETOOMANYREFS;
// ETOOMANYREFS: too many of this user's fds are in flight. Nothing signals when the peer
// has taken some, so the send tries again after a pause.
const IN_FLIGHT_RETRY_MS = 5;

// Receive buffers, one set per thread and slot size, shared by the channels using it: the
// addon fills them and JS decodes them within the same callback, before any other channel
// runs. Message i of a batch has its own slot: slotBytes of data, MAX_FDS fds.
const BATCH = constants.MAX_MESSAGES_PER_BATCH;
const MAX_FDS = constants.MAX_FDS_PER_MESSAGE;
const STREAM_SLOT_BYTES = 4096;
const BATCH_BYTES = BATCH * STREAM_SLOT_BYTES;
// No Unix packet is larger than the sender's socket buffer, which Linux caps at wmem_max
// (208 KiB by default): a packet channel's maxPayloadBytes is at most this.
const MAX_PACKET_PAYLOAD_BYTES = 4 * 1024 * 1024;

interface ReceiveBuffers {
  slotBytes: number;
  data: Uint8Array;
  fds: Int32Array;
  // [bytes or -errno, nfds, msg_flags] per message, then one slot: the number of messages
  // not yet claimed by JS (the addon closes an unclaimed batch's fds).
  records: Int32Array;
}

const receiveBuffers = new Map<number, ReceiveBuffers>();

function receiveBuffersFor(slotBytes: number): ReceiveBuffers {
  let buffers = receiveBuffers.get(slotBytes);
  if (buffers === undefined) {
    const slots = Math.max(1, Math.min(BATCH, Math.floor(BATCH_BYTES / slotBytes)));
    buffers = {
      slotBytes,
      data: new Uint8Array(slots * slotBytes),
      fds: new Int32Array(slots * MAX_FDS),
      records: new Int32Array(3 * slots + 1),
    };
    receiveBuffers.set(slotBytes, buffers);
  }
  return buffers;
}

// A batch of bare fds for one sendmmsg: [dataOffset, dataLength, fdsOffset, nfds, sent].
const zeroByte = new Uint8Array(1);
const sendBatch = { records: new Int32Array(5 * BATCH), fds: new Int32Array(BATCH) };
for (let i = 0; i < BATCH; i++) sendBatch.records.set([0, 1, i, 1, 0], 5 * i);

// Socket fds of this thread's open channels. A paused channel's poll is stopped, so libuv
// no longer sees its fd and would let a second poll handle onto it (and abort later).
const channelFds = new Set<number>();

// What a StreamDecoder push completes; reused, as decoding runs to completion in one callback.
const decoded: DecodeOutcome[] = [];


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
  /** The inbox's fds, where the addon closes them if no JS runs again. */
  readonly #ledger: FdLedger;
  readonly #maxBufferedFds: number;
  readonly #limits: FramingLimits;
  readonly #buffers: ReceiveBuffers;
  /** Reassembles a stream's frames; null on packet sockets, where a packet is a message. */
  readonly #decoder: StreamDecoder | null;

  #state: 'open' | 'closing' | 'closed' = 'open';
  #closed: Promise<void> | undefined;
  /** Why reading stopped for good: EOF or a socket error. */
  #endError: Error | undefined;
  /** The peer reset the connection; what it sent before is still being read. */
  #reset: Error | undefined;

  readonly #sendQueue: PendingSend[] = [];
  readonly #recvQueue: PendingRecv[] = [];
  readonly #inbox: Delivery[] = [];
  #iterators = 0;

  #peer: PeerCredentials | undefined;
  #inFlightRetry: NodeJS.Timeout | undefined;
  #watchReadable = false;
  #watchWritable = false;
  #explicitRef: boolean | undefined;
  #refd = true;

  /** A connected pair of channels over a new socketpair. */
  static pair(type: SocketType = 'stream', options?: ChannelOptions): [Channel, Channel] {
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
   * A channel over a connected Unix socket fd. The channel owns the fd from here on:
   * it makes it non-blocking and closes it on close(). If the constructor throws,
   * the fd is still the caller's.
   */
  constructor(fd: number, options?: ChannelOptions) {
    super();
    validateFd(fd, 'fd');
    const { maxBufferedFds, limits } = channelOptions(options);
    if (channelFds.has(fd)) {
      throw errnoException(EEXIST, 'uv_poll_init', `fd ${fd} is already owned by another channel`);
    }
    const type = binding.socketType(fd);
    if (type < 0) throw errnoException(type, 'getsockopt', `fd ${fd} is not a usable socket`);
    this.#type = type === constants.SOCK_DGRAM ? 'dgram' : type === constants.SOCK_SEQPACKET ? 'seqpacket' : 'stream';

    this.#fd = fd;
    this.#maxBufferedFds = maxBufferedFds;
    this.#limits = limits;
    // A packet must fit one slot whole, or the kernel cuts it (MSG_TRUNC).
    const packetSlotBytes = MESSAGE_HEADER_BYTES + Math.min(limits.maxPayloadBytes, MAX_PACKET_PAYLOAD_BYTES);
    this.#buffers = receiveBuffersFor(this.#type === 'stream' ? STREAM_SLOT_BYTES : packetSlotBytes);
    this.#decoder = this.#type === 'stream' ? new StreamDecoder(limits, (fds) => closeFds(fds)) : null;
    const { data, fds, records, slotBytes } = this.#buffers;
    this.#poll = new binding.PollWrap((status, count, writable) => this.#onPoll(status, count, writable), data, fds, records, slotBytes);
    const err = this.#poll.open(fd, true);
    if (err < 0) {
      throw errnoException(err, 'uv_poll_init', err === EEXIST ? `fd ${fd} is already watched by another poll handle` : `fd ${fd}`);
    }
    this.#ledger = new FdLedger(this.#poll);
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
   * The process at the other end: its pid, uid and gid as of its connect() or socketpair()
   * (SO_PEERCRED on Linux). Read once, on first use; throws 'ERR_FDPASS_CHANNEL_CLOSED' if
   * the channel closed before that, or a system error where the socket has no peer.
   */
  get peer(): PeerCredentials {
    if (this.#peer === undefined) {
      if (this.#state === 'closed') throw closedError();
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
      return Promise.reject(closedError());
    }
    if (this.#sendQueue.length === 0) {
      const err = this.#sendOne(outgoing);
      if (err === 0) {
        closeHanded(outgoing);
        return Promise.resolve();
      }
      if (!this.#mustWait(err)) {
        closeHanded(outgoing);
        return Promise.reject(errnoException(err, 'sendmsg'));
      }
    }
    return new Promise<void>((resolve, reject) => {
      this.#sendQueue.push({ outgoing, resolve, reject });
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
    const ready = this.#takeReady();
    if (ready) return ready instanceof Error ? Promise.reject(ready) : Promise.resolve(ready);

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
    // EOF and close() end the iteration; any other error is thrown from next().
    const ended = (error: Error): Promise<IteratorResult<ReceivedMessage>> => {
      const code = (error as { code?: unknown }).code;
      const result = finish();
      return code === 'EOF' || code === 'ERR_FDPASS_CHANNEL_CLOSED' ? Promise.resolve(result) : Promise.reject(error);
    };
    // Each next() settles its own promise with the iterator result: no promise chained on
    // recv()'s, as a busy channel yields tens of thousands of messages a second.
    const next = (): Promise<IteratorResult<ReceivedMessage>> => {
      if (!active) return Promise.resolve(finish());
      const ready = this.#takeReady();
      if (ready) return ready instanceof Error ? ended(ready) : Promise.resolve({ done: false, value: ready });
      return new Promise((resolve, reject) => {
        this.#recvQueue.push({
          resolve: (value) => resolve({ done: false, value }),
          reject: (error) => ended(error).then(resolve, reject),
        });
        this.#updateRef();
      });
    };
    const iterator: AsyncIterableIterator<ReceivedMessage> = {
      next,
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
    clearTimeout(this.#inFlightRetry);
    for (const pending of this.#sendQueue.splice(0)) {
      closeHanded(pending.outgoing);
      pending.reject(error);
    }
    for (const pending of this.#recvQueue.splice(0)) pending.reject(this.#endError ?? error);
    // A partial frame's fds, and fds queued ahead of their frame, are the decoder's.
    this.#decoder?.close();
    // The poll handle takes the inbox's fds from the ledger as it starts closing, and closes them.
    this.#inbox.length = 0;
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

  /**
   * One sendmsg of what is left of a message: 0 once the kernel has all of it, else
   * -errno (EAGAIN also after part of a large frame went; the rest follows, without fds).
   */
  #sendOne(outgoing: Outgoing): number {
    if (outgoing.bare) {
      const sent = binding.sendFd(this.#fd, outgoing.fd, constants.MSG_DONTWAIT);
      return sent < 0 ? sent : 0; // one byte: taken whole or not at all
    }
    const { bytes, fds } = outgoing;
    const length = bytes.length - outgoing.offset;
    const nfds = outgoing.offset === 0 ? fds.length : 0;
    const sent = binding.sendmsg(this.#fd, bytes, outgoing.offset, length, fds, nfds, constants.MSG_DONTWAIT);
    if (sent < 0) return sent;
    outgoing.offset += sent;
    return sent === length ? 0 : EAGAIN;
  }

  /** How many bare fds lead the queue, up to one batch; they are copied for sendmmsg. */
  #gatherBareBatch(): number {
    const queue = this.#sendQueue;
    let count = 0;
    while (count < BATCH && count < queue.length && queue[count]!.outgoing.bare) {
      sendBatch.fds[count] = queue[count]!.outgoing.fd;
      count++;
    }
    return count;
  }

  /** Whether a send that failed with err waits and tries again, rather than failing. */
  #mustWait(err: number): boolean {
    if (isWouldBlock(err)) return true;
    if (err !== ETOOMANYREFS) return false;
    if (this.#inFlightRetry === undefined) {
      this.#inFlightRetry = setTimeout(() => {
        this.#inFlightRetry = undefined;
        this.#flushSends();
      }, IN_FLIGHT_RETRY_MS);
      if (!this.#refd) this.#inFlightRetry.unref(); // an unref'd channel keeps nothing alive
    }
    return true;
  }

  /** The socket is writable again (or the in-flight pause is over): sends what waited, in order. */
  #flushSends(): void {
    const queue = this.#sendQueue;
    while (queue.length > 0 && this.#state === 'open' && this.#inFlightRetry === undefined) {
      const head = queue[0]!;
      if (head.outgoing.bare) {
        const count = this.#gatherBareBatch();
        const sent = binding.sendmmsg(this.#fd, zeroByte, sendBatch.records, sendBatch.fds, count);
        if (sent < 0 && this.#mustWait(sent)) break;
        // A failure belongs to the first message the kernel refused; the rest try again.
        for (const pending of queue.splice(0, sent < 0 ? 1 : sent)) this.#settleSend(pending, sent < 0 ? sent : 0);
        if (sent >= 0 && sent < count) break; // the socket is full again
      } else {
        const err = this.#sendOne(head.outgoing);
        if (err < 0 && this.#mustWait(err)) break;
        queue.shift();
        this.#settleSend(head, err);
      }
    }
    this.#updatePoll();
    this.#updateRef();
  }

  #settleSend(pending: PendingSend, err: number): void {
    closeHanded(pending.outgoing);
    if (err === 0) pending.resolve();
    else pending.reject(errnoException(err, 'sendmsg'));
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
    const { data, fds, records: info, slotBytes } = this.#buffers;
    info[info.length - 1] = 0; // the batch is ours now: every fd below ends delivered or closed
    for (let i = 0; i < records; i++) {
      const bytes = info[3 * i]!;
      const nfds = info[3 * i + 1]!;
      const flags = info[3 * i + 2]!;
      const dataOffset = i * slotBytes;
      const fdOffset = i * MAX_FDS;
      if (this.#state !== 'open' || this.#endError !== undefined) {
        // A listener closed the channel, or the stream ended, mid-batch: whatever the
        // rest of the batch holds is ours to close.
        closeFds(fds.subarray(fdOffset, fdOffset + nfds));
      } else if (bytes < 0) {
        const error = errnoException(bytes, 'recvmsg');
        // recvmmsg reports a reset ahead of what the peer sent before it: read that first,
        // and end with the reset where EOF would be.
        if (bytes === ECONNRESET && this.#type !== 'dgram' && this.#reset === undefined) this.#reset = error;
        else this.#endReading(error);
      } else if (flags & constants.MSG_CTRUNC) {
        // The addon closed what did arrive. A lone bare fd is one whole message lost; any
        // other cut on a stream leaves a frame without its fds: the stream is unusable.
        const bareFd = bytes === 1 && data[dataOffset] === 0;
        if (this.#decoder !== null && !(bareFd && !this.#decoder.inFrame)) this.#endReading(truncatedError('recvmsg'));
        else this.#deliver(truncatedError('recvmsg'));
      } else if (bytes === 0 && nfds === 0 && this.#type !== 'dgram') {
        const cut = this.#decoder?.end();
        if (cut) this.#deliver(cut);
        this.#endReading(this.#reset ?? eofError());
      } else if (this.#decoder !== null) {
        for (const outcome of this.#decoder.push(data, dataOffset, bytes, fds, fdOffset, nfds, decoded)) {
          // A broken stream cannot be read on: its error ends reading.
          if (outcome instanceof Error && this.#decoder.failed) this.#endReading(outcome);
          else this.#deliver(outcome instanceof Error ? outcome : new ReceivedMessage(outcome.fds, outcome.data));
        }
        decoded.length = 0;
      } else if (flags & constants.MSG_TRUNC) {
        closeFds(fds.subarray(fdOffset, fdOffset + nfds));
        this.#deliver(
          fdpassError('ERR_FDPASS_MESSAGE_TOO_LARGE', `a packet over maxPayloadBytes (${this.#limits.maxPayloadBytes}) was cut by the kernel and dropped; its ${nfds} fd(s) were closed`),
        );
      } else {
        const outcome = decodePacket(data, dataOffset, bytes, fds, fdOffset, nfds, this.#limits, closeFds);
        this.#deliver(outcome instanceof Error ? outcome : new ReceivedMessage(outcome.fds, outcome.data));
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
    if (item instanceof ReceivedMessage) this.#ledger.add(item.fds);
  }

  /**
   * What a receive gets without waiting: the next buffered message or error, else why
   * nothing more will come (EOF, a socket error, close()); undefined if it must wait.
   */
  #takeReady(): Delivery | undefined {
    return this.#takeBuffered() ?? this.#endError ?? (this.#state === 'open' ? undefined : closedError());
  }

  #takeBuffered(): Delivery | undefined {
    const item = this.#inbox.shift();
    if (item === undefined) return undefined;
    if (item instanceof ReceivedMessage) this.#ledger.take(item.fds.length);
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
    const readable = this.#endError === undefined && this.#ledger.size < this.#maxBufferedFds;
    const writable = this.#sendQueue.length > 0 && this.#inFlightRetry === undefined;
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

export function channelOptions(options: ChannelOptions | undefined): { maxBufferedFds: number; limits: FramingLimits } {
  const { maxBufferedFds = 128, maxPayloadBytes = 1024 * 1024, maxFdsPerMessage = MAX_FDS_PER_FRAME } = validateOptions(options, 'options');
  return {
    maxBufferedFds: integerOption('options.maxBufferedFds', maxBufferedFds, 1, Number.MAX_SAFE_INTEGER),
    limits: {
      maxPayloadBytes: integerOption('options.maxPayloadBytes', maxPayloadBytes, 0, MAX_PAYLOAD_BYTES),
      maxFdsPerMessage: integerOption('options.maxFdsPerMessage', maxFdsPerMessage, 0, MAX_FDS_PER_FRAME),
    },
  };
}
