// The Channel on Windows (docs/windows-channel-protocol.md): one connected loopback TCP socket
// in the event loop, with the Unix Channel's API (send, recv, for await, events, close,
// ref/unref). Windows has no SCM_RIGHTS, so the channel pushes: send() duplicates each fd's
// handle straight into the peer, whose process id was verified when the channel was made, and
// writes the values in the message's record; recv() adopts them as Node fds.
//
// send: caller -> push each handle into the peer -> record (records.ts) -> queue -> send()
//       until the socket is full (EAGAIN), then again when WRITABLE
// recv: READABLE -> recv() into a chunk -> RecordReader -> adopt the entries -> a waiting
//       recv() / iterator / 'message' listener / inbox (bounded like the Unix one)
import type { ChannelEvents, RecvOptions, SendOptions } from '../channel';
import { channelOptions, type ChannelOptions } from '../channel-options';
import { UV_EOF, abortError, closedError, errnoException, fdpassError, invalidArgType, outOfRange, unavailableOnPlatform } from '../errors';
import { closeFds, closeHandedFd, toFd, type FdLike } from '../fd';
import { emitSafely } from '../emit-safely';
import { ListenerWatchingEmitter } from '../listener-watch';
import { MAX_FDS_PER_FRAME } from '../framing';
import { ReceivedMessage, noFds } from '../message';
import type { Message } from '../outgoing';
import { validateAbortSignal, validateOptions } from '../validators';
import { KIND_HANDLE, RecordReader, encodeRecord, type Entry, type RecordSink } from './records';
import { PUSH_STAGES, windowsTransport, type WinPollWrap } from './transport';
import { ADDRESSES_BYTES, handshakeTimeoutOf, verifyPeer, type HandshakeOptions, type VerifiedPeer } from './verify-peer';
import { uvCode } from './uv-code';

const EAGAIN = uvCode('EAGAIN');
const ENDED_BY_PEER = new Set([UV_EOF, uvCode('ECONNRESET'), uvCode('ECONNABORTED')]);
/** Bytes one recv() asks for; a wake-up makes at most READS_PER_WAKEUP of them, as libuv bounds its reads. */
const CHUNK_BYTES = 64 * 1024;
const READS_PER_WAKEUP = 16;
const BUFFERED_ITEM_OVERHEAD_BYTES = 256;
const chunk = new Uint8Array(CHUNK_BYTES);

/** The key that makes a channel from a connected transport socket; not public API. */
export const fromTransport = Symbol('fdpass.fromTransport');

/** A peer whose pid the caller vouches for (Channel.pair(): this process), opened here. */
function trustedPeer(pid: number): VerifiedPeer {
  const handle = windowsTransport().openProcess(pid);
  if (handle < 0) throw errnoException(handle, 'OpenProcess', `the peer, process ${pid}`);
  return { pid, process: handle, pushError: undefined, pushesHere: true };
}

/** A Node fd's socket whose peer is still to be verified (WindowsChannel.overFd). */
interface UnverifiedSocket {
  readonly fd: number;
  readonly addresses: Uint8Array;
}

/** Why socketOfFd refused an fd, by the call that says so. */
const SOCKET_CHECKS: Record<string, string> = { ENOTCONN: 'getpeername', EAFNOSUPPORT: 'getsockname' };

interface PendingSend {
  readonly record: Buffer;
  offset: number;
  /** Each handle value pushed into the peer (Windows' own socket entries name none), and where its entry ends in the record. */
  readonly pushed: readonly { value: number; end: number }[];
  resolve(): void;
  reject(error: Error): void;
}

interface Waiter {
  resolve(message: ReceivedMessage): void;
  reject(error: Error): void;
  /** recv() takes per-message errors; an iterator does not (they go to 'error' listeners). */
  readonly takesErrors: boolean;
}

type Delivery = ReceivedMessage | Error;

function isMessage(value: unknown): value is Message {
  return typeof value === 'object' && value !== null && !('fd' in value) && ('data' in value || 'fds' in value);
}

