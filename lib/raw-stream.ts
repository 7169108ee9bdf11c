// RawStream: a stream.Duplex over a connected Unix stream socket that carries fds beside the
// bytes, with no framing of its own, for protocols that frame themselves (D-Bus's UNIX_FD,
// Wayland, X11's DRI3). The same addon and poll handle as a Channel:
//
// write: write({ data, fds }) / writeWithFds(bytes, fds) -> sendmsg (MSG_DONTWAIT), the fds
//        on the call that carries the write's first byte; EAGAIN -> WRITABLE -> the rest
// read:  READABLE -> the addon's recvmmsg, as much as the fd budget and the readable buffer
//        leave room for; each read's fds go to the ledger (an 'fds' listener, or takeFds()),
//        then its bytes are pushed
import { Duplex } from 'node:stream';
import { constants as os } from 'node:os';
import { binding, constants, type PollWrap } from './binding';
import { checkChannelSocket, openError } from './channel';
import { connectSocket } from './connect';
import { errnoException, invalidArgType, invalidArgValue, outOfRange, truncatedError } from './errors';
import { closeFds, toSendableFd, type FdLike } from './fd';
import { FdLedger } from './fd-ledger';
import { ReceiveBudget } from './receive-budget';
import { copyFds, sendFdScratch } from './send-queue';
import { socketAddress } from './socket-address';
import { socketpair } from './socketpair';
import { isFdNumber, validateAbortSignal, validateFd, validateInteger, validateOptions } from './validators';

/** Options of a {@link RawStream}: how much it reads ahead and holds. */
export interface RawStreamOptions {
  /**
   * Most received fds held for takeFds() before the stream stops reading and leaves the rest
   * (bytes and fds) in the kernel, so a peer cannot fill your fd table. Exceeded by one read's
   * fds at most (253). Fds handed to an 'fds' listener are the listener's and do not count.
   * Default 128.
   */
  maxBufferedFds?: number;
  /** Bytes read ahead of the reader before reading pauses. Default 64 KiB. */
  readableHighWaterMark?: number;
  /** Bytes of writes queued before write() returns false. Default 64 KiB. */
  writableHighWaterMark?: number;
  /** As net.Socket's: keep the writable side open after the peer's EOF. Default false. */
  allowHalfOpen?: boolean;
}

/** Options of {@link RawStream.connect}: where to connect, and the stream's own options. */
export interface RawConnectOptions extends RawStreamOptions {
  /** A file path, or with `abstract` a name in Linux's abstract namespace. */
  path: string;
  /** true: `path` is a name in Linux's abstract namespace (no file). Default false. */
  abstract?: boolean;
  /** Gives up connecting (while the server's backlog is full): rejects with an AbortError. */
  signal?: AbortSignal;
}

/** A write with fds: the fds travel with the first byte of data. */
export interface RawWrite {
  /** The bytes; a string is written as UTF-8. */
  readonly data: string | Uint8Array;
  /** Fds to send with the first byte; the stream sends copies, so the caller keeps these. */
  readonly fds?: readonly FdLike[];
}

const DEFAULT_MAX_BUFFERED_FDS = 128;
// What a wake-up may read while an 'fds' listener takes every fd as it arrives: the budget
// bounds what the stream holds for takeFds(), and then it holds nothing. Room for the ledger's
// first size, so that the addon can read all that waits in one batch.
const LISTENED_MAX_FDS = 1024;
const DEFAULT_HIGH_WATER_MARK = 64 * 1024;
const { MSG_CTRUNC, MAX_FDS_PER_MESSAGE, RECORD_STRIDE, RECORD_BYTES, RECORD_FDS, RECORD_FLAGS } = constants;
const EAGAIN = -os.errno.EAGAIN;
const EWOULDBLOCK = -os.errno.EWOULDBLOCK;
// Short of something that frees over time with nothing to signal it (fds in flight, buffer
// memory): a pause, as the Channel's send queue makes.
const SHORT_OF_ROOM = new Set([-constants.ETOOMANYREFS, -os.errno.ENOBUFS]);
const ROOM_RETRY_MS = 5;

