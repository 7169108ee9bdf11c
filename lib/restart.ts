// Zero-downtime restart: the running process offers its listening sockets on a Unix socket
// path (offerListeners); its replacement takes them over (takeOverListeners), listens on them
// and says so; only then does the old process stop accepting, and it drains.
//
// The protocol: one Channel per replacement, each message a JSON object with `v: 1`.
//   old -> new  { type: 'listeners', addresses }   with the listening fds, in order
//   new -> old  { type: 'ready' }                  it listens on every one of them
//   old -> new  { type: 'released' }               the old one accepts no more; the path is free
//   old -> new  { type: 'refused', code, message } instead of either: busy, timed out, withdrawn
// The old process decides: a 'ready' that comes after its timeout is answered with 'refused'.
//
// Who owns each listening fd, step by step:
//   - in the old process, its net.Server throughout: sending puts a copy in the kernel's
//     message (the old one keeps its own), and server.close() after 'ready' closes that copy;
//   - in flight, the kernel, which closes it if the replacement never receives it;
//   - in the new process, the ListenerTakeover until listen(server, i) hands it to the server
//     (server.close() closes it); takeover.close(), or a failure, closes those not handed on.
// The socket itself stays open in at least one process throughout, so the kernel never refuses
// a connection: those it queued as the old process stopped accepting are the new one's.
import { Server as NetServer, type AddressInfo } from 'node:net';
import EventEmitter from 'eventemitter3';
import { binding, constants } from './binding';
import type { Channel } from './channel';
import { connect } from './connect';
import { stopAndDrain } from './drain';
import { emitSafely } from './emit-safely';
import { errnoException, fdpassError, invalidArgType, invalidArgValue, invalidState, unsupportedPlatform } from './errors';
import { closeFds, toFd } from './fd';
import type { ReceivedMessage } from './message';
import type { PeerCredentials } from './peer';
import { listen, type Server } from './server';
import { validateFunction, validateInteger, validateOptions, validateString } from './validators';

/** Options of {@link offerListeners}. */
export interface OfferListenersOptions {
  /**
   * Milliseconds a replacement has, from receiving the sockets, to say it listens on them.
   * One that takes longer is refused (its `ready()` rejects with ERR_FDPASS_HANDOVER_TIMEOUT)
   * and this process goes on serving and offering. Default 10 000.
   */
  readyTimeout?: number;
  /**
   * Milliseconds after the handover that an HTTP connection may stay idle before it is
   * closed (see `offerListeners`). Default 5 000, Node's own `keepAliveTimeout`.
   */
  drainTimeout?: number;
  /** Which processes may take the sockets over. Default: those of this process's uid. */
  allow?: (peer: PeerCredentials) => boolean;
}

/** Options of {@link takeOverListeners}. */
export interface TakeOverListenersOptions {
  /**
   * Servers to listen on the sockets taken over (servers[i] on socket i); then the call says
   * ready and resolves once the old process has stopped accepting. Without them, call
   * `listen()` and `ready()` on the takeover yourself.
   */
  servers?: readonly NetServer[];
  /** Milliseconds to wait for the sockets, and after `ready()` for the old process's word. Default 10 000. */
  timeout?: number;
  /** Which process may hand sockets over. Default: one of this process's uid. */
  allow?: (peer: PeerCredentials) => boolean;
}

/** The events a ListenerOffer emits, each with its listener's arguments. */
export interface ListenerOfferEvents {
  /** A replacement listens on the sockets and this process has stopped accepting: it drains. */
  handover: [replacement: PeerCredentials];
  /** Every connection of the servers has closed: the process may exit. */
  drained: [];
  /** A replacement that failed (timed out, left, spoke out of turn); this process goes on serving and offering. */
  error: [error: Error];
}

type Refusal = 'ERR_FDPASS_HANDOVER_BUSY' | 'ERR_FDPASS_HANDOVER_TIMEOUT' | 'ERR_FDPASS_HANDOVER_FAILED';

type HandoverMessage =
  | { type: 'listeners'; addresses: AddressInfo[] }
  | { type: 'ready' }
  | { type: 'released' }
  | { type: 'refused'; code: Refusal; message: string };

