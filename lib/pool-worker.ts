// The worker's side of a worker pool (pool.ts): joinPool() opens the channel the master
// started this process with, acknowledges each batch of connections before anything reads
// from them, and hands each to the caller; serveFromPool() hands them to a net.Server or an
// http.Server, which serves them as if it had accepted them itself (as a cluster worker's does).
//
// Why the acknowledgement comes first, and must have been written: the master hands a dead
// worker's unacknowledged connections to another worker. Had this worker read a request
// before acknowledging and then died, the other worker would wait for a request already
// consumed. Written before the worker dies, the acknowledgement is read by the master before
// it hands anything on, so it never hands on a connection this worker took. It goes to the
// acknowledgement pipe the master sent with its HELLO (one write(2), which wakes nobody), or,
// if the pipe is full, as a STATUS on the channel. One acknowledgement covers every message a
// wake-up of the channel brought: it is written once they have all been read.
import { writeSync } from 'node:fs';
import { Server, Socket, type SocketConstructorOpts } from 'node:net';
import { getDefaultHighWaterMark } from 'node:stream';
import EventEmitter from 'eventemitter3';
import { emitSafely } from './emit-safely';
import { binding } from './binding';
import { closeFds } from './fd';
import type { Channel } from './channel';
import { parentChannel } from './child';
import { fdpassError, invalidArgType, unsupportedPlatform } from './errors';
import type { ReceivedMessage } from './message';
import {
  ACK_BYTES,
  CONNECTIONS,
  HELLO,
  NO_DELAY,
  PROTOCOL_VERSION,
  REPORT_CLOSES,
  TCP_CONNECTIONS,
  WORKER_ID_VARIABLE,
  decodePoolMessage,
  encodeAck,
  encodeStatus,
  type PoolMessage,
} from './pool-protocol';
import { tcpSocket } from './tcp-socket';
import { validateAbortSignal } from './validators';

/** What a net.Socket made from a pool connection may be given (its fd and its ends are the pool's to set). */
export type PoolSocketOptions = Omit<SocketConstructorOpts, 'fd' | 'readable' | 'writable'>;

/** The events a PoolMember emits, each with its listener's arguments. */
export interface PoolMemberEvents {
  /**
   * No more connections come: the master closed this worker's channel (the pool is closing,
   * or the master is gone), or this worker left (close()).
   */
  end: [];
  /** A message from the master that is no pool message, or a channel error. */
  error: [error: Error];
  /** The channel is closed. */
  close: [];
}

const noData = Buffer.alloc(0);

/** One connection from the pool. */
export class PoolConnection {
  /** What the master's `data` option sent with it (empty if nothing). */
  readonly data: Buffer;
  #fd: number;
  readonly #member: PoolMember;
  /** What the master said of every connection (HELLO flags): TCP_CONNECTIONS, NO_DELAY. */
  readonly #flags: number;

  /** Made by the pool. */
  constructor(fd: number, data: Buffer, member: PoolMember, flags: number) {
    this.#fd = fd;
    this.data = data;
    this.#member = member;
    this.#flags = flags;
  }

  /**
   * The connection's fd (-1 once toSocket() or close() took it). It is the taker's: make a
   * socket of it (toSocket()), or close() it when done.
   */
  get fd(): number {
    return this.#fd;
  }