// Receive buffers, one set per thread, shared by every raw stream: the addon fills them and the
// stream copies out what it pushes within the same callback. Each slot is one read; the addon
// packs their bytes from the start before it calls back.
const SLOT_BYTES = 4096;
const SLOTS = constants.MAX_MESSAGES_PER_BATCH;
const receive = {
  data: new Uint8Array(SLOTS * SLOT_BYTES),
  records: new Int32Array(new ArrayBuffer(4 * RECORD_STRIDE * SLOTS)),
};
/** receive.data as a Buffer, for Buffer.copy out of it. */
const receivedBytes = Buffer.from(receive.data.buffer, receive.data.byteOffset, receive.data.byteLength);

// Queued writes go out a sendmmsg at a time: small ones copied into one array, so that a
// backlog costs a syscall per batch, not per write, and the copies of their fds one close
// for the batch (the dups took consecutive numbers: one close_range). Small, so that each
// goes whole or not at all (one skb on a Unix stream socket): only the last a batch takes
// may have gone in part.
const BATCH = constants.MAX_MESSAGES_PER_BATCH;
const LARGEST_GATHERED_WRITE = 1024;
const SENT = 4;
const gather = {
  data: new Uint8Array(BATCH * LARGEST_GATHERED_WRITE),
  /** Per write [dataOffset, dataLength, fdsOffset, nfds, sent (out)]. */
  records: new Int32Array(5 * BATCH),
  fds: new Int32Array(BATCH * MAX_FDS_PER_MESSAGE),
  /** The stream's own copies among the fds that went, closed together. */
  sentCopies: new Int32Array(BATCH * MAX_FDS_PER_MESSAGE),
};

/** Part of a write on its way: the fds go with the first byte, and only with it. */
interface OutgoingPart {
  data: Uint8Array;
  offset: number;
  /** The fds still to send (emptied once they went), and whether they are the stream's copies. */
  fds: number[];
  ownsFds: boolean;
  /** Called once the last part has gone (or failed). */
  done: ((error?: Error | null) => void) | undefined;
}

/** What a chunk written with fds carries to _write: its fds, and the bytes that went already. */
interface FdsOfChunk {
  fds: number[];
  ownsFds: boolean;
  sent: number;
}

// A chunk's fds ride on the chunk, a Buffer of the stream's own (chunkOf), as a property: a
// WeakMap from chunk to fds cost each write V8's ephemeron barriers and their scavenges.
const fdsOfChunk = Symbol('fdsOfChunk');
type ChunkWithFds = Buffer & { [fdsOfChunk]?: FdsOfChunk };

/**
 * A `stream.Duplex` over a connected Unix stream socket that carries fds beside the bytes and
 * adds no framing: for protocols that frame themselves (D-Bus, Wayland, systemd's sockets).
 *
 * Events beyond a Duplex's: 'fds' (fds: number[]): fds that arrived, in order, emitted before
 * the bytes they came with are pushed; the listeners own them (see takeFds() otherwise).
 *
 * @example
 * import { RawStream } from 'fdpass';
 *
 * const stream = await RawStream.connect('/run/some.sock');
 * stream.writeWithFds(header, [fileFd]); // the fd goes with the header's first byte
 * stream.on('data', (bytes) => {
 *   const fds = stream.takeFds(fdsCountedInTheHeader); // oldest first; the caller's from here on
 * });
 */
export class RawStream extends Duplex {
  readonly #fd: number;
  readonly #poll: PollWrap;
  readonly #ledger: FdLedger;
  readonly #budget: ReceiveBudget;
  readonly #maxBufferedFds: number;
  /** What #budget counts now: the ledger's fds. */
  #chargedFds = 0;
  #outgoing: OutgoingPart[] = [];
  #retryTimer: NodeJS.Timeout | undefined;
  /** _read() asked for more and no push() has said stop since. */
  #readWanted = false;
  #readEnded = false;
  #readable = false;
  #writable = false;
  #closing = false;

  /** A connected pair over a new socketpair. */
  static pair(options?: RawStreamOptions): [RawStream, RawStream] {
    const [a, b] = socketpair('stream');
    let first: RawStream | undefined;
    try {
      first = new RawStream(a, options);
      return [first, new RawStream(b, options)];
    } catch (error) {
      if (first) first.destroy();
      else closeFds([a]);
      closeFds([b]);
      throw error;
    }
  }