function costOf(item: Delivery): number {
  return item instanceof ReceivedMessage ? item.data.length + BUFFERED_ITEM_OVERHEAD_BYTES : BUFFERED_ITEM_OVERHEAD_BYTES;
}

export class WindowsChannel extends ListenerWatchingEmitter<ChannelEvents> {
  readonly #sock: number;
  /** The Node fd the channel was made over (new Channel(fd)); undefined for the transport's own sockets. */
  readonly #fd: number | undefined;
  /** 0 until the peer is verified (new Channel(fd)), and for good if this process may not open it. */
  #peerPid: number;
  /** The peer's process, to push into; 0 while #peerPid is. */
  #process: number;
  /** Why no handle can be pushed into the peer (this process may not open it). */
  #pushError: Error | undefined;
  /** Whether the peer proved it may push into this process: only then are its entries taken (verify-peer.ts). */
  #pushesHere: boolean;
  /** Sends made before the peer was verified: they push once it is, in order. */
  #unverifiedSends: (() => void)[] | undefined;
  /** Stops the verification's reads at close. */
  #verification: AbortController | undefined;
  readonly #poll: WinPollWrap;
  readonly #reader: RecordReader;
  readonly #maxBufferedFds: number;
  readonly #maxBufferedBytes: number;
  readonly #frameTimeout: number;

  #state: 'open' | 'closing' | 'closed' = 'open';
  #closed: Promise<void> | undefined;
  readonly #sends: PendingSend[] = [];
  #sendError: Error | undefined;
  readonly #inbox: Delivery[] = [];
  #inboxFds = 0;
  #inboxBytes = 0;
  readonly #waiters: Waiter[] = [];
  #iterators = 0;
  /** Why reading ended (code 'EOF' when the peer closed); undefined while it goes on. */
  #readEnd: Error | undefined;
  #frameTimer: NodeJS.Timeout | undefined;
  #explicitRef: boolean | undefined;
  #watching = '';
  #unobservedErrors = 0;

  /** A connected pair of channels in this process, over loopback TCP. */
  static pair(type: string = 'stream', options?: ChannelOptions): [WindowsChannel, WindowsChannel] {
    if (type !== 'stream') throw unavailableOnPlatform(`a ${String(type)} channel is not available on Windows: its channels are streams`);
    channelOptions(options);
    const win = windowsTransport();
    const ends = new Float64Array(2);
    const err = win.tcpPair(ends);
    if (err < 0) throw errnoException(err, 'connect', 'a loopback pair');
    let first: WindowsChannel | undefined;
    try {
      first = new WindowsChannel(fromTransport, ends[0], process.pid, options);
      return [first, new WindowsChannel(fromTransport, ends[1], process.pid, options)];
    } catch (error) {
      if (first) void first.close();
      else win.closeSocket(ends[0]!);
      win.closeSocket(ends[1]!);
      throw error;
    }
  }

  /**
   * new Channel(fd) on Windows: a channel over the connected stream socket behind Node fd `fd`
   * (an end of socketpair(), a socket received through a channel, one another addon made an
   * fd). The channel owns the fd from here on; if this throws, the fd is still the caller's.
   * The peer's process id is verified before anything is pushed into it (verify-peer.ts):
   * sends made before wait for it; if it fails, the channel ends with
   * ERR_FDPASS_PEER_UNVERIFIED (or the handshake's timeout or system error) and closes.
   */
  static overFd(fd: number, options?: HandshakeOptions): WindowsChannel {
    handshakeTimeoutOf(options);
    const addresses = new Uint8Array(ADDRESSES_BYTES);
    const sock = windowsTransport().socketOfFd(fd, addresses);
    if (sock < 0) {
      const error = errnoException(sock, 'getsockopt', `fd ${fd}`);
      const syscall = SOCKET_CHECKS[(error as { code?: string }).code ?? ''];
      throw syscall === undefined ? error : errnoException(sock, syscall, `fd ${fd}: new Channel(fd) needs a connected socket`);
    }
    return new WindowsChannel(fromTransport, sock, { fd, addresses }, options);
  }