  /**
   * A net.Socket over the connection, which owns the fd from here (destroying the socket
   * closes it). The pool counts the connection open until the socket closes.
   */
  toSocket(options?: PoolSocketOptions): Socket {
    // net.Socket checks its signal only once the fd is its handle's: a bad one would leave
    // that handle holding an fd we close here. Checked first, it costs nothing.
    // (A falsy one net.Socket ignores, and so does this.)
    if (options?.signal) validateAbortSignal(options.signal, 'options.signal');
    const fd = this.#take('toSocket');
    let socket: Socket;
    try {
      socket =
        this.#flags & TCP_CONNECTIONS
          ? // A socket told it has TCP_NODELAY, which it has, makes no setsockopt when asked to set it.
            tcpSocket(fd, this.#flags & NO_DELAY ? { noDelay: true, ...options } : (options ?? {}))
          : new Socket({ ...options, fd, readable: true, writable: true });
    } catch (error) {
      binding.close(fd);
      this.#member[released]();
      throw error;
    }
    socket.once('close', () => this.#member[released]());
    return socket;
  }

  /** Closes the fd: for a connection served without toSocket(), once done with it. */
  close(): void {
    binding.close(this.#take('close'));
    this.#member[released]();
  }

  #take(call: string): number {
    const fd = this.#fd;
    if (fd < 0) throw Object.assign(new Error(`${call}(): this pool connection was taken already`), { code: 'ERR_INVALID_STATE' });
    this.#fd = -1;
    return fd;
  }
}

const released = Symbol('fdpass.poolConnectionReleased');

/** This process's place in a pool, as joinPool() and serveFromPool() return it. */
export class PoolMember extends EventEmitter<PoolMemberEvents> {
  /** This worker's slot in the pool (FDPASS_POOL_WORKER_ID), kept by its replacements. */
  readonly id: number;
  readonly #channel: Channel;
  readonly #onConnection: (connection: PoolConnection) => void;
  /** Connections taken, in all (modulo 2^32), and still open. */
  #taken = 0;
  #open = 0;
  #reportCloses = false;
  /** What the master said of every connection (HELLO flags): TCP_CONNECTIONS, NO_DELAY. */
  #connectionFlags = 0;
  #statusScheduled = false;
  /** Taken, not yet acknowledged nor handed to onConnection: this wake-up's connections. */
  #arrived: PoolConnection[] = [];
  #ackScheduled = false;
  /** The write end of the acknowledgement pipe, from the HELLO (-1 until then, or once closed). */
  #acks = -1;
  readonly #ackRecord = Buffer.alloc(ACK_BYTES);

  /** Use joinPool(). */
  constructor(onConnection: (connection: PoolConnection) => void) {
    super();
    this.id = Number(process.env[WORKER_ID_VARIABLE] ?? -1);
    this.#onConnection = onConnection;
    this.#channel = parentChannel();
    this.#channel.on('message', (message) => this.#onMessage(message));
    this.#channel.on('error', (error) => this.#emitError(error));
    this.#channel.once('close', () => {
      this.#acknowledge(); // what arrived with the channel's last wake-up
      if (this.#acks >= 0) binding.close(this.#acks);
      this.#acks = -1;
      emitSafely(this, 'end');
      emitSafely(this, 'close');
    });
    // The first STATUS says that this worker has joined and takes connections.
    this.#sendStatus().catch(() => {}); // a master already gone ends the channel
  }

  /** Connections taken from the pool and still open. */
  get connections(): number {
    return this.#open;
  }

  /**
   * Leaves the pool: the master hands this worker no more connections, and starts a
   * replacement once this process exits. The connections taken so far are still yours.
   */
  close(): Promise<void> {
    return this.#channel.close();
  }

  /** A connection was closed (or handed on): one fewer open, said to the master if it asked. */
  [released](): void {
    this.#open--;
    if (!this.#reportCloses || this.#statusScheduled) return;
    this.#statusScheduled = true;
    // Ref'd: the loop runs an unref'd immediate only when something else wakes it, and a
    // worker whose last connections just closed may wait on nothing for seconds, the master
    // meanwhile counting them open. This holds a worker's exit back by one turn of its loop.
    setImmediate(() => {
      this.#statusScheduled = false;
      this.#report().catch(() => {}); // the master is gone: nobody to tell
    });
  }

  #onMessage(message: ReceivedMessage): void {
    let decoded: PoolMessage;
    try {
      decoded = decodePoolMessage(message.data);
    } catch (error) {
      message.close();
      this.#emitError(error as Error);
      return;
    }
    if (decoded.type === CONNECTIONS) {
      this.#take(message, decoded.count, decoded.data);
      return;
    }
    if (decoded.type !== HELLO) {
      message.close(); // other types are for later versions: ignored
      return;
    }
    if (decoded.version !== PROTOCOL_VERSION) {
      message.close();
      this.#emitError(
        fdpassError('ERR_FDPASS_BAD_MESSAGE', `the master speaks pool protocol ${decoded.version}; this worker, ${PROTOCOL_VERSION}`),
      );
      void this.close();
      return;
    }
    this.#reportCloses = (decoded.flags & REPORT_CLOSES) !== 0;
    this.#connectionFlags = decoded.flags & (TCP_CONNECTIONS | NO_DELAY);
    // The acknowledgement pipe is ours from here (closed with the channel); without one,
    // acknowledgements go on the channel.
    const [acks, ...extra] = message.fds;
    if (extra.length > 0) closeFds(extra);
    if (acks === undefined) return;
    if (this.#acks < 0 && !this.#channel.closed) this.#acks = acks;
    else binding.close(acks);
  }

  #take(message: ReceivedMessage, count: number, data: Buffer[] | undefined): void {
    const fds = message.fds;
    if (fds.length !== count) {
      message.close();
      this.#emitError(
        fdpassError('ERR_FDPASS_BAD_MESSAGE', `a CONNECTIONS message announced ${count} connections and carried ${fds.length} fds`),
      );
      return;
    }
    for (let i = 0; i < count; i++) this.#arrived.push(new PoolConnection(fds[i]!, data?.[i] ?? noData, this, this.#connectionFlags));
    this.#taken = (this.#taken + count) >>> 0;
    this.#open += count;
    // The channel emits a wake-up's messages one after another, then microtasks run: one
    // acknowledgement for them all.
    if (this.#ackScheduled) return;
    this.#ackScheduled = true;
    queueMicrotask(() => this.#acknowledge());
  }

  /**
   * Acknowledges the connections that arrived, before anything reads from them (see the top
   * of this file), then hands them to onConnection. If the acknowledgement fails, the master
   * is gone and nobody else will serve them: they are served anyway.
   */
  #acknowledge(): void {
    this.#ackScheduled = false;
    const connections = this.#arrived;
    if (connections.length === 0) return;
    this.#arrived = [];
    const deliver = (): void => {
      for (const connection of connections) {
        try {
          this.#onConnection(connection);
        } catch (error) {
          process.nextTick(() => {
            throw error;
          });
        }
      }
    };
    if (this.#writeAck()) deliver();
    else this.#sendStatus().then(deliver, deliver);
  }

  /** Says what this worker has taken and has open: on the pipe if it takes it, else on the channel. */
  #report(): Promise<void> {
    return this.#writeAck() ? Promise.resolve() : this.#sendStatus();
  }