  /** A stream connected to the Unix stream socket at path (or, with `abstract`, a Linux abstract name). */
  static async connect(pathOrOptions: string | RawConnectOptions): Promise<RawStream> {
    const options: Partial<RawConnectOptions> =
      typeof pathOrOptions === 'string' ? { path: pathOrOptions } : validateOptions(pathOrOptions, 'options');
    const address = socketAddress(options.path, options.abstract, 'connect');
    const signal = validateAbortSignal(options.signal, 'options.signal');
    rawStreamOptions(options);
    const sock = await connectSocket(address, constants.SOCK_STREAM, signal);
    try {
      return new RawStream(sock, options);
    } catch (error) {
      closeFds([sock]);
      throw error;
    }
  }

  /**
   * A stream over fd, a connected Unix stream socket, which the stream owns from here on: it
   * makes it non-blocking and closes it when destroyed. If the constructor throws, fd is still
   * the caller's.
   */
  constructor(fd: number, options?: RawStreamOptions) {
    validateFd(fd, 'fd');
    const { maxBufferedFds, readableHighWaterMark, writableHighWaterMark, allowHalfOpen } = rawStreamOptions(options);
    const type = checkChannelSocket(fd);
    if (type !== 'stream') throw invalidArgValue('fd', `is fd ${fd}, a Unix ${type} socket; a RawStream needs a stream socket`, fd);
    super({ readableHighWaterMark, writableHighWaterMark, allowHalfOpen, decodeStrings: true });
    // A read is a slot of bytes in RECEIVE_PACKETS mode: the addon frames nothing, bounds a
    // wake-up by the byte budget as if every read filled its slot, and packs the reads' bytes.
    const poll = new binding.PollWrap(
      (status, count, writable) => this.#onPoll(status, count, writable),
      receive.data,
      receive.records,
      SLOT_BYTES,
      constants.RECEIVE_PACKETS,
    );
    const err = poll.open(fd);
    if (err < 0) throw openError(err, fd);
    // From here the stream owns fd: nothing below may throw.
    this.#fd = fd;
    this.#poll = poll;
    this.#ledger = new FdLedger(poll);
    this.#budget = new ReceiveBudget(maxBufferedFds, readableHighWaterMark);
    this.#maxBufferedFds = maxBufferedFds;
    poll.setBudget(this.#budget.slots);
    this.on('newListener', (event: string | symbol) => {
      if (event === 'fds') this.#widenBudget(true);
    });
    this.on('removeListener', (event: string | symbol) => {
      if (event === 'fds' && this.listenerCount('fds') === 0) this.#widenBudget(false);
    });
  }

  /** The socket fd the stream owns (-1 once destroyed). */
  get fd(): number {
    return this.#closing ? -1 : this.#fd;
  }

  /** Received fds held for takeFds() right now. */
  get bufferedFds(): number {
    return this.#closing ? 0 : this.#ledger.size;
  }

  /**
   * Takes up to `count` received fds, oldest first: they are the caller's from here on (close
   * them with closeFd, or hand them to Node). Fewer come back when fewer have arrived.
   */
  takeFds(count: number): number[] {
    validateInteger(count, 'count', 0, Number.MAX_SAFE_INTEGER);
    if (this.#closing) return [];
    const taken = Math.min(count, this.#ledger.size);
    const fds = this.#ledger.fds(0, taken);
    this.#ledger.release(taken);
    this.#recharge();
    this.#update();
    return fds;
  }

  /** Closes fds this stream handed out that their taker no longer wants (dbus-native calls it at close). */
  closeFds(fds: readonly number[]): void {
    if (!Array.isArray(fds)) throw invalidArgType('fds', 'an array of fds', fds);
    for (let i = 0; i < fds.length; i++) {
      const fd: unknown = fds[i];
      // An fd that is fine takes no name for an error it will not have (a string per fd).
      if (!isFdNumber(fd)) validateFd(fd, `fds[${i}]`);
    }
    if (fds.length > 0) closeFds(fds);
  }

  /**
   * Writes bytes with fds, after every write before it: the fds go with the first byte. The
   * fds stay the caller's, who may close them as soon as this returns: a write that must wait
   * holds copies of its own (dup), closed once sent. Returns write()'s backpressure signal.
   */
  writeWithFds(data: string | Uint8Array, fds: readonly FdLike[], callback?: (error?: Error | null) => void): boolean {
    const bytes = bytesOf(data);
    const numbers = fdNumbers(fds, bytes.length);
    if (numbers.length === 0) return super.write(chunkOf(bytes), callback);
    let sent = 0;
    // A stream with nothing queued writes at once, in this call, while the caller's fds are
    // open: no copy of them, and no trip through Node's write queue when the socket takes the
    // whole write (the callback still comes on a later tick, as Node's do).
    if (this.writableLength === 0 && this.writableCorked === 0 && !this.destroyed && !this.writableEnded && this.#outgoing.length === 0) {
      const result = this.#retryTimer === undefined ? this.#send(bytes, 0, numbers) : EAGAIN;
      if (result === bytes.length) {
        if (callback) process.nextTick(callback);
        return true;
      }
      // A failure other than a full socket: _write meets it again, and reports it as writes do.
      if (result < 0 && !isShortOfRoom(result)) return this.#queue(bytes, { fds: numbers, ownsFds: false, sent: 0 }, callback);
      // The fds went with the first bytes: the rest waits its turn without them.
      if (result > 0) sent = result;
    }
    const entry: FdsOfChunk = { fds: sent > 0 ? [] : numbers, ownsFds: false, sent };
    if (entry.fds.length > 0) holdCopies(entry);
    return this.#queue(bytes, entry, callback);
  }

  /** Hands a write to Node's queue, its fds (and what went of it) riding on a chunk of our own. */
  #queue(bytes: Uint8Array, entry: FdsOfChunk, callback: ((error?: Error | null) => void) | undefined): boolean {
    const chunk: ChunkWithFds = chunkOf(bytes);
    chunk[fdsOfChunk] = entry;
    return super.write(chunk, callback);
  }

  /** One sendmsg of data from offset, with fds: the bytes sent, or -errno. */
  #send(data: Uint8Array, offset: number, fds: readonly number[]): number {
    const nfds = copyFds(fds, sendFdScratch, 0);
    return binding.sendmsg(this.#fd, data, offset, data.length - offset, null, nfds);
  }

  /** write(chunk) as Duplex takes it, or write({ data, fds }). */
  override write(
    chunk: unknown,
    encoding?: BufferEncoding | ((error?: Error | null) => void),
    callback?: (error?: Error | null) => void,
  ): boolean {
    if (isRawWrite(chunk)) return this.writeWithFds(chunk.data, chunk.fds ?? [], typeof encoding === 'function' ? encoding : callback);
    return super.write(chunk, encoding as BufferEncoding, callback);
  }

  /** Keep the process alive while the stream watches its socket (the default). */
  ref(): this {
    this.#poll.ref();
    return this;
  }

  /** Never keep the process alive for this stream. */
  unref(): this {
    this.#poll.unref();
    return this;
  }

  // ---- Duplex ----

  /** @internal Duplex's hook; not called by users. */
  override _read(): void {
    this.#readWanted = true;
    this.#recharge();
    this.#update();
  }

  /** @internal Duplex's hook; not called by users. */
  override _write(chunk: ChunkWithFds, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const entry = chunk[fdsOfChunk];
    this.#outgoing.push({ data: chunk, offset: entry?.sent ?? 0, fds: entry?.fds ?? [], ownsFds: entry?.ownsFds ?? false, done: callback });
    this.#flush();
  }

  /** @internal Duplex's hook; not called by users. */
  override _writev(chunks: Array<{ chunk: ChunkWithFds }>, callback: (error?: Error | null) => void): void {
    // Runs of chunks without fds go as one sendmsg; a chunk with fds starts a new one, so its
    // fds go with its own first byte.
    let run: Buffer[] = [];
    const endRun = (): void => {
      if (run.length === 0) return;
      const last = this.#outgoing[this.#outgoing.length - 1];
      const joined = run.length === 1 ? run[0]! : Buffer.concat(run);
      if (last !== undefined && last.done === undefined && last.offset === 0) {
        last.data = Buffer.concat([last.data, joined]);
      } else {
        this.#outgoing.push({ data: joined, offset: 0, fds: [], ownsFds: false, done: undefined });
      }
      run = [];
    };
    for (const { chunk } of chunks) {
      const entry = chunk[fdsOfChunk];
      if (entry === undefined) {
        run.push(chunk);
        continue;
      }
      endRun();
      this.#outgoing.push({ data: chunk, offset: entry.sent, fds: entry.fds, ownsFds: entry.ownsFds, done: undefined });
    }
    endRun();
    this.#outgoing[this.#outgoing.length - 1]!.done = callback;
    this.#flush();
  }

  /** @internal Duplex's hook; not called by users. */
  override _final(callback: (error?: Error | null) => void): void {
    const err = binding.shutdownWrite(this.#fd);
    // ENOTCONN: the peer is gone already, which is no reason to fail an end().
    callback(err < 0 && err !== -os.errno.ENOTCONN ? errnoException(err, 'shutdown') : null);
  }

  /** @internal Duplex's hook; not called by users. */
  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#closing = true;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    const parts = this.#outgoing;
    this.#outgoing = [];
    for (const part of parts) {
      if (part.ownsFds) closeFds(part.fds);
    }
    const pending = parts.find((part) => part.done !== undefined);
    pending?.done?.(error ?? destroyedError());
    // The poll handle closes the socket and every received fd nobody took.
    if (!this.#poll.close(() => callback(error))) callback(error);
  }

  // ---- the socket ----

  #onPoll(status: number, count: number, writable: boolean): void {
    if (this.#closing) return; // the ledger holds whatever the batch brought; the close closes it
    if (status < 0) {
      this.#readable = this.#writable = false; // libuv stopped watching
      this.destroy(errnoException(status, 'poll'));
      return;
    }
    if (count > 0) this.#onBatch(count);
    if (this.#closing) return;
    if (writable) this.#flush();
    this.#update();
  }

  /**
   * One wake-up's reads, up to the first that failed or met EOF: all their fds first (the
   * ledger holds them all by now), then all their bytes as one chunk. A chunk per read cost
   * each 64-byte read a Buffer, a push and a 'data' event; fds early are fds "before or with
   * their bytes", as a reader that counts its fds in its own header needs them.
   */
  #onBatch(count: number): void {
    const { records } = receive;
    let bytesRead = 0;
    let withFds = false;
    let ending: Error | 'eof' | undefined;
    for (let i = 0; i < count; i++) {
      const at = i * RECORD_STRIDE;
      const bytes = records[at + RECORD_BYTES]!;
      const nfds = records[at + RECORD_FDS]!;
      if (bytes < 0 || records[at + RECORD_FLAGS]! & MSG_CTRUNC) {
        ending = bytes < 0 ? errnoException(bytes, 'recvmsg') : truncatedError('recvmsg');
      } else if (bytes === 0 && nfds === 0) {
        ending = 'eof';
      } else {
        bytesRead += bytes;
        if (nfds > 0) withFds = true;
        continue;
      }
      break;
    }
    if (withFds) this.#fdsArrived();
    // What came before a failure is the reader's; the failure ends the stream.
    if (bytesRead > 0) this.#pushBytes(bytesRead);
    if (ending === 'eof') {
      this.#readEnded = true;
      this.push(null);
    } else if (ending !== undefined) {
      this.destroy(ending);
      return;
    }
    this.#ledger.ensureRoom();
    this.#recharge();
  }

  /** The bytes of the first reads, packed from the receive buffer's start (the addon does so on a stream socket), as one chunk. */
  #pushBytes(bytesRead: number): void {
    // A copy: the receive buffers are the next wake-up's.
    const chunk = Buffer.allocUnsafe(bytesRead);
    receivedBytes.copy(chunk, 0, 0, bytesRead);
    if (!this.push(chunk)) this.#readWanted = false;
  }

  /** Fds arrived: to 'fds' listeners, with every fd held before them, or held for takeFds(). */
  #fdsArrived(): void {
    if (this.listenerCount('fds') === 0) return;
    const size = this.#ledger.size;
    const fds = this.#ledger.fds(0, size);
    this.#ledger.release(size); // the listeners' now, before any of their code runs
    this.emit('fds', fds);
  }

  /** An 'fds' listener came or the last one went: how many fds a wake-up may read changes. */
  #widenBudget(listened: boolean): void {
    this.#budget.maxFds = listened ? Math.max(LISTENED_MAX_FDS, this.#maxBufferedFds) : this.#maxBufferedFds;
    this.#update();
  }