const PROTOCOL_VERSION = 1;
const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_DRAIN_TIMEOUT_MS = 5_000;
const MAX_TIMEOUT_MS = 0x7fff_ffff;
// A handover message is a short JSON object; nothing larger is read from either side.
const MAX_MESSAGE_BYTES = 64 * 1024;
const REFUSALS: readonly string[] = ['ERR_FDPASS_HANDOVER_BUSY', 'ERR_FDPASS_HANDOVER_TIMEOUT', 'ERR_FDPASS_HANDOVER_FAILED'];
// What a send or receive says when the peer process is gone.
const PEER_GONE = new Set(['EOF', 'EPIPE', 'ECONNRESET']);

const sameUser = (peer: PeerCredentials): boolean => peer.uid === process.getuid?.();

/**
 * Offers the listening sockets of `servers` (TCP servers: net.Server, http.Server,
 * https.Server) to a replacement process on the Unix socket `path` (mode 0600, of this uid's
 * processes only, unless `allow` says otherwise). One replacement at a time takes them over
 * with `takeOverListeners(path)`; once it listens on every one, this process stops accepting
 * (connections queued meanwhile are the replacement's, none is refused) and drains:
 *
 * - an HTTP connection's next request is answered with `Connection: close`, and the
 *   connection closes once that response is sent; a request in flight finishes;
 * - a connection still idle `drainTimeout` ms after the handover is closed;
 * - a connection of a server that is not HTTP, or an upgraded one (a WebSocket), is yours
 *   to end (on 'handover').
 *
 * `offer.drained` resolves once every connection has closed; then the process may exit.
 * The offer itself does not keep the process alive.
 * @example
 * import { once } from 'node:events';
 * import http from 'node:http';
 * import { offerListeners, takeOverListeners } from 'fdpass';
 *
 * const server = http.createServer(app);
 * const handover = '/run/myapp/restart.sock';
 * // Take the sockets over from the process running now; null on a first start.
 * const takeover = await takeOverListeners(handover, { servers: [server] });
 * if (!takeover) await once(server.listen(8080), 'listening');
 * // Offer them to the next one; once it listens on them, stop, drain, and exit.
 * const offer = await offerListeners(handover, [server]);
 * await offer.drained;
 * process.exit(0);
 */
export async function offerListeners(path: string, servers: readonly NetServer[], options?: OfferListenersOptions): Promise<ListenerOffer> {
  if (process.platform === 'win32') throw unsupportedPlatform('offerListeners');
  validateString(path, 'path');
  const listeners = serverList(servers, 'servers', 'a non-empty array of listening TCP servers', listenerFdOf);
  const {
    readyTimeout = DEFAULT_TIMEOUT_MS,
    drainTimeout = DEFAULT_DRAIN_TIMEOUT_MS,
    allow = sameUser,
  } = validateOptions(options, 'options');
  validateInteger(readyTimeout, 'options.readyTimeout', 1, MAX_TIMEOUT_MS);
  validateInteger(drainTimeout, 'options.drainTimeout', 0, MAX_TIMEOUT_MS);
  validateFunction(allow, 'options.allow');
  // A replacement sends no fds (any it sends are closed on arrival) and short messages.
  const server = await listen({ path, allow, channel: { maxFdsPerMessage: 0, maxPayloadBytes: MAX_MESSAGE_BYTES } });
  return new ListenerOffer(server, listeners, readyTimeout, drainTimeout);
}

/** The running process's side of a restart: see offerListeners(). */
export class ListenerOffer extends EventEmitter<ListenerOfferEvents> {
  /** Resolves once a replacement has taken over and every connection has closed. */
  readonly drained: Promise<void>;
  readonly #server: Server;
  readonly #servers: readonly NetServer[];
  readonly #readyTimeout: number;
  readonly #drainTimeout: number;
  #state: 'offering' | 'handing-over' | 'draining' | 'drained' | 'withdrawn' = 'offering';
  /** The replacement being handed the sockets, while it is. */
  #replacement: Channel | undefined;
  #resolveDrained!: () => void;
  #withdrawn: Promise<void> | undefined;