  /**
   * Not public: a channel comes from Channel.pair(), Channel.offer() and Channel.connectTo()
   * between two processes, or new Channel(fd) (overFd). Instances are `instanceof Channel`
   * (lib/channel.ts links the prototypes). peer: a pid the caller vouches for (pair), a
   * verified peer whose process handle the channel takes (offer, connectTo: closed here if
   * the poll cannot start), or a socket whose peer it verifies (overFd).
   */
  constructor(key: unknown, sock?: number, peer?: number | VerifiedPeer | UnverifiedSocket, options?: HandshakeOptions) {
    super();
    if (key !== fromTransport || sock === undefined || peer === undefined) {
      throw unavailableOnPlatform('a Windows channel comes from Channel.pair(), Channel.offer(), Channel.connectTo() or new Channel(fd)');
    }
    // offer() and connectTo() check the options before they verify, so a throw here holds nothing of theirs.
    const { maxBufferedFds, maxBufferedBytes, limits } = channelOptions(options);
    const timeout = handshakeTimeoutOf(options);
    const win = windowsTransport();
    const unverified = typeof peer === 'object' && 'fd' in peer ? peer : undefined;
    const verified = typeof peer === 'number' ? trustedPeer(peer) : unverified === undefined ? (peer as VerifiedPeer) : undefined;
    const process = verified?.process ?? 0;
    this.#poll = new win.WinPollWrap((status, readable, writable) => this.#onPoll(status, readable, writable));
    // The poll handle owns the socket (or the fd behind it) and the process handle from here
    // on, and closes them even if no JS runs again (a worker that ends with the channel open).
    const err =
      unverified === undefined
        ? this.#poll.open(sock, process === 0 ? undefined : process)
        : this.#poll.open(sock, undefined, unverified.fd);
    if (err < 0) {
      if (process !== 0) win.closeProcess(process);
      throw errnoException(err, 'uv_poll_init_socket');
    }
    // From here the channel owns the socket: nothing below may throw.
    this.#sock = sock;
    this.#fd = unverified?.fd;
    this.#peerPid = verified?.pid ?? 0;
    this.#process = process;
    this.#pushError = verified?.pushError;
    this.#pushesHere = verified?.pushesHere ?? false;
    this.#maxBufferedFds = maxBufferedFds;
    this.#maxBufferedBytes = maxBufferedBytes;
    this.#frameTimeout = limits.frameTimeout;
    this.#reader = new RecordReader(limits, this.#sink);
    if (unverified !== undefined) this.#verify(unverified.addresses, timeout);
    this.#update();
  }

  /** The peer's verification (new Channel(fd)); until it ends, nothing is pushed or read as records. */
  #verify(addresses: Uint8Array, timeout: number): void {
    this.#unverifiedSends = [];
    this.#verification = new AbortController();
    verifyPeer(this.#sock, addresses, timeout, this.#verification.signal, { poll: this.#poll }).then(
      (peer) => this.#verified(peer),
      (error: Error) => {
        if (this.#state !== 'open') return;
        this.#verification = undefined;
        const sends = this.#unverifiedSends!.splice(0);
        this.#unverifiedSends = undefined;
        this.#sendError = error;
        for (const run of sends) run();
        this.#endReading(error);
      },
    );
  }