  /**
   * The budget counts the fds held. Bytes are Node's to pace (push() says stop, _read() says
   * go on): the budget's byte room stays the high-water mark, which bounds what one wake-up
   * reads, so the reader's buffer exceeds its mark by one wake-up's reads at most.
   */
  #recharge(): void {
    if (this.#closing) return;
    const fds = this.#ledger.size;
    this.#budget.charge(fds - this.#chargedFds, 0);
    this.#chargedFds = fds;
  }

  /** Sends what waits, in order, until done or the socket is full. */
  #flush(): void {
    while (this.#outgoing.length > 0 && this.#retryTimer === undefined && !this.#closing) {
      const count = this.#gatherBatch();
      if (count > 1) {
        if (!this.#sendBatch(count)) return;
        continue;
      }
      const part = this.#outgoing[0]!;
      const nfds = part.fds.length;
      const sent = this.#send(part.data, part.offset, part.fds);
      if (sent >= 0) {
        // The fds went with this first part: never again with the rest.
        if (nfds > 0) this.#fdsSent(part);
        part.offset += sent;
        if (part.offset < part.data.length) continue;
        this.#outgoing.shift();
        part.done?.();
        continue;
      }
      if (isShortOfRoom(sent)) this.#waitForRoom(sent, 1);
      else this.#failWrite(errnoException(sent, 'sendmsg'));
      return;
    }
    this.#update();
  }

