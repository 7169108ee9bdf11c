// A server on a Unix socket path: listen() binds (replacing a dead server's file, never a
// live one's), the same poll handle as a channel's accepts without blocking, allow() checks
// each client's credentials before user code sees it, and each client becomes a Channel.
import EventEmitter from 'eventemitter3';
import { emitSafely } from './emit-safely';
import { Acceptor } from './acceptor';
import { Channel, adoption, channelOptions, useOwnBudget, type ChannelOptions } from './channel';
import { invalidArgType, invalidArgValue } from './errors';
import { closeFds } from './fd';
import { ReceiveBudget } from './receive-budget';
import { validateFunction, validateInteger, validateOptions } from './validators';
import { readPeerCredentials, type PeerCredentials } from './peer';
import { describeAddress, socketPathOptions, type ServerSocketType, type SocketAddress, type SocketPathOptions } from './socket-address';
import { bindListener, type SocketFile } from './socket-file';

export interface ListenOptions extends SocketPathOptions {
  /** Permission bits of the socket file, in force from its creation. Default 0o600. */
  mode?: number;
  /** Connections the kernel queues until they are accepted. Default 511, as Node's net. */
  backlog?: number;
  /**
   * Whether a client may stay, decided before any user code sees it. A refused client is
   * closed at once, counted in `refusedCount`, and reported by a 'refused' event. A check
   * that throws refuses, and the error goes to 'error' listeners.
   */
  allow?: (peer: PeerCredentials) => boolean;
  /** Options for each accepted channel. */
  channel?: ChannelOptions;
  /**
   * Accepted channels held for nobody (no 'connection' listener, no iterator waiting)
   * before the server stops accepting, leaving the rest in the kernel's backlog. Default 64.
   */
  maxPendingChannels?: number;
}

/** Options of `Server#close()`. */
export interface ServerCloseOptions {
  /** Resolve only once every channel the server handed out has closed. Default false. */
  waitForChannels?: boolean;
}

/** The events a Server emits, each with its listener's arguments. */
export interface ServerEvents {
  /** A new client, allowed in. The listener owns the channel. */
  connection: [channel: Channel];
  /** allow() turned a client away; its socket is already closed. */
  refused: [peer: PeerCredentials];
  /** accept() failed (out of fds, say): the server pauses briefly and goes on. */
  error: [error: Error];
  /** The server stopped: its socket and file are gone, every pending call settled. */
  close: [];
}

const DEFAULT_MODE = 0o600;
const DEFAULT_BACKLOG = 511;
const DEFAULT_MAX_PENDING_CHANNELS = 64;

interface Waiter {
  resolve(result: IteratorResult<Channel>): void;
}

/** listen()'s options as the Server uses them: checked, with their defaults. */
interface ServerSettings {
  allow: ((peer: PeerCredentials) => boolean) | undefined;
  channel: ChannelOptions | undefined;
  maxPendingChannels: number;
  /** The budget the channels nobody has taken yet share: one channel's. */
  untakenFds: number;
  untakenBytes: number;
}

/** What listen() hands the Server: a bound, listening socket, and its file if it has one. */
interface Listener {
  sock: number;
  address: SocketAddress;
  type: ServerSocketType;
  file: SocketFile | undefined;
}

/**
 * A listening Unix socket at a path (or an abstract name) that makes a Channel of each client
 * it allows in: await `accept()`, iterate with `for await`, or listen for 'connection'. Made by
 * {@link listen}; an EventEmitter (eventemitter3) of {@link ServerEvents}.
 */
export class Server extends EventEmitter<ServerEvents> {
  readonly #address: SocketAddress;
  readonly #type: ServerSocketType;
  /** The socket file as published: close() removes the file only if it is still this one. */
  readonly #file: SocketFile | undefined;
  /** Accepts natively; its ledger holds accepted fds not yet made channels. */
  readonly #acceptor: Acceptor;
  /** What the channels nobody has taken yet may hold, all together. */
  readonly #untakenBudget: ReceiveBudget;
  readonly #allow: ((peer: PeerCredentials) => boolean) | undefined;
  readonly #channelOptions: ChannelOptions | undefined;
  readonly #maxPending: number;

