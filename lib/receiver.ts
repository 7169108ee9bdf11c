// A channel's receive side: what a wake-up brought (binding.ts), decoded into messages and
// handed to whoever waits (recv(), an iterator, 'message' listeners), else buffered within the
// budget. Every fd it holds is in the ledger, where the addon closes it if no JS runs again.
//
// The ledger's fds, oldest first: those of buffered messages (the inbox), then those the stream
// decoder holds (queued, or claimed by a partial frame), then those of reads not yet decoded.
import { debuglog } from 'node:util';
import { constants, type PollWrap } from './binding';
import { constants as os } from 'node:os';
import { UV_EOF, abortError, closedError, errnoException, fdpassError, truncatedError, type SystemError } from './errors';
import { FdLedger } from './fd-ledger';
import { Fifo } from './fifo';
import { MESSAGE_HEADER_BYTES, StreamDecoder, decodePacket, type DecodeSink, type FramingLimits } from './framing';
import { ReceivedMessage, noFds } from './message';
import type { ReceiveBudget } from './receive-budget';
import type { SocketType } from './socket-type';

const debug = debuglog('fdpass');

export interface ReceiveLimits extends FramingLimits {
  /** Milliseconds a stream frame may stay incomplete while the channel reads; 0: no limit. */
  readonly frameTimeout: number;
}

/** What the receive side needs from the channel that owns it. */
export interface ReceiverHost {
  listenerCount(event: 'message' | 'error'): number;
  emitMessage(message: ReceivedMessage): void;
  emitError(error: Error): void;
  /** Reading ended for good (code 'EOF' when the peer closed). */
  readingEnded(reason: Error): void;
  /** Reading has ended and nothing buffered is left: the channel may close. */
  drained(): void;
  /** What the receive side wants from the poll, or whether it keeps the process alive, changed. */
  changed(): void;
}

interface Waiter {
  resolve(message: ReceivedMessage): void;
  reject(error: Error): void;
  /** recv() takes per-message errors; an iterator does not (they go to 'error' listeners). */
  readonly takesErrors: boolean;
}

/** A read received but not decoded yet, because the budget filled up mid-batch. */
interface PendingRead {
  bytes: number; // its length, or -errno
  nfds: number; // fds that came with it and are not yet the decoder's
  flags: number;
  data: Buffer;
  /** The rest of a read the decoder paused in: its fds are the decoder's already. */
  rest: boolean;
}

type Delivery = ReceivedMessage | Error;

const { MSG_CTRUNC, MSG_TRUNC, RECORD_STRIDE, RECORD_BYTES, RECORD_FDS, RECORD_FLAGS, BUFFERED_ITEM_OVERHEAD_BYTES } = constants;
const ECONNRESET = -os.errno.ECONNRESET;
const DONE: IteratorResult<ReceivedMessage> = Object.freeze({ done: true, value: undefined });

// Receive buffers, one set per thread and slot size, shared by the channels using it: the
// addon fills them and JS decodes them within the same callback, before any other channel
// runs. Message i of a batch has its own slot of slotBytes.
const BATCH = constants.MAX_MESSAGES_PER_BATCH;
const STREAM_SLOT_BYTES = 4096;
const BATCH_BYTES = BATCH * STREAM_SLOT_BYTES;
// No Unix packet is larger than the sender's socket buffer, which Linux caps at wmem_max
// (208 KiB by default): a packet channel's maxPayloadBytes is at most this.
const MAX_PACKET_PAYLOAD_BYTES = 4 * 1024 * 1024;

export interface ReceiveBuffers {
  readonly slotBytes: number;
  readonly data: Uint8Array;
  readonly records: Int32Array;
  /** constants.RECEIVE_STREAM or RECEIVE_PACKETS. */
  readonly mode: number;
}

const receiveBuffers = new Map<number, ReceiveBuffers>();