  /**
   * How many parts at the head of the queue go in one sendmmsg: whole small writes, up to the
   * first that is large or went in part. Their bytes, fds and records are written to gather.
   */
  #gatherBatch(): number {
    const queue = this.#outgoing;
    const { data, records, fds } = gather;
    let count = 0;
    let bytes = 0;
    let nfds = 0;
    if (queue.length < 2) return queue.length;
    while (count < BATCH && count < queue.length) {
      const part = queue[count]!;
      const length = part.data.length;
      if (part.offset > 0 || length > LARGEST_GATHERED_WRITE) break;
      data.set(part.data, bytes);
      const at = 5 * count;
      records[at] = bytes;
      records[at + 1] = length;
      records[at + 2] = nfds;
      records[at + 3] = part.fds.length;
      records[at + SENT] = 0;
      bytes += length;
      nfds += copyFds(part.fds, fds, nfds);
      count++;
    }
    return count;
  }

  /** One sendmmsg of the first count parts; false if the stream failed or must wait for room. */
  #sendBatch(count: number): boolean {
    // 0 is not a count sendmmsg returns for a batch (a refusal of the first is -errno); were it
    // ever, it would mean "nothing went": wait, as for EAGAIN.
    let taken = binding.sendmmsg(this.#fd, gather.data, gather.records, gather.fds, count);
    if (taken === 0) taken = EAGAIN;
    if (taken < 0) {
      if (!isShortOfRoom(taken)) {
        this.#failWrite(errnoException(taken, 'sendmmsg'));
        return false;
      }
      this.#waitForRoom(taken, count);
      return false;
    }
    const queue = this.#outgoing;
    // The last part taken may have gone in part (its fds with it): the rest follows alone.
    const last = queue[taken - 1]!;
    const lastSent = gather.records[5 * (taken - 1) + SENT]!;
    const whole = lastSent === last.data.length;
    if (!whole) {
      if (last.fds.length > 0) this.#fdsSent(last);
      last.offset = lastSent;
    }
    const done = queue.splice(0, whole ? taken : taken - 1);
    let copies = 0;
    for (const part of done) {
      if (!part.ownsFds) continue;
      copies += copyFds(part.fds, gather.sentCopies, copies);
    }
    if (copies > 0) closeFds(gather.sentCopies, copies);
    for (const part of done) part.done?.();
    if (taken < count || !whole) {
      // The socket is full again: what waits holds its own fds from here on.
      this.#waitForRoom(EAGAIN, queue.length);
      return false;
    }
    return true;
  }

  /**
   * The first count parts wait for room (err says why: a full socket, or a pause): their fds
   * must outlive the caller's, who may close them once write() returned.
   */
  #waitForRoom(err: number, count: number): void {
    const queue = this.#outgoing;
    for (let i = 0; i < count && i < queue.length; i++) {
      const part = queue[i]!;
      if (part.fds.length > 0 && !part.ownsFds && !this.#holdCopies(part)) return;
    }
    if (SHORT_OF_ROOM.has(err)) {
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = undefined;
        this.#flush();
        this.#update();
      }, ROOM_RETRY_MS);
    }
    this.#update();
  }

  #fdsSent(part: OutgoingPart): void {
    if (part.ownsFds) closeFds(part.fds);
    part.fds = [];
    part.ownsFds = false;
  }

  #holdCopies(part: OutgoingPart): boolean {
    try {
      holdCopies(part);
      return true;
    } catch (error) {
      this.#failWrite(error as Error);
      return false;
    }
  }

  /** A write failed: its callback gets why (Node then destroys the stream). */
  #failWrite(error: Error): void {
    const parts = this.#outgoing;
    this.#outgoing = [];
    for (const part of parts) if (part.ownsFds) closeFds(part.fds);
    parts.find((part) => part.done !== undefined)?.done?.(error);
  }

  /** The poll watches what the stream wants: reads while the reader and the fd budget have room, writes while some wait. */
  #update(): void {
    if (this.#closing) return;
    const readable = this.#readWanted && !this.#readEnded && !this.#budget.full;
    const writable = this.#outgoing.length > 0 && this.#retryTimer === undefined;
    if (readable === this.#readable && writable === this.#writable) return;
    const err = this.#poll.start(readable, writable);
    if (err < 0) {
      this.#readable = this.#writable = false;
      this.destroy(errnoException(err, 'uv_poll_start', `fd ${this.#fd}`));
      return;
    }
    this.#readable = readable;
    this.#writable = writable;
  }
}