  /** An ACK record on the acknowledgement pipe: whether the pipe took it (it may be full). */
  #writeAck(): boolean {
    if (this.#acks < 0) return false;
    try {
      return writeSync(this.#acks, encodeAck(this.#ackRecord, this.#taken, this.#open)) === ACK_BYTES;
    } catch {
      return false; // EAGAIN (full), or EPIPE (the master is gone): the channel says the rest
    }
  }

  #sendStatus(): Promise<void> {
    return this.#channel.send({ data: encodeStatus(this.#taken, this.#open) });
  }

  #emitError(error: Error): void {
    if (this.listenerCount('error') > 0) emitSafely(this, 'error', error);
  }
}

/**
 * Joins the pool that started this process (a WorkerPool's worker): each connection the
 * master hands over goes to onConnection, already acknowledged, and is the callback's to
 * serve: `connection.toSocket()` for a net.Socket, or `connection.fd`. For any server that is
 * not a net.Server; serveFromPool() does it for those.
 */
export function joinPool(onConnection: (connection: PoolConnection) => void): PoolMember {
  if (process.platform === 'win32') throw unsupportedPlatform('joinPool');
  if (typeof onConnection !== 'function') throw invalidArgType('onConnection', 'of type function', onConnection);
  return new PoolMember(onConnection);
}

/**
 * Serves the pool's connections with `server` (an http.Server, or any net.Server), as if it
 * had accepted them: each becomes a net.Socket with the server's allowHalfOpen,
 * pauseOnConnect, noDelay, keepAlive and highWaterMark, emitted as 'connection'. The server
 * emits 'listening' at once, as a cluster worker's does (an http.Server starts its request
 * timeouts then); it does not listen itself.
 * When the master closes this worker's channel, the server drains: it takes no more, closes
 * its idle connections, answers the next request on each keep-alive connection with
 * `Connection: close`, and emits 'close'. The process then exits once nothing else holds it.
 */
export function serveFromPool(server: Server): PoolMember {
  if (!(server instanceof Server)) throw invalidArgType('server', 'a net.Server (an http.Server, say)', server);
  // Public properties of every net.Server (set from its options), not in @types/node; pauseOnCreate
  // is what net.Server itself passes to the sockets it accepts when pauseOnConnect is set.
  const {
    allowHalfOpen = false,
    pauseOnConnect = false,
    noDelay = false,
    keepAlive = false,
    keepAliveInitialDelay = 0,
    highWaterMark,
  } = server as Server & {
    allowHalfOpen?: boolean;
    pauseOnConnect?: boolean;
    noDelay?: boolean;
    keepAlive?: boolean;
    keepAliveInitialDelay?: number;
    highWaterMark?: number;
  };
  const options = { allowHalfOpen, pauseOnCreate: pauseOnConnect } as PoolSocketOptions;
  // net.Server's highWaterMark option (Node 20.1+), which it gives the sockets it accepts; only
  // when set, as the default costs nothing to leave out (and measurably more GC to pass on).
  if (typeof highWaterMark === 'number' && highWaterMark !== getDefaultHighWaterMark(false))
    Object.assign(options, { readableHighWaterMark: highWaterMark, writableHighWaterMark: highWaterMark });
  const member = joinPool((connection) => {
    const socket = connection.toSocket(options);
    // What net.Server does to each connection it accepts (an http.Server sets noDelay by default).
    if (noDelay) socket.setNoDelay(true);
    if (keepAlive) socket.setKeepAlive(true, keepAliveInitialDelay);
    server.emit('connection', socket);
  });
  member.once('end', () => drain(server, member));
  server.emit('listening');
  return member;
}

interface HttpLike {
  closeIdleConnections(): void;
}

// How often a draining http.Server looks for connections whose last response is done.
const DRAIN_CHECK_MS = 100;

/** Closes the server, and its connections once idle; `member` counts those still open. */
function drain(server: Server, member: PoolMember): void {
  server.close(); // an http.Server also closes its idle connections here
  const http = server as Server & Partial<HttpLike>;
  if (typeof http.closeIdleConnections !== 'function') return;
  // What comes next on a keep-alive connection is answered with Connection: close.
  server.prependListener('request', (_request: unknown, response: { shouldKeepAlive: boolean }) => {
    response.shouldKeepAlive = false;
  });
  // A request under way when draining began keeps its connection after its response: close
  // the connection once idle.
  const timer = setInterval(() => {
    http.closeIdleConnections!();
    if (member.connections === 0) clearInterval(timer);
  }, DRAIN_CHECK_MS);
  timer.unref();
}