  #verified({ pid, process, pushError, pushesHere }: VerifiedPeer): void {
    const win = windowsTransport();
    this.#verification = undefined;
    if (this.#state !== 'open' || (process !== 0 && this.#poll.ownProcess(process) < 0)) {
      if (process !== 0) win.closeProcess(process);
      return;
    }
    this.#peerPid = pid;
    this.#process = process;
    this.#pushError = pushError;
    this.#pushesHere = pushesHere;
    const sends = this.#unverifiedSends!.splice(0);
    this.#unverifiedSends = undefined;
    for (const run of sends) run();
    this.#update();
  }

  /** The fd given to new Channel(fd), or else the transport socket (a SOCKET value, not a Node fd); -1 once closed. */
  get fd(): number {
    return this.#state === 'closed' ? -1 : (this.#fd ?? this.#sock);
  }

  get type(): 'stream' {
    return 'stream';
  }

  get closed(): boolean {
    return this.#state !== 'open';
  }

  get bufferedFds(): number {
    return this.#inboxFds;
  }

  get bufferedBytes(): number {
    return this.#inboxBytes;
  }

  /**
   * Errors nobody was told about: per-message errors still waiting in the channel for a
   * recv() when it closed (until then they wait for one, so none is lost unheard).
   */
  get unobservedErrors(): number {
    return this.#unobservedErrors;
  }

  /**
   * The process at the other end, verified when the channel was made (new Channel(fd): pid 0
   * until the verification has ended). pid 0 after that: this process may not open the peer (a
   * more privileged one), and so sends it no handles. Windows has no uid or gid.
   */
  get peer(): { pid: number } {
    return { pid: this.#peerPid };
  }

  /**
   * Sends a bare fd, or a message `{ data, fds }`, after every send called before it. Each fd's
   * handle is duplicated into the peer at the call; the sender keeps its own fd unless `close`
   * is set. Resolves once the socket has the whole record.
   */
  send(value: FdLike | Message, options?: SendOptions): Promise<void> {
    const close = validateOptions(options, 'options').close === true;
    const { fds, handed, payload } = checkSend(value, close);
    if (this.#unverifiedSends !== undefined && this.#state === 'open') {
      // Nothing is pushed before the peer is verified; the fds must stay open until then.
      return new Promise<void>((resolve, reject) => {
        this.#unverifiedSends!.push(() => void this.#push(fds, handed, payload).then(resolve, reject));
      });
    }
    return this.#push(fds, handed, payload);
  }

  #push(fds: number[], handed: FdLike[] | undefined, payload: Uint8Array): Promise<void> {
    if (this.#state !== 'open' || this.#sendError !== undefined) {
      if (handed) for (const fd of handed) closeHandedFd(fd);
      return Promise.reject(closedError(this.#sendError));
    }
    if (fds.length > 0 && this.#process === 0) {
      if (handed) for (const fd of handed) closeHandedFd(fd);
      return Promise.reject(this.#cannotPush());
    }
    const win = windowsTransport();
    const entries: Uint8Array[] = [];
    const pushed: { value: number; end: number }[] = [];
    let end = 8;
    const stage = new Int32Array(1);
    for (const fd of fds) {
      const entry = new Uint8Array(win.ENTRY_BYTES);
      const kind = win.pushFd(fd, this.#process, this.#peerPid, entry, stage);
      if (kind < 0) {
        for (const { value } of pushed) win.unpush(this.#process, value);
        if (handed) for (const h of handed) closeHandedFd(h);
        return Promise.reject(errnoException(kind, PUSH_STAGES[stage[0]!] ?? 'DuplicateHandle', `fd ${fd} into process ${this.#peerPid}`));
      }
      new DataView(entry.buffer).setUint32(0, kind, true);
      const bytes = kind === KIND_HANDLE ? entry.subarray(0, win.HANDLE_ENTRY_BYTES) : entry;
      end += bytes.length;
      const value = kind === KIND_HANDLE ? Number(new DataView(entry.buffer).getBigUint64(4, true)) : win.pushedSocketValue(entry);
      if (value > 0) pushed.push({ value, end });
      entries.push(bytes);
    }
    // The peer holds its own duplicates now: what the caller handed over can go.
    if (handed) for (const h of handed) closeHandedFd(h);
    return new Promise<void>((resolve, reject) => {
      this.#sends.push({ record: encodeRecord(entries, payload), offset: 0, pushed, resolve, reject });
      this.#flush();
    });
  }

  /**
   * The next message, or the next per-message error. Rejects with code 'EOF' once the peer
   * has closed and nothing is left, 'ERR_FDPASS_CHANNEL_CLOSED' after close(), 'ABORT_ERR'
   * when the signal aborts.
   */
  recv(options?: RecvOptions): Promise<ReceivedMessage> {
    let signal: AbortSignal | undefined;
    try {
      signal = validateAbortSignal(validateOptions(options, 'options').signal, 'options.signal');
    } catch (error) {
      return Promise.reject(error);
    }
    if (signal?.aborted) return Promise.reject(abortError(signal));
    const item = this.#takeFromInbox(true);
    if (item !== undefined) return item instanceof Error ? Promise.reject(item) : Promise.resolve(item);
    if (this.#readEnd !== undefined || this.#state !== 'open') return Promise.reject(this.#endError());
    return new Promise<ReceivedMessage>((resolve, reject) => {
      const onAbort = (): void => {
        const at = this.#waiters.indexOf(waiter);
        if (at >= 0) this.#waiters.splice(at, 1);
        this.#update();
        reject(abortError(signal!));
      };
      const waiter: Waiter = {
        takesErrors: true,
        resolve: (message) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(message);
        },
        reject: (error) => {
          signal?.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiters.push(waiter);
      this.#update();
    });
  }

  /** Yields every message until the peer closes; an error that ends reading is thrown from it. */
  async *[Symbol.asyncIterator](): AsyncIterableIterator<ReceivedMessage> {
    this.#iterators++;
    this.#update();
    try {
      for (;;) {
        const item = this.#takeFromInbox(false);
        if (item instanceof ReceivedMessage) {
          yield item;
          continue;
        }
        if (this.#readEnd !== undefined || this.#state !== 'open') {
          const end = this.#endError();
          if ((end as { code?: unknown }).code === 'EOF' || (end as { code?: unknown }).code === 'ERR_FDPASS_CHANNEL_CLOSED') return;
          throw end;
        }
        const message = await new Promise<ReceivedMessage>((resolve, reject) => {
          this.#waiters.push({ takesErrors: false, resolve, reject });
          this.#update();
        }).catch((error: Error) => {
          const code = (error as { code?: unknown }).code;
          if (code === 'EOF' || code === 'ERR_FDPASS_CHANNEL_CLOSED') return undefined;
          throw error;
        });
        if (message === undefined) return;
        yield message;
      }
    } finally {
      this.#iterators--;
      this.#update();
    }
  }

  /**
   * Closes the channel: pending calls reject with 'ERR_FDPASS_CHANNEL_CLOSED'; received fds
   * nobody took are closed; handles the peer pushed that were not received yet (in the
   * socket, or in a record still arriving) are closed; handles this side pushed in records it
   * never sent whole are closed in the peer; then the socket is closed.
   */
  close(): Promise<void> {
    if (this.#closed) return this.#closed;
    this.#state = 'closing';
    const error = closedError();
    this.#clearFrameTimer();
    this.#verification?.abort(error);
    for (const run of this.#unverifiedSends?.splice(0) ?? []) run();
    for (const pending of this.#sends.splice(0)) {
      this.#unpushUnsent(pending);
      pending.reject(error);
    }
    for (const waiter of this.#waiters.splice(0)) waiter.reject(error);
    for (const item of this.#inbox.splice(0)) {
      if (item instanceof ReceivedMessage) item.close();
      else this.#unobservedErrors++;
    }
    this.#inboxFds = 0;
    this.#inboxBytes = 0;
    // A peer not verified (new Channel(fd)), or that may not push here, pushed nothing we would take or close.
    if (this.#pushesHere) this.#drainPushedHandles();
    this.#closed = new Promise<void>((resolve) => {
      const finish = (): void => {
        this.#state = 'closed';
        emitSafely(this, 'close');
        resolve();
      };
      if (!this.#poll.close(finish)) finish();
    });
    return this.#closed;
  }

  ref(): this {
    this.#explicitRef = true;
    this.#update();
    return this;
  }

  unref(): this {
    this.#explicitRef = false;
    this.#update();
    return this;
  }

  hasRef(): boolean {
    return this.#state === 'open' && this.#poll.hasRef();
  }

  protected override listenersChanged(): void {
    this.#update();
    if (this.listenerCount('message') > 0) {
      queueMicrotask(() => {
        while (this.listenerCount('message') > 0) {
          const item = this.#takeFromInbox(false);
          if (!(item instanceof ReceivedMessage)) break;
          emitSafely(this, 'message', item);
        }
        this.#afterDelivery();
      });
    }
  }

  // --- receiving -------------------------------------------------------------------------

  readonly #sink: RecordSink = {
    record: (entries, payload) => {
      this.#clearFrameTimer();
      // While closing, records still in the socket are read only to close their handles.
      if (this.#state !== 'open') return this.#discard(entries);
      const fds = this.#adopt(entries);
      if (fds instanceof Error) this.#deliver(fds);
      else this.#deliver(new ReceivedMessage(fds.length === 0 ? noFds : fds, payload));
    },
    dropped: (error, entries, fatal) => {
      this.#clearFrameTimer();
      this.#discard(entries);
      if (this.#state !== 'open') return;
      if (fatal) this.#endReading(error);
      else this.#deliver(error);
    },
  };

  /** The record's entries as Node fds, in order; or, if one is refused, an error and none. */
  #adopt(entries: readonly Entry[]): number[] | Error {
    if (entries.length > 0 && !this.#pushesHere) {
      return fdpassError(
        'ERR_FDPASS_BAD_MESSAGE',
        `fdpass: a message was dropped: it names ${entries.length} handle(s), but the peer did not prove it may push into ` +
          'this process, so they can only be handles of this process: none was taken or closed',
      );
    }
    const win = windowsTransport();
    const fds: number[] = [];
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i]!;
      const fd = entry.kind === KIND_HANDLE ? win.adoptHandle(entry.value) : win.adoptSocket(entry.bytes);
      if (fd < 0) {
        closeFds(fds);
        this.#discard(entries.slice(i + 1));
        const what = entry.kind === KIND_HANDLE ? `handle value ${entry.value}` : 'socket';
        return fdpassError(
          'ERR_FDPASS_BAD_MESSAGE',
          `fdpass: a message was dropped: its ${what} (entry ${i}) was refused (${errnoException(fd, 'adopt').code}); ` +
            "the message's other handles were closed",
        );
      }
      fds.push(fd);
    }
    return fds;
  }

  /** Closes pushed handles and sockets nobody will take. A value that names a handle of ours is left alone (see the protocol). */
  #discard(entries: readonly Entry[]): void {
    // A peer that may not push here pushed nothing: what it names is ours.
    if (!this.#pushesHere) return;
    const win = windowsTransport();
    for (const entry of entries) {
      if (entry.kind === KIND_HANDLE) win.discardHandle(entry.value);
      else win.discardSocket(entry.bytes);
    }
  }

  #deliver(item: Delivery): void {
    const takesIt = this.#waiters.findIndex((w) => w.takesErrors || item instanceof ReceivedMessage);
    if (this.#inbox.length === 0 && takesIt >= 0) {
      const [waiter] = this.#waiters.splice(takesIt, 1);
      if (item instanceof ReceivedMessage) waiter!.resolve(item);
      else waiter!.reject(item);
    } else if (item instanceof ReceivedMessage && this.#inbox.length === 0 && this.listenerCount('message') > 0) {
      emitSafely(this, 'message', item);
    } else if (!(item instanceof ReceivedMessage) && this.listenerCount('error') > 0 && !this.#waiters.some((w) => w.takesErrors)) {
      emitSafely(this, 'error', item);
    } else {
      this.#inbox.push(item);
      if (item instanceof ReceivedMessage) this.#inboxFds += item.fds.length;
      this.#inboxBytes += costOf(item);
    }
  }

  #takeFromInbox(takesErrors: boolean): Delivery | undefined {
    const at = this.#inbox.findIndex((item) => takesErrors || item instanceof ReceivedMessage);
    if (at < 0) return undefined;
    // Errors an iterator skips go to 'error' listeners, in order.
    for (let i = 0; i < at; i++) emitSafely(this, 'error', this.#inbox[i] as Error);
    const [item] = this.#inbox.splice(0, at + 1).slice(-1);
    this.#inboxBytes = Math.max(0, this.#inboxBytes - costOf(item!));
    if (item instanceof ReceivedMessage) this.#inboxFds -= item.fds.length;
    queueMicrotask(() => this.#afterDelivery());
    return item;
  }

  /** Once reading has ended and nothing is left to take, the channel closes itself. */
  #afterDelivery(): void {
    if (this.#readEnd !== undefined && this.#inbox.length === 0 && this.#state === 'open') void this.close();
    else this.#update();
  }

  #onPoll(status: number, readable: boolean, writable: boolean): void {
    if (this.#state !== 'open') return;
    if (status < 0) {
      this.#endReading(errnoException(status, 'uv_poll'));
      this.#failSends(errnoException(status, 'uv_poll'));
      return;
    }
    if (writable) this.#flush();
    if (readable) this.#read();
    this.#update();
  }

  #read(): void {
    const win = windowsTransport();
    for (let reads = 0; reads < READS_PER_WAKEUP && this.#wantsToRead(); reads++) {
      const n = win.recv(this.#sock, chunk, 0, CHUNK_BYTES);
      if (n === EAGAIN) break;
      if (n <= 0) {
        this.#endReading(n === 0 ? errnoException(UV_EOF, 'recv', 'the peer closed the channel') : errnoException(n, 'recv'));
        return;
      }
      this.#reader.push(chunk, 0, n);
      if (!this.#reader.atBoundary && this.#frameTimer === undefined && this.#frameTimeout > 0) {
        this.#frameTimer = setTimeout(() => {
          this.#frameTimer = undefined;
          this.#discard(this.#reader.takePartialEntries());
          this.#endReading(
            fdpassError(
              'ERR_FDPASS_FRAME_TIMEOUT',
              `fdpass: a record stayed incomplete for ${this.#frameTimeout} ms; its handles were closed`,
            ),
          );
        }, this.#frameTimeout);
        this.#frameTimer.unref();
      }
    }
  }

  #wantsToRead(): boolean {
    return (
      this.#state === 'open' &&
      this.#unverifiedSends === undefined &&
      this.#readEnd === undefined &&
      this.#inboxFds < this.#maxBufferedFds &&
      this.#inboxBytes < this.#maxBufferedBytes
    );
  }

  #endReading(reason: Error): void {
    if (this.#readEnd !== undefined) return;
    this.#clearFrameTimer();
    const truncated = !this.#reader.atBoundary;
    this.#discard(this.#reader.takePartialEntries());
    const byPeer = ENDED_BY_PEER.has((reason as { errno?: number }).errno ?? 0);
    const end = byPeer ? errnoException(UV_EOF, 'recv', 'the peer closed the channel') : reason;
    if (truncated && byPeer) {
      this.#deliver(
        fdpassError('ERR_FDPASS_TRUNCATED', 'fdpass: the peer closed the channel in the middle of a record; its handles were closed'),
      );
    }
    this.#readEnd = end;
    const stillWaiting = this.#waiters.splice(0);
    if (byPeer) emitSafely(this, 'end');
    else if (this.listenerCount('error') > 0) emitSafely(this, 'error', end);
    for (const waiter of stillWaiting) waiter.reject(end);
    this.#afterDelivery();
  }

  #endError(): Error {
    return this.#state !== 'open' ? closedError() : (this.#readEnd ?? closedError());
  }

  #clearFrameTimer(): void {
    if (this.#frameTimer !== undefined) clearTimeout(this.#frameTimer);
    this.#frameTimer = undefined;
  }

  /**
   * At close: whatever the socket holds now is records nobody will receive, whose handles
   * were pushed into this process. Read it (without waiting) through the same reader, which
   * discards while closing, and close the handles of a record left incomplete.
   */
  #drainPushedHandles(): void {
    const win = windowsTransport();
    if (this.#readEnd === undefined) {
      for (let reads = 0; reads < 256; reads++) {
        const n = win.recv(this.#sock, chunk, 0, CHUNK_BYTES);
        if (n <= 0) break;
        this.#reader.push(chunk, 0, n);
      }
    }
    this.#discard(this.#reader.takePartialEntries());
  }

  // --- sending ---------------------------------------------------------------------------

  #flush(): void {
    const win = windowsTransport();
    while (this.#sends.length > 0) {
      const pending = this.#sends[0]!;
      const n = win.send(this.#sock, pending.record, pending.offset, pending.record.length - pending.offset);
      if (n === EAGAIN) break;
      if (n < 0) {
        this.#failSends(errnoException(n, 'send'));
        return;
      }
      pending.offset += n;
      if (pending.offset < pending.record.length) continue;
      this.#sends.shift();
      pending.resolve();
    }
    this.#update();
  }

  #failSends(error: Error): void {
    this.#sendError ??= error;
    for (const pending of this.#sends.splice(0)) {
      this.#unpushUnsent(pending);
      pending.reject(error);
    }
    this.#update();
  }

  /** This process may not open the peer: OpenProcess's refusal, again, for a message with fds. */
  #cannotPush(): Error {
    const errno = (this.#pushError as { errno?: number } | undefined)?.errno ?? uvCode('EPERM');
    return errnoException(
      errno,
      'OpenProcess',
      'this process may not open the peer, so it sends it no handles (messages without fds still go)',
    );
  }

  /** The peer never read the entries this side did not send whole: close their handles there. */
  #unpushUnsent(pending: PendingSend): void {
    const win = windowsTransport();
    for (const { value, end } of pending.pushed) if (end > pending.offset) win.unpush(this.#process, value);
  }

  // --- the poll, and what keeps the process alive -----------------------------------------

  #update(): void {
    if (this.#state !== 'open') return;
    const readable = this.#wantsToRead();
    const writable = this.#sends.length > 0 && this.#sendError === undefined;
    const watching = `${readable}${writable}`;
    if (watching !== this.#watching) {
      this.#watching = watching;
      const err = this.#poll.start(readable, writable);
      if (err < 0) {
        this.#endReading(errnoException(err, 'uv_poll_start'));
        return;
      }
    }
    const someoneWaits = this.#waiters.length > 0 || this.#iterators > 0 || this.listenerCount('message') > 0 || writable;
    if (this.#explicitRef ?? someoneWaits) this.#poll.ref();
    else this.#poll.unref();
  }
}

/** What send() takes, checked: the fds, what to close once pushed, the payload. */
function checkSend(value: unknown, close: boolean): { fds: number[]; handed: FdLike[] | undefined; payload: Uint8Array } {
  if (!isMessage(value)) {
    const fd = toFd(value, 'value');
    return { fds: [fd], handed: close ? [value as FdLike] : undefined, payload: new Uint8Array(0) };
  }
  const { data, fds: given = [] } = value;
  let payload: Uint8Array;
  if (data === undefined) payload = new Uint8Array(0);
  else if (typeof data === 'string') payload = Buffer.from(data, 'utf8');
  else if (data instanceof Uint8Array) payload = data;
  else throw invalidArgType('message.data', 'a string, Buffer or Uint8Array', data);
  if (!Array.isArray(given)) throw invalidArgType('message.fds', 'an array of fds', given);
  if (given.length > MAX_FDS_PER_FRAME) throw outOfRange('message.fds.length', `at most ${MAX_FDS_PER_FRAME}`, given.length);
  const fds = given.map((fd, i) => toFd(fd, `message.fds[${i}]`));
  return { fds, handed: close ? [...(given as FdLike[])] : undefined, payload };
}