  /** Accepted and allowed, not yet taken. */
  readonly #pending: Channel[] = [];
  readonly #waiters: Waiter[] = [];
  /** Handed out and still open. */
  readonly #channels = new Set<Channel>();
  #channelsGone: (() => void) | undefined;
  #refusedCount = 0;
  #listening = true;
  #closed: Promise<void> | undefined;

  /**
   * Use listen().
   * @internal
   */
  constructor(listener: Listener, settings: ServerSettings) {
    super();
    this.#address = listener.address;
    this.#type = listener.type;
    this.#file = listener.file;
    this.#allow = settings.allow;
    this.#channelOptions = settings.channel;
    this.#maxPending = settings.maxPendingChannels;
    this.#untakenBudget = new ReceiveBudget(settings.untakenFds, settings.untakenBytes);
    // How many accepted channels may wait untaken is the accept loop's budget.
    this.#acceptor = new Acceptor(
      listener.sock,
      {
        accepted: (count) => {
          // The ledger held nothing before this batch: each admitted fd is its oldest.
          for (let i = 0; i < count && this.#listening; i++) this.#admit(this.#acceptor.ledger.fdAt(0));
        },
        failed: (error, fatal) => {
          this.#emitError(error);
          if (fatal) void this.close(); // the poll failed: this server accepts no more
        },
      },
      { maxHeld: this.#maxPending, withAddresses: false, describe: () => describeAddress(this.#address) },
    );
  }

  /** The path (or abstract name) given to listen(). */
  get path(): string {
    return this.#address.path;
  }

  /** true when the name is in Linux's abstract namespace (no file). */
  get abstract(): boolean {
    return this.#address.abstract;
  }

  /** The socket's type: 'stream' or 'seqpacket'. */
  get type(): ServerSocketType {
    return this.#type;
  }

  /** true until `close()` is called. */
  get listening(): boolean {
    return this.#listening;
  }

  /** Clients allow() turned away so far. */
  get refusedCount(): number {
    return this.#refusedCount;
  }

  /** Channels handed out (by event or iterator) that are still open. */
  get connections(): number {
    return this.#channels.size;
  }

  /** Yields each accepted channel; ends when the server closes. The taker owns the channel. */
  [Symbol.asyncIterator](): AsyncIterableIterator<Channel> {
    // This iterator's next() calls still waiting: return() ends them, as events.on() does,
    // or the next client would go to a promise nobody awaits any more.
    const waiting = new Set<Waiter>();
    let finished = false;
    const iterator: AsyncIterableIterator<Channel> = {
      next: () => {
        if (finished) return Promise.resolve({ done: true, value: undefined });
        const channel = this.#takePending();
        if (channel) {
          this.#handOut(channel);
          this.#updatePoll();
          return Promise.resolve({ done: false, value: channel });
        }
        if (!this.#listening) return Promise.resolve({ done: true, value: undefined });
        return new Promise((resolve) => {
          const waiter: Waiter = {
            resolve: (result) => {
              waiting.delete(waiter);
              resolve(result);
            },
          };
          waiting.add(waiter);
          this.#waiters.push(waiter);
        });
      },
      return: () => {
        finished = true;
        for (const waiter of waiting) {
          const index = this.#waiters.indexOf(waiter);
          if (index !== -1) this.#waiters.splice(index, 1);
          waiter.resolve({ done: true, value: undefined });
        }
        return Promise.resolve({ done: true, value: undefined });
      },
      [Symbol.asyncIterator]: () => iterator,
    };
    return iterator;
  }

  /**
   * Stops accepting: the socket file is removed (if it is still this server's), the
   * listening socket closed, channels accepted but never taken are closed, and iterators
   * end. Channels already handed out are their takers'; with `waitForChannels` the promise
   * waits until they have all closed. Calling it again returns a promise for the same close.
   */
  close(options?: ServerCloseOptions): Promise<void> {
    const { waitForChannels = false } = validateOptions(options, 'options');
    if (typeof waitForChannels !== 'boolean') throw invalidArgType('options.waitForChannels', 'of type boolean', waitForChannels);
    this.#closed ??= this.#stop();
    if (!waitForChannels) return this.#closed;
    return this.#closed.then(() => this.#allChannelsClosed());
  }

  /** Keep the process alive while listening (the default, as with net.Server). */
  ref(): this {
    this.#acceptor.ref();
    return this;
  }

  /** Let the process exit even while listening. */
  unref(): this {
    this.#acceptor.unref();
    return this;
  }

  // A 'connection' listener added later takes the channels that waited for one.
  override on<T extends keyof ServerEvents>(event: T, fn: EventEmitter.EventListener<ServerEvents, T>, context?: unknown): this {
    super.on(event, fn, context);
    if (event === 'connection') queueMicrotask(() => this.#drainPendingToListeners());
    return this;
  }

  override addListener<T extends keyof ServerEvents>(event: T, fn: EventEmitter.EventListener<ServerEvents, T>, context?: unknown): this {
    return this.on(event, fn, context);
  }

  override once<T extends keyof ServerEvents>(event: T, fn: EventEmitter.EventListener<ServerEvents, T>, context?: unknown): this {
    super.once(event, fn, context);
    if (event === 'connection') queueMicrotask(() => this.#drainPendingToListeners());
    return this;
  }

  async #stop(): Promise<void> {
    this.#listening = false;
    // Accept no more while the file is removed (which may wait for its lock): a client from
    // now on waits in the backlog and is refused when the socket closes.
    this.#acceptor.stop();
    // The file goes first (at once, unless another process holds its lock): from here a
    // client gets ENOENT, not a connection nobody accepts.
    const fileRemoved = this.#file?.remove().catch((error: Error) => this.#emitError(error));
    for (const waiter of this.#waiters.splice(0)) waiter.resolve({ done: true, value: undefined });
    const untaken = this.#pending.splice(0);
    await fileRemoved;
    await Promise.all([this.#acceptor.close(), ...untaken.map((channel) => channel.close())]);
    emitSafely(this, 'close');
  }

  #allChannelsClosed(): Promise<void> {
    if (this.#channels.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.#channelsGone;
      this.#channelsGone = () => {
        previous?.();
        resolve();
      };
    });
  }

  /**
   * A new client, the oldest fd in the ledger: checked by allow(), then made a channel and
   * handed out or queued. It leaves the ledger as a channel takes it, or closed.
   */
  #admit(fd: number): void {
    if (this.#allow && !this.#passesAllow(fd, this.#allow)) return;
    // A listener, or allow(), may have closed the server: its poll handle closed the fd then.
    if (!this.#listening) return;
    let channel: Channel;
    try {
      channel = new Channel(fd, {
        ...this.#channelOptions,
        [adoption]: { fromLedger: this.#acceptor.ledger.slots, budget: this.#untakenBudget },
      } as ChannelOptions);
    } catch (error) {
      this.#acceptor.ledger.close(0, 1);
      this.#emitError(error as Error);
      return;
    }
    const waiter = this.#waiters.shift();
    if (waiter) {
      this.#handOut(channel);
      waiter.resolve({ done: false, value: channel });
    } else if (this.#pending.length === 0 && this.listenerCount('connection') > 0) {
      this.#handOut(channel);
      emitSafely(this, 'connection', channel);
    } else {
      this.#pending.push(channel);
      // A client that leaves before anyone takes its channel (the channel reads EOF and
      // closes itself) is dropped, not handed out closed.
      channel.once('close', () => {
        const index = this.#pending.indexOf(channel);
        if (index !== -1) this.#pending.splice(index, 1);
        this.#updatePoll();
      });
      this.#updatePoll();
    }
  }

  #drainPendingToListeners(): void {
    while (this.listenerCount('connection') > 0) {
      const channel = this.#takePending();
      if (channel === undefined) break;
      this.#handOut(channel);
      emitSafely(this, 'connection', channel);
    }
    this.#updatePoll();
  }

  /**
   * The oldest channel waiting to be taken. One whose client left is closing (it read EOF)
   * though its 'close' has not come yet: dropped, never handed out.
   */
  #takePending(): Channel | undefined {
    let channel = this.#pending.shift();
    while (channel?.closed) channel = this.#pending.shift();
    return channel;
  }

  /** allow() on the client's credentials; a refused client is closed, counted and reported. */
  #passesAllow(fd: number, allow: (peer: PeerCredentials) => boolean): boolean {
    let peer: PeerCredentials;
    try {
      peer = readPeerCredentials(fd);
    } catch (error) {
      this.#acceptor.ledger.close(0, 1);
      this.#emitError(error as Error);
      return false;
    }
    let allowed = false;
    try {
      allowed = allow(peer) === true;
    } catch (error) {
      this.#emitError(error as Error);
    }
    if (!allowed) {
      if (this.#listening) this.#acceptor.ledger.close(0, 1); // else it stays in the ledger, closed with the poll handle
      this.#refusedCount++;
      emitSafely(this, 'refused', peer);
    }
    return allowed;
  }

  #handOut(channel: Channel): void {
    channel[useOwnBudget]();
    this.#channels.add(channel);
    channel.once('close', () => {
      this.#channels.delete(channel);
      if (this.#channels.size === 0 && this.#channelsGone) {
        const gone = this.#channelsGone;
        this.#channelsGone = undefined;
        gone();
      }
    });
  }

  #updatePoll(): void {
    if (this.#listening) this.#acceptor.update(this.#pending.length);
  }

  /** Errors go to 'error' listeners; with none, the server goes on without them. */
  #emitError(error: Error): void {
    if (this.listenerCount('error') > 0) emitSafely(this, 'error', error);
  }
}

/**
 * Listens on a Unix socket path (or a Linux abstract name). The socket file gets mode 0600
 * unless `mode` says otherwise, from the moment it exists. A file left by a server that is
 * gone is replaced; a path where a server still listens is refused with EADDRINUSE, as is a
 * path that is not a socket.
 * @example
 * import { listen } from 'fdpass';
 *
 * const server = await listen({ path: '/run/myapp/fds.sock', allow: (peer) => peer.uid === process.getuid() });
 * for await (const channel of server) {
 *   const request = await channel.recv();
 *   await channel.send({ data: 'the log', fds: [logFile] });
 * }
 */
export async function listen(pathOrOptions: string | ListenOptions): Promise<Server> {
  const { options, address, type, typeNumber } = socketPathOptions(pathOrOptions, 'bind');
  const { mode, backlog = DEFAULT_BACKLOG, allow, maxPendingChannels = DEFAULT_MAX_PENDING_CHANNELS } = options;
  if (address.abstract && mode !== undefined) throw invalidArgValue('mode', 'does not apply to an abstract name, which has no file', mode);
  const fileMode = validateInteger(mode ?? DEFAULT_MODE, 'mode', 0, 0o777);
  validateInteger(backlog, 'backlog', 0, 0x7fffffff);
  validateInteger(maxPendingChannels, 'maxPendingChannels', 1, Number.MAX_SAFE_INTEGER);
  if (allow !== undefined) validateFunction(allow, 'allow');
  const { maxBufferedFds: untakenFds, maxBufferedBytes: untakenBytes } = channelOptions(options.channel);

  const { sock, file } = await bindListener(address, typeNumber, fileMode, backlog);
  try {
    return new Server({ sock, address, type, file }, { allow, channel: options.channel, maxPendingChannels, untakenFds, untakenBytes });
  } catch (error) {
    // The file goes before the socket closes: it never stands without a server behind it.
    await file?.remove().catch(() => {});
    closeFds([sock]);
    throw error;
  }
}