/** This thread's receive buffers for a channel of `type` and `limits`. */
export function receiveBuffersFor(type: SocketType, limits: FramingLimits): ReceiveBuffers {
  // A packet must fit one slot whole, or the kernel cuts it (MSG_TRUNC).
  const slotBytes =
    type === 'stream' ? STREAM_SLOT_BYTES : MESSAGE_HEADER_BYTES + Math.min(limits.maxPayloadBytes, MAX_PACKET_PAYLOAD_BYTES);
  const mode = type === 'stream' ? constants.RECEIVE_STREAM : constants.RECEIVE_PACKETS;
  const key = type === 'stream' ? -1 : slotBytes;
  let buffers = receiveBuffers.get(key);
  if (buffers === undefined) {
    const slots = Math.max(1, Math.min(BATCH, Math.floor(BATCH_BYTES / slotBytes)));
    buffers = {
      slotBytes,
      mode,
      data: new Uint8Array(slots * slotBytes),
      records: new Int32Array(new ArrayBuffer(4 * RECORD_STRIDE * slots)),
    };
    receiveBuffers.set(key, buffers);
  }
  return buffers;
}

/** What a buffered message costs against the byte budget (an error: the overhead alone); empty ones count too. */
function costOf(message: ReceivedMessage): number {
  return message.data.length + BUFFERED_ITEM_OVERHEAD_BYTES;
}

function isEnd(error: Error): boolean {
  const code = (error as { code?: unknown }).code;
  return code === 'EOF' || code === 'ERR_FDPASS_CHANNEL_CLOSED';
}

/** The error a recv() gets after the peer closed: code 'EOF', as libuv names it. */
function eofError(): Error {
  return errnoException(UV_EOF, 'recvmsg', 'the peer closed the channel');
}

export class Receiver {
  readonly #host: ReceiverHost;
  readonly #fd: number;
  readonly #type: SocketType;
  readonly #limits: ReceiveLimits;
  readonly #buffers: ReceiveBuffers;
  readonly #ledger: FdLedger;
  readonly #poll: PollWrap;
  /** Reassembles a stream's frames; null on packet sockets, where a packet is a message. */
  readonly #decoder: StreamDecoder | null;
  #budget: ReceiveBudget;
  /**
   * Whether the budget is shared (a server's channels nobody has taken yet). Then a frame under
   * way gets no read past a full budget: channels that each finished one would hold a message
   * each beyond it, and none of them needs to, as taking a channel gives it a budget of its own.
   */
  #budgetShared: boolean;
  /** What this receiver has counted against its budget. */
  #chargedFds = 0;
  #chargedBytes = 0;

  /** Messages and per-message errors that nobody has taken yet, oldest first. */
  readonly #inbox = new Fifo<Delivery>();
  /** The inbox messages' fds: the ledger's first #inboxFds. */
  #inboxFds = 0;
  #inboxBytes = 0;
  readonly #waiters: Waiter[] = [];
  readonly #pendingReads: PendingRead[] = [];
  #pendingBytes = 0;
  #iterators = 0;

  /** Why reading stopped for good: EOF, a socket error, a broken stream. */
  #endError: Error | undefined;
  /** The peer reset the connection; what it sent before is still being read. */
  #reset: Error | undefined;
  #closed = false;
  /** Inside onBatch or #resume: decoding must not start again from a listener. */
  #decoding = false;
  #waitingForRoom = false;
  #frameTimer: NodeJS.Timeout | undefined;
  #timedFrame = -1;
  #unobserved = 0;
  #warned = false;