/** The socket is full (EAGAIN), or the kernel short of room for a while: the write waits. */
function isShortOfRoom(err: number): boolean {
  return err === EAGAIN || err === EWOULDBLOCK || SHORT_OF_ROOM.has(err);
}

/** Node's own code for a write a destroyed stream never finished. */
function destroyedError(): Error {
  const error = new Error('Cannot call write after a stream was destroyed: the stream was destroyed before the write went out');
  (error as Error & { code: string }).code = 'ERR_STREAM_DESTROYED';
  return error;
}

function rawStreamOptions(options: RawStreamOptions | undefined): Required<RawStreamOptions> {
  const {
    maxBufferedFds = DEFAULT_MAX_BUFFERED_FDS,
    readableHighWaterMark = DEFAULT_HIGH_WATER_MARK,
    writableHighWaterMark = DEFAULT_HIGH_WATER_MARK,
    allowHalfOpen = false,
  } = validateOptions(options, 'options');
  if (typeof allowHalfOpen !== 'boolean') throw invalidArgType('options.allowHalfOpen', 'of type boolean', allowHalfOpen);
  return {
    maxBufferedFds: validateInteger(maxBufferedFds, 'options.maxBufferedFds', 1, Number.MAX_SAFE_INTEGER),
    readableHighWaterMark: validateInteger(readableHighWaterMark, 'options.readableHighWaterMark', 1, 0x7fff_ffff),
    writableHighWaterMark: validateInteger(writableHighWaterMark, 'options.writableHighWaterMark', 0, 0x7fff_ffff),
    allowHalfOpen,
  };
}