  /** Use offerListeners(). */
  constructor(server: Server, servers: readonly NetServer[], readyTimeout: number, drainTimeout: number) {
    super();
    this.#server = server;
    this.#servers = servers;
    this.#readyTimeout = readyTimeout;
    this.#drainTimeout = drainTimeout;
    this.drained = new Promise((resolve) => (this.#resolveDrained = resolve));
    server.unref();
    server.on('connection', (channel) => {
      this.#onReplacement(channel).catch((error: Error) => this.#emitError(error));
    });
    server.on('error', (error) => this.#emitError(error));
  }

  /** The socket path replacements connect to. */
  get path(): string {
    return this.#server.path;
  }

  /**
   * Withdraws the offer: the socket file is removed and a handover under way is refused.
   * After a handover it does nothing: the drain goes on.
   */
  close(): Promise<void> {
    if (this.#state === 'offering' || this.#state === 'handing-over') {
      this.#state = 'withdrawn';
      const replacement = this.#replacement;
      this.#replacement = undefined;
      this.#withdrawn = Promise.all([
        this.#server.close(),
        replacement && refuse(replacement, 'ERR_FDPASS_HANDOVER_FAILED', 'the offer was withdrawn: the old process goes on serving'),
      ]).then(() => {});
    }
    return this.#withdrawn ?? Promise.resolve();
  }

  async #onReplacement(channel: Channel): Promise<void> {
    if (this.#state === 'handing-over') {
      const message = `pid ${process.pid} is handing its listeners over to pid ${this.#replacement?.peer.pid} already`;
      await refuse(channel, 'ERR_FDPASS_HANDOVER_BUSY', message);
      return;
    }
    if (this.#state !== 'offering') {
      // Accepted as the offer was closing: withdrawn, or handed over to another.
      await refuse(channel, 'ERR_FDPASS_HANDOVER_FAILED', `pid ${process.pid} offers its listeners no more`);
      return;
    }
    this.#state = 'handing-over';
    this.#replacement = channel;
    const replacement = channel.peer;
    try {
      await this.#handOver(channel, replacement);
    } catch (error) {
      if (this.#replacement !== channel) return; // withdrawn meanwhile: close() told the replacement
      this.#state = 'offering';
      this.#replacement = undefined;
      const failure = error as Error & { code?: string };
      const code = REFUSALS.includes(failure.code ?? '') ? (failure.code as Refusal) : 'ERR_FDPASS_HANDOVER_FAILED';
      await refuse(channel, code, failure.message);
      this.#emitError(failure);
      return;
    }
    // The replacement accepts on every socket: from here they are its alone. Stopping closes
    // this process's copies at once (see drain.ts for how the connections are drained).
    this.#state = 'draining';
    this.#replacement = undefined;
    const drained = Promise.all(this.#servers.map((server) => stopAndDrain(server, this.#drainTimeout)));
    emitSafely(this, 'handover', replacement);
    await this.#server.close(); // the path is free for the replacement's own offer
    await channel.send({ data: encode({ type: 'released' }) }).catch(() => {}); // one that left needs no word
    await channel.close();
    await drained;
    this.#state = 'drained';
    emitSafely(this, 'drained');
    this.#resolveDrained();
  }

  /** Sends the sockets and waits for 'ready'; throws what went wrong. */
  async #handOver(channel: Channel, replacement: PeerCredentials): Promise<void> {
    const who = `the replacement (pid ${replacement.pid})`;
    // A server closed since the offer cannot be handed over: toFd says which.
    const fds = this.#servers.map((server, i) => listenerFdOf(server, `servers[${i}]`));
    const addresses = this.#servers.map((server) => server.address() as AddressInfo);
    try {
      await channel.send({ data: encode({ type: 'listeners', addresses }), fds });
    } catch (error) {
      if (PEER_GONE.has((error as { code?: string }).code ?? '')) {
        throw fdpassError('ERR_FDPASS_HANDOVER_FAILED', `${who} left before it received the sockets`, error);
      }
      throw error;
    }
    let reply: ReceivedMessage;
    try {
      reply = await channel.recv({ signal: AbortSignal.timeout(this.#readyTimeout) });
    } catch (error) {
      const { code } = error as { code?: string };
      if (code === 'ABORT_ERR') {
        throw fdpassError('ERR_FDPASS_HANDOVER_TIMEOUT', `${who} did not say it listens within ${this.#readyTimeout} ms`, error);
      }
      if (PEER_GONE.has(code ?? '')) throw fdpassError('ERR_FDPASS_HANDOVER_FAILED', `${who} left before it said it listens`, error);
      throw fdpassError('ERR_FDPASS_HANDOVER_FAILED', `${who} could not be heard: ${(error as Error).message}`, error);
    }
    reply.close(); // the channel takes no fds (maxFdsPerMessage 0): nothing to close, and nothing kept
    const message = decode(reply, who);
    if (message.type !== 'ready') throw fdpassError('ERR_FDPASS_HANDOVER_FAILED', `${who} sent '${message.type}' where 'ready' was due`);
  }

  #emitError(error: Error): void {
    if (this.listenerCount('error') > 0) emitSafely(this, 'error', error);
  }
}

/**
 * Takes over the listening sockets that the process at `path` offers (see offerListeners).
 * Resolves to null when nobody offers there (no file, or a file left by a process that is
 * gone): a first start, where the application binds its ports itself.
 *
 * With `servers`, it listens servers[i] on socket i, says ready, and resolves once the old
 * process has stopped accepting; if the handover fails after that, it closes those servers
 * again. Without, it resolves as soon as the sockets arrive: listen on each with
 * `takeover.listen(server, i)`, then call `takeover.ready()`.
 *
 * Rejects with ERR_FDPASS_HANDOVER_BUSY (another replacement is taking over),
 * ERR_FDPASS_HANDOVER_TIMEOUT, or ERR_FDPASS_HANDOVER_FAILED (the process there is not
 * allowed, left, or sent what is not a listening TCP socket); the old process goes on serving.
 */
export async function takeOverListeners(path: string, options?: TakeOverListenersOptions): Promise<ListenerTakeover | null> {
  if (process.platform === 'win32') throw unsupportedPlatform('takeOverListeners');
  validateString(path, 'path');
  const { timeout = DEFAULT_TIMEOUT_MS, allow = sameUser } = validateOptions(options, 'options');
  const servers =
    options?.servers === undefined
      ? undefined
      : serverList(options.servers, 'options.servers', 'a non-empty array of net.Server', validateIdleServer);
  validateInteger(timeout, 'options.timeout', 1, MAX_TIMEOUT_MS);
  validateFunction(allow, 'options.allow');

  let channel: Channel;
  try {
    channel = await connect({ path, maxPayloadBytes: MAX_MESSAGE_BYTES });
  } catch (error) {
    const { code } = error as { code?: string };
    if (code === 'ENOENT' || code === 'ECONNREFUSED') return null;
    throw error;
  }
  let takeover: ListenerTakeover;
  try {
    takeover = await receiveListeners(channel, path, timeout, allow);
  } catch (error) {
    await channel.close();
    throw error;
  }
  if (servers === undefined) return takeover;
  const listening: NetServer[] = [];
  try {
    if (servers.length !== takeover.count) {
      throw fdpassError(
        'ERR_FDPASS_HANDOVER_FAILED',
        `pid ${takeover.previous.pid} hands over ${takeover.count} listening socket(s), and ${servers.length} server(s) were given to take them`,
      );
    }
    for (const [i, server] of servers.entries()) {
      await takeover.listen(server, i);
      listening.push(server);
    }
    await takeover.ready();
  } catch (error) {
    // The old process goes on serving: these servers' copies of its sockets are closed, and
    // the servers can listen again (on a port of their own, say).
    await Promise.all([takeover.close(), ...listening.map((server) => new Promise((resolve) => server.close(resolve)))]);
    throw error;
  }
  return takeover;
}

async function receiveListeners(
  channel: Channel,
  path: string,
  timeout: number,
  allow: (peer: PeerCredentials) => boolean,
): Promise<ListenerTakeover> {
  const previous = channel.peer;
  const who = `the process at ${path} (pid ${previous.pid})`;
  if (allow(previous) !== true) {
    throw fdpassError(
      'ERR_FDPASS_HANDOVER_FAILED',
      `${who} runs as uid ${previous.uid}, which allow() refuses (by default only this process's uid)`,
    );
  }
  let received: ReceivedMessage;
  try {
    received = await channel.recv({ signal: AbortSignal.timeout(timeout) });
  } catch (error) {
    const { code } = error as { code?: string };
    if (code === 'ABORT_ERR') throw fdpassError('ERR_FDPASS_HANDOVER_TIMEOUT', `${who} handed over nothing within ${timeout} ms`, error);
    if (PEER_GONE.has(code ?? '')) {
      throw fdpassError(
        'ERR_FDPASS_HANDOVER_FAILED',
        `${who} closed the connection before handing anything over (does its allow() refuse this process?)`,
        error,
      );
    }
    throw error;
  }
  try {
    const message = decode(received, who);
    if (message.type === 'refused') throw fdpassError(message.code, `${who} refused: ${message.message}`);
    if (message.type !== 'listeners')
      throw fdpassError('ERR_FDPASS_HANDOVER_FAILED', `${who} sent '${message.type}' where its listeners were due`);
    const { fds } = received;
    if (fds.length === 0 || fds.length !== message.addresses.length) {
      throw fdpassError('ERR_FDPASS_HANDOVER_FAILED', `${who} sent ${fds.length} fd(s) for ${message.addresses.length} listener(s)`);
    }
    for (const fd of fds) {
      const problem = listenerProblem(fd);
      if (problem !== undefined) throw fdpassError('ERR_FDPASS_HANDOVER_FAILED', `${who} sent fd ${fd}, ${problem}`);
    }
    return new ListenerTakeover(channel, [...fds], message.addresses, previous, timeout);
  } catch (error) {
    received.close();
    throw error;
  }
}

/** The replacement's side of a restart: the sockets taken over, until each listens. */
export class ListenerTakeover {
  /** The process that handed the sockets over (pid, uid, gid). */
  readonly previous: PeerCredentials;
  /** Where each socket listens, as the old process's server.address() said. */
  readonly addresses: readonly AddressInfo[];
  readonly #channel: Channel;
  /** The sockets this takeover still owns; -1 for each handed on (or closed). */
  readonly #fds: number[];
  readonly #timeout: number;
  #readyCalled = false;

  /** Use takeOverListeners(). */
  constructor(channel: Channel, fds: number[], addresses: readonly AddressInfo[], previous: PeerCredentials, timeout: number) {
    this.#channel = channel;
    this.#fds = fds;
    this.addresses = addresses;
    this.previous = previous;
    this.#timeout = timeout;
  }

  /** How many listening sockets were handed over. */
  get count(): number {
    return this.#fds.length;
  }

  /**
   * Listens `server` (a net.Server or http.Server not yet listening) on socket `index`, and
   * resolves once it listens. The socket is the server's from this call, even if it fails:
   * `server.close()` closes it.
   */
  async listen(server: NetServer, index = 0): Promise<void> {
    validateIdleServer(server, 'server');
    validateInteger(index, 'index', 0, this.#fds.length - 1);
    const fd = this.#fds[index]!;
    if (fd === -1) throw invalidState(`socket ${index} has been handed on already, or the takeover is closed`);
    await new Promise<void>((resolve, reject) => {
      const onListening = (): void => {
        server.off('error', onError);
        resolve();
      };
      const onError = (error: Error): void => {
        server.off('listening', onListening);
        reject(error);
      };
      server.once('listening', onListening).once('error', onError);
      server.listen({ fd });
      this.#fds[index] = -1;
    });
  }

  /**
   * Tells the old process that every socket listens here: it stops accepting and drains.
   * Resolves once it has stopped (or is gone); the socket path is then free for this
   * process's own offerListeners(). Rejects with ERR_FDPASS_HANDOVER_TIMEOUT when the old
   * process gave up waiting, or did not answer within the timeout: it may still accept then,
   * beside this process.
   */
  async ready(): Promise<void> {
    if (this.#readyCalled) throw invalidState('ready() has been called already');
    const waiting = this.#fds.flatMap((fd, i) => (fd === -1 ? [] : [`${i} (port ${this.addresses[i]?.port})`]));
    if (waiting.length > 0) {
      throw invalidState(
        `socket ${waiting.join(', ')} listens nowhere yet: listen(server, index) first, or the old process would stop accepting with nobody else`,
      );
    }
    this.#readyCalled = true;
    const who = `the old process (pid ${this.previous.pid})`;
    try {
      // Sending fails if the old process has closed its end, when it refused or is gone: its
      // last word, if any, is still to be read.
      await this.#channel.send({ data: encode({ type: 'ready' }) }).catch((error: { code?: string }) => {
        if (!PEER_GONE.has(error.code ?? '')) throw error;
      });
      const reply = await this.#channel.recv({ signal: AbortSignal.timeout(this.#timeout) });
      reply.close(); // fds have no place in a reply
      const message = decode(reply, who);
      if (message.type === 'refused') throw fdpassError(message.code, `${who} refused: ${message.message}`);
      if (message.type !== 'released')
        throw fdpassError('ERR_FDPASS_HANDOVER_FAILED', `${who} sent '${message.type}' where 'released' was due`);
    } catch (error) {
      const { code } = error as { code?: string };
      if (code === 'ABORT_ERR') {
        throw fdpassError(
          'ERR_FDPASS_HANDOVER_TIMEOUT',
          `${who} did not confirm within ${this.#timeout} ms that it stopped accepting`,
          error,
        );
      }
      // A process that is gone accepts nothing: the sockets are this one's alone.
      if (!PEER_GONE.has(code ?? '')) throw error;
    } finally {
      await this.#channel.close();
    }
  }

  /**
   * Gives up: closes the sockets not handed to a server yet, and the connection to the old
   * process, which goes on serving (unless ready() was called). Calling it again does nothing.
   */
  async close(): Promise<void> {
    const left = this.#fds.filter((fd) => fd !== -1);
    this.#fds.fill(-1);
    if (left.length > 0) closeFds(left);
    await this.#channel.close();
  }
}

function encode(message: HandoverMessage): string {
  return JSON.stringify({ v: PROTOCOL_VERSION, ...message });
}

/** A handover message, or ERR_FDPASS_HANDOVER_FAILED; its fds stay with `received`. */
function decode(received: ReceivedMessage, who: string): HandoverMessage {
  let message: unknown;
  try {
    message = JSON.parse(received.data.toString('utf8'));
  } catch {
    // not JSON: said below
  }
  const { v, type, addresses, code } = (typeof message === 'object' && message !== null ? message : {}) as Record<string, unknown>;
  const wellFormed =
    v === PROTOCOL_VERSION &&
    (type === 'ready' ||
      type === 'released' ||
      (type === 'listeners' && Array.isArray(addresses)) ||
      (type === 'refused' && typeof code === 'string' && REFUSALS.includes(code)));
  if (!wellFormed) {
    throw fdpassError(
      'ERR_FDPASS_HANDOVER_FAILED',
      `${who} sent ${JSON.stringify(received.data.toString('utf8').slice(0, 80))}, which is no handover message of version ${PROTOCOL_VERSION}`,
    );
  }
  return message as HandoverMessage;
}

/** refused, then closed; a replacement that left already hears nothing. */
async function refuse(channel: Channel, code: Refusal, message: string): Promise<void> {
  await channel.send({ data: encode({ type: 'refused', code, message }) }).catch(() => {});
  await channel.close();
}

/** The fd of a listening TCP server, or a TypeError that says what it is instead. */
function listenerFdOf(server: unknown, name: string): number {
  if (!(server instanceof NetServer)) throw invalidArgType(name, 'an instance of net.Server (or http.Server)', server);
  if (!server.listening) throw invalidArgValue(name, 'is not listening', server);
  const fd = toFd(server, name);
  const problem = listenerProblem(fd);
  if (problem !== undefined) throw invalidArgValue(name, `listens on fd ${fd}, ${problem}`, server);
  return fd;
}

/** value, a non-empty array each of whose entries passes `check`, copied. */
function serverList(value: unknown, name: string, expected: string, check: (server: unknown, name: string) => unknown): NetServer[] {
  if (!Array.isArray(value) || value.length === 0) throw invalidArgType(name, expected, value);
  const servers: unknown[] = value;
  servers.forEach((server, i) => check(server, `${name}[${i}]`));
  return servers.slice() as NetServer[];
}

function validateIdleServer(server: unknown, name: string): void {
  if (!(server instanceof NetServer)) throw invalidArgType(name, 'an instance of net.Server (or http.Server)', server);
  if (server.listening) throw invalidArgValue(name, 'is listening already', server);
}

const facts = new Int32Array(4);

/** Why fd is not a listening TCP socket, or undefined when it is one. */
function listenerProblem(fd: number): string | undefined {
  const err = binding.inspectSocket(fd, facts);
  if (err < 0) return `which getsockopt refuses (${errnoException(err, 'getsockopt').code})`;
  const [domain, type, listening] = facts as unknown as [number, number, number];
  // Node unlinks a Unix socket server's file when that server closes: the old process's
  // close would pull the path from under its replacement.
  if (domain === constants.AF_UNIX) return 'a Unix socket: only TCP listeners are handed over';
  if (type !== constants.SOCK_STREAM || listening !== 1) return 'which is not a listening TCP socket';
  return undefined;
}