  readonly #sink: DecodeSink;
  readonly #roomAgain = (): void => {
    this.#waitingForRoom = false;
    this.#resume();
  };

  constructor(
    poll: PollWrap,
    fd: number,
    type: SocketType,
    limits: ReceiveLimits,
    buffers: ReceiveBuffers,
    budget: ReceiveBudget,
    budgetShared: boolean,
    host: ReceiverHost,
  ) {
    this.#poll = poll;
    this.#fd = fd;
    this.#type = type;
    this.#limits = limits;
    this.#buffers = buffers;
    this.#host = host;
    this.#budget = budget;
    this.#budgetShared = budgetShared;
    this.#ledger = new FdLedger(poll);
    poll.setBudget(budget.slots);
    this.#decoder = type === 'stream' ? new StreamDecoder(limits) : null;
    const mustPause = (): boolean => this.#mustPause();
    this.#sink = {
      message: (data, nfds) => this.#decodedMessage(data, nfds),
      error: (error, discardFds, fatal) => this.#decodeError(error, discardFds, fatal),
      get paused() {
        return mustPause();
      },
    };
  }

  /** Whether the poll should watch for readable: nothing ended or waiting, and room (or a frame to finish). */
  get wantsToRead(): boolean {
    if (this.#closed || this.#endError !== undefined || this.#pendingReads.length > 0) return false;
    return !this.#budget.full || this.#frameRest > 0;
  }

  /** Whether someone waits for a message (a recv(), an iterator): that keeps the process alive. */
  get awaited(): boolean {
    return this.#waiters.length > 0 || this.#iterators > 0;
  }

  get bufferedFds(): number {
    return this.#closed ? 0 : this.#ledger.size;
  }

  get bufferedBytes(): number {
    return this.#chargedBytes;
  }

  get unobservedErrors(): number {
    return this.#unobserved;
  }

  /** Why reading ended (EOF or an error), if it has. */
  get endError(): Error | undefined {
    return this.#endError;
  }

  /** The bytes still to come of a frame under way that reading may take even with the budget full. */
  get #frameRest(): number {
    return this.#budgetShared ? 0 : (this.#decoder?.bytesToBoundary ?? 0);
  }

  /** Counts what is held against a budget of its own from now on (a server hands the channel out). */
  useBudget(budget: ReceiveBudget): void {
    if (budget === this.#budget) return;
    this.#budgetShared = false;
    this.#budget.cancel(this.#roomAgain);
    this.#waitingForRoom = false;
    this.#budget.charge(-this.#chargedFds, -this.#chargedBytes);
    budget.charge(this.#chargedFds, this.#chargedBytes);
    this.#budget = budget;
    this.#poll.setBudget(budget.slots);
    this.#resume();
  }

  /** A wake-up filled `count` records. */
  onBatch(count: number): void {
    const { data, records, slotBytes } = this.#buffers;
    let fds = 0;
    this.#decoding = true;
    for (let i = 0; i < count; i++) {
      const at = i * RECORD_STRIDE;
      const bytes = records[at + RECORD_BYTES]!;
      const nfds = records[at + RECORD_FDS]!;
      const flags = records[at + RECORD_FLAGS]!;
      fds += nfds;
      // Reading ended, or the channel closed, mid-batch: the rest's fds are already closed.
      if (this.#closed || this.#endError !== undefined) break;
      if (this.#pendingReads.length > 0)
        this.#keepForLater(data.subarray(i * slotBytes, i * slotBytes + Math.max(bytes, 0)), bytes, nfds, flags);
      else this.#process(data, i * slotBytes, bytes, nfds, flags);
    }
    this.#decoding = false;
    if (debug.enabled) debug('fd %d: %d message(s), %d fd(s) received; %d fd(s) held', this.#fd, count, fds, this.bufferedFds);
    this.#settle();
  }

  /** The addon found the socket readable but no room to read: the budget filled since. */
  recheck(): void {
    if (this.#closed || this.#endError !== undefined) return;
    this.#settle();
  }

  /** A poll error: libuv stopped watching the fd. */
  pollFailed(error: Error): void {
    this.#endReading(error);
  }

  recv(signal: AbortSignal | undefined): Promise<ReceivedMessage> {
    const ready = this.#take(true) ?? this.#finalError();
    if (ready) return ready instanceof Error ? Promise.reject(ready) : Promise.resolve(ready);
    return new Promise<ReceivedMessage>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, takesErrors: true };
      if (signal) {
        const onAbort = (): void => {
          this.#forget(waiter);
          reject(abortError(signal));
        };
        signal.addEventListener('abort', onAbort, { once: true });
        waiter.resolve = (message) => {
          signal.removeEventListener('abort', onAbort);
          resolve(message);
        };
        waiter.reject = (error) => {
          signal.removeEventListener('abort', onAbort);
          reject(error);
        };
      }
      this.#waiters.push(waiter);
      this.#host.changed();
      this.#takerArrived();
    });
  }

  /** Yields every message until reading ends; per-message errors go to 'error' listeners. */
  iterate(): AsyncIterableIterator<ReceivedMessage> {
    let active = true;
    // This iterator's next() calls still waiting: return() ends them, as events.on() does, or
    // the next message would go to a promise nobody awaits any more.
    const waiting = new Map<Waiter, () => void>();
    this.#iterators++;
    this.#host.changed();
    const finish = (): IteratorResult<ReceivedMessage> => {
      if (active) {
        active = false;
        this.#iterators--;
        for (const [waiter, done] of waiting) {
          this.#forget(waiter);
          done();
        }
        waiting.clear();
        this.#host.changed();
      }
      return DONE;
    };
    // EOF and close() end the iteration; any other reason reading ended is thrown from next().
    const ended = (error: Error): Promise<IteratorResult<ReceivedMessage>> => {
      finish();
      return isEnd(error) ? Promise.resolve(DONE) : Promise.reject(error);
    };
    // Each next() settles its own promise with the iterator result: no promise chained on
    // another, as a busy channel yields tens of thousands of messages a second.
    const next = (): Promise<IteratorResult<ReceivedMessage>> => {
      if (!active) return Promise.resolve(DONE);
      const ready = this.#take(false) ?? this.#finalError();
      if (ready) return ready instanceof Error ? ended(ready) : Promise.resolve({ done: false, value: ready });
      return new Promise((resolve, reject) => {
        const waiter: Waiter = {
          takesErrors: false,
          resolve: (value) => {
            waiting.delete(waiter);
            resolve({ done: false, value });
          },
          reject: (error) => {
            waiting.delete(waiter);
            ended(error).then(resolve, reject);
          },
        };
        waiting.set(waiter, () => resolve(DONE));
        this.#waiters.push(waiter);
        this.#host.changed();
        this.#takerArrived();
      });
    };
    const iterator: AsyncIterableIterator<ReceivedMessage> = {
      next,
      return: () => Promise.resolve(finish()),
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  /** Hands what the inbox holds to 'message' listeners (one was just added), in order. */
  drainToListeners(): void {
    while (this.#inbox.length > 0 && this.#waiters.length === 0 && this.#host.listenerCount('message') > 0) {
      const message = this.#take(false);
      if (message !== undefined) this.#host.emitMessage(message as ReceivedMessage);
    }
    if (this.#host.listenerCount('message') > 0) this.#takerArrived();
  }

  /**
   * The channel is closing: waiters get why (the reason reading ended, else `closed`), and
   * whatever is buffered is dropped. Its fds are the ledger's: the poll handle closes them.
   */
  close(closed: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#clearFrameTimer();
    this.#budget.cancel(this.#roomAgain);
    for (const waiter of this.#waiters.splice(0)) waiter.reject(this.#endError ?? closed);
    this.#inbox.clear();
    this.#inboxFds = 0;
    this.#inboxBytes = 0;
    this.#pendingReads.length = 0;
    this.#pendingBytes = 0;
    this.#recharge();
  }

  // ---- decoding ----

  /** One read (a record of the batch, or a pending one): decode it, or keep what must wait. */
  #process(data: Uint8Array, offset: number, bytes: number, nfds: number, flags: number, rest = false): void {
    if (bytes < 0) {
      const error = errnoException(bytes, 'recvmsg');
      // recvmmsg reports a reset ahead of what the peer sent before it: read that first, and
      // end with the reset where EOF would be.
      if (bytes === ECONNRESET && this.#type !== 'dgram' && this.#reset === undefined) this.#reset = error;
      else this.#endReading(error);
    } else if (flags & MSG_CTRUNC) {
      // The addon closed what did arrive. A lone bare fd is one whole message lost; any other
      // cut on a stream leaves a frame without its fds: the stream is unusable.
      const bareFd = bytes === 1 && data[offset] === 0;
      if (this.#decoder !== null && !(bareFd && !this.#decoder.inFrame)) this.#endReading(truncatedError('recvmsg'));
      else this.#deliverError(truncatedError('recvmsg'));
    } else if (bytes === 0 && nfds === 0 && this.#type !== 'dgram') {
      this.#decoder?.end(this.#sink);
      this.#endReading(this.#reset ?? eofError());
    } else if (this.#decoder !== null) {
      const consumed = rest
        ? this.#decoder.pushRest(data, offset, bytes, this.#sink)
        : this.#decoder.push(data, offset, bytes, nfds, this.#sink);
      // Paused at a message boundary: the rest of this read waits, its fds already the decoder's.
      if (consumed < bytes && !this.#closed && this.#endError === undefined && !this.#decoder.failed) {
        this.#keepForLater(data.subarray(offset + consumed, offset + bytes), bytes - consumed, 0, flags, true);
      }
    } else if (flags & MSG_TRUNC) {
      this.#ledger.close(this.#inboxFds, nfds);
      this.#deliverError(
        fdpassError(
          'ERR_FDPASS_MESSAGE_TOO_LARGE',
          `a packet over maxPayloadBytes (${this.#limits.maxPayloadBytes}) was cut by the kernel and dropped; its ${nfds} fd(s) were closed`,
        ),
      );
    } else {
      const outcome = decodePacket(data, offset, bytes, nfds, this.#limits);
      if (outcome instanceof Error) this.#decodeError(outcome, nfds, false);
      else this.#decodedMessage(outcome, nfds);
    }
  }

  #keepForLater(data: Uint8Array, bytes: number, nfds: number, flags: number, rest = false): void {
    const read: PendingRead = { bytes, nfds, flags, data: Buffer.from(data), rest };
    if (rest)
      this.#pendingReads.unshift(read); // it goes before any later read
    else this.#pendingReads.push(read);
    this.#pendingBytes += read.data.length;
  }

  /** Decodes the reads that waited for room, while there is room. */
  #resume(): void {
    if (this.#closed || this.#endError !== undefined || this.#decoding) return;
    this.#decoding = true;
    while (this.#pendingReads.length > 0 && !this.#mustPause()) {
      const read = this.#pendingReads.shift()!;
      this.#pendingBytes -= read.data.length;
      this.#process(read.data, 0, read.bytes, read.nfds, read.flags, read.rest);
      if (this.#closed || this.#endError !== undefined) break;
    }
    this.#decoding = false;
    this.#settle();
  }

  /** After decoding: the budget's count, the ledger's room, the frame timer, the poll. */
  #settle(): void {
    if (this.#closed) return;
    this.#recharge();
    this.#ledger.ensureRoom();
    if (this.#decoder !== null) {
      this.#ledger.readCap = this.#frameRest;
      this.#armFrameTimer(this.#decoder);
    }
    if (this.#endError === undefined && this.#budget.full && !this.#waitingForRoom) {
      this.#waitingForRoom = true;
      this.#budget.whenRoom(this.#roomAgain);
    } else if (this.#pendingReads.length > 0 && !this.#mustPause()) {
      this.#resume(); // room appeared while decoding: go on with what waited
      return;
    }
    this.#host.changed();
  }

  /**
   * Whether decoding stops at this message boundary: the byte budget is full and the next
   * message would be buffered, not handed out. (Decoding adds no fds: those the addon took
   * are held already, and the addon bounds them.)
   */
  #mustPause(): boolean {
    if (this.#closed || this.#endError !== undefined) return true;
    if (this.#inbox.length === 0 && (this.#waiters.length > 0 || this.#host.listenerCount('message') > 0)) return false;
    return this.#budget.bytesFullWith(this.#heldBytes() - this.#chargedBytes);
  }

  /** Someone can take messages now (a recv(), an iterator, a listener): decode what waited. */
  #takerArrived(): void {
    if (this.#pendingReads.length > 0) queueMicrotask(() => this.#resume());
  }

  #decodedMessage(data: Buffer, nfds: number): void {
    if (this.#closed || this.#endError !== undefined) return; // its fds were closed with the rest
    this.#deliverMessage(new ReceivedMessage(nfds === 0 ? noFds : this.#ledger.fds(this.#inboxFds, nfds), data));
  }

  #decodeError(error: Error, discardFds: number, fatal: boolean): void {
    if (this.#closed || this.#endError !== undefined) return;
    if (fatal) {
      this.#endReading(error); // closes every fd beyond the inbox, discardFds among them
    } else {
      this.#ledger.close(this.#inboxFds, discardFds);
      this.#deliverError(error);
    }
  }

  // ---- delivery ----

  /** Hands a message to the first waiter or a 'message' listener, else buffers it. */
  #deliverMessage(message: ReceivedMessage): void {
    const count = message.fds.length;
    if (this.#inbox.length === 0) {
      // Nothing buffered: the message's fds are the ledger's oldest. They are the taker's
      // from here, before any of its code runs.
      const waiter = this.#waiters.shift();
      if (waiter !== undefined) {
        this.#ledger.release(count);
        waiter.resolve(message);
        return;
      }
      if (this.#host.listenerCount('message') > 0) {
        this.#ledger.release(count);
        this.#host.emitMessage(message);
        return;
      }
    }
    this.#inbox.push(message);
    this.#inboxFds += count;
    this.#inboxBytes += costOf(message);
  }

  /**
   * A per-message error (the channel goes on): to a waiting recv(), else 'error' listeners.
   * It is buffered for a later recv() only while nobody consumes at all; consumers that take
   * messages only (listeners, iterators) never have it held in front of their messages.
   */
  #deliverError(error: Error): void {
    if (this.#inbox.length === 0) {
      const waiter = this.#waiters[0];
      if (waiter?.takesErrors) {
        this.#waiters.shift();
        waiter.reject(error);
        return;
      }
      if (this.#host.listenerCount('error') > 0) {
        this.#host.emitError(error);
        return;
      }
      if (waiter !== undefined || this.#iterators > 0 || this.#host.listenerCount('message') > 0) {
        this.#unobservedError(error);
        return;
      }
    }
    this.#inbox.push(error);
    this.#inboxBytes += BUFFERED_ITEM_OVERHEAD_BYTES;
  }

  /**
   * The next buffered message (or, for recv(), per-message error). Errors that an iterator or
   * a listener skips go to 'error' listeners, or are counted.
   */
  #take(takesErrors: boolean): Delivery | undefined {
    for (;;) {
      const item = this.#inbox.shift();
      if (item === undefined) return undefined;
      const isMessage = item instanceof ReceivedMessage;
      this.#inboxBytes -= isMessage ? costOf(item) : BUFFERED_ITEM_OVERHEAD_BYTES;
      if (isMessage) {
        this.#ledger.release(item.fds.length);
        this.#inboxFds -= item.fds.length;
      }
      if (this.#inbox.length === 0 && this.#endError !== undefined) {
        this.#host.drained(); // the peer is gone and nothing is left to hand out
      } else {
        const wasFull = this.#budget.full;
        this.#recharge(); // room again: the budget wakes whoever waits for it
        if (wasFull) this.#host.changed(); // reading may go on
      }
      if (isMessage || takesErrors) return item;
      if (this.#host.listenerCount('error') > 0) this.#host.emitError(item);
      else this.#unobservedError(item);
    }
  }

  /** Why nothing more will come: reading ended, or the channel is closed; undefined if it may. */
  #finalError(): Error | undefined {
    return this.#endError ?? (this.#closed ? closedError() : undefined);
  }

  #forget(waiter: Waiter): void {
    const index = this.#waiters.indexOf(waiter);
    if (index !== -1) this.#waiters.splice(index, 1);
    this.#host.changed();
  }

  /** EOF, a socket error, a broken stream: no more reading; waiters get the reason. */
  #endReading(reason: Error): void {
    if (this.#endError !== undefined || this.#closed) return;
    this.#endError = reason;
    this.#clearFrameTimer();
    this.#budget.cancel(this.#roomAgain);
    this.#waitingForRoom = false;
    // Nothing will complete what the decoder or later reads hold.
    const beyondInbox = this.#ledger.size - this.#inboxFds;
    if (beyondInbox > 0) this.#ledger.close(this.#inboxFds, beyondInbox);
    this.#pendingReads.length = 0;
    this.#pendingBytes = 0;
    const waiters = this.#waiters.splice(0);
    for (const waiter of waiters) waiter.reject(reason);
    if (debug.enabled) debug('fd %d: reading ended: %s', this.#fd, reason.message);
    this.#host.readingEnded(reason);
    if ((reason as SystemError).errno !== UV_EOF) {
      if (this.#host.listenerCount('error') > 0) this.#host.emitError(reason);
      else if (waiters.length === 0) this.#unobservedError(reason, true);
    }
    this.#recharge();
    if (this.#inbox.length === 0) this.#host.drained();
    else this.#host.changed();
  }

  /** An error nobody waits or listens for: counted, and the first one of the channel warned about. */
  #unobservedError(error: Error, endedReading = false): void {
    this.#unobserved++;
    if (this.#warned) return;
    this.#warned = true;
    const what = `${(error as { code?: string }).code ?? error.name}: ${error.message}`;
    process.emitWarning(
      `${endedReading ? 'a channel ended on' : 'a channel dropped a message for'} ${what}, and nobody was told: add an 'error' listener or await recv() to see such errors (channel.unobservedErrors counts them)`,
      { type: 'FdpassWarning', code: 'FDPASS_UNOBSERVED_ERRORS' },
    );
  }

  // ---- accounting ----

  /** What this receiver holds in bytes, as the budget counts them. */
  #heldBytes(): number {
    return this.#inboxBytes + this.#pendingBytes + (this.#decoder?.heldBytes ?? 0);
  }

  /** Brings what the budget counts for this receiver up to date. */
  #recharge(): void {
    const fds = this.#closed ? 0 : this.#ledger.size;
    const bytes = this.#closed ? 0 : this.#heldBytes();
    if (fds === this.#chargedFds && bytes === this.#chargedBytes) return;
    this.#budget.charge(fds - this.#chargedFds, bytes - this.#chargedBytes);
    this.#chargedFds = fds;
    this.#chargedBytes = bytes;
  }

  /** A frame that stays incomplete while the channel reads ends the channel after frameTimeout. */
  #armFrameTimer(decoder: StreamDecoder): void {
    if (!decoder.inFrame || this.#pendingReads.length > 0 || this.#endError !== undefined || this.#limits.frameTimeout === 0) {
      this.#clearFrameTimer();
      return;
    }
    if (this.#frameTimer !== undefined && this.#timedFrame === decoder.framesBegun) return; // the same frame
    this.#clearFrameTimer();
    const frame = (this.#timedFrame = decoder.framesBegun);
    this.#frameTimer = setTimeout(() => {
      this.#frameTimer = undefined;
      if (this.#closed || this.#endError !== undefined || !decoder.inFrame || decoder.framesBegun !== frame) return;
      const error = fdpassError(
        'ERR_FDPASS_FRAME_TIMEOUT',
        `a frame stayed incomplete for ${this.#limits.frameTimeout} ms (frameTimeout); the channel ended and the frame's ${decoder.heldFds} fd(s) were closed`,
      );
      decoder.abort(error, this.#sink);
      this.#settle();
    }, this.#limits.frameTimeout);
    this.#frameTimer.unref(); // the frame timer alone never keeps the process alive
  }

  #clearFrameTimer(): void {
    if (this.#frameTimer !== undefined) clearTimeout(this.#frameTimer);
    this.#frameTimer = undefined;
  }
}