function isRawWrite(value: unknown): value is RawWrite {
  return typeof value === 'object' && value !== null && !(value instanceof Uint8Array) && 'data' in value;
}

function bytesOf(data: unknown): Uint8Array {
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  if (data instanceof Uint8Array) return data;
  throw invalidArgType('data', 'a string, Buffer or Uint8Array', data);
}

/** The bytes of a write as a Buffer of the stream's own, which its fds can ride on. */
function chunkOf(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function fdNumbers(fds: unknown, bytes: number): number[] {
  if (!Array.isArray(fds)) throw invalidArgType('fds', 'an array of fds', fds);
  if (fds.length > MAX_FDS_PER_MESSAGE) {
    throw outOfRange('fds.length', `at most ${MAX_FDS_PER_MESSAGE} (Linux's limit per sendmsg); split the write`, fds.length);
  }
  // A stream socket sends no fds without a byte to carry them.
  if (fds.length > 0 && bytes === 0) throw invalidArgValue('data', 'must hold at least one byte to carry fds', bytes);
  // Its length at once: pushing grew the array on each write.
  const numbers = new Array<number>(fds.length);
  for (let i = 0; i < fds.length; i++) {
    const fd: unknown = fds[i];
    // A plain fd number takes no name for an error it will not have.
    numbers[i] = isFdNumber(fd) ? fd : toSendableFd(fd, `fds[${i}]`);
  }
  return numbers;
}

/** Replaces entry's fds with copies the stream owns; throws (closing the copies made) if one fails. */
function holdCopies(entry: { fds: number[]; ownsFds: boolean }): void {
  const copies: number[] = [];
  for (const fd of entry.fds) {
    const copy = binding.dupCloseOnExec(fd);
    if (copy < 0) {
      if (copies.length > 0) closeFds(copies);
      throw errnoException(copy, 'fcntl', `F_DUPFD_CLOEXEC of fd ${fd}, to hold it while the write waits`);
    }
    copies.push(copy);
  }
  entry.fds = copies;
  entry.ownsFds = true;
}
