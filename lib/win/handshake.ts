// How two processes on Windows make a channel (docs/windows-channel-protocol.md): one offers
// (a loopback listener and a random token, written as an address to give the other), the
// other connects; each side sends a hello with the token, then the peers prove their process
// ids to each other (verify-peer.ts) before anything is pushed. The offer accepts exactly one
// peer: connections without the token, or that fail the verification, are closed and it goes
// on waiting.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { channelOptions } from '../channel-options';
import { errnoException, fdpassError, invalidArgValue } from '../errors';
import { validateInteger, validateOptions, validateString } from '../validators';
import { WindowsChannel, fromTransport } from './channel';
import { readExactly, sendWhole } from './read-exactly';
import { uvCode } from './uv-code';
import { ADDRESSES_BYTES, handshakeTimeoutOf, verifyPeer, type HandshakeOptions, type VerifiedPeer } from './verify-peer';

export type { HandshakeOptions } from './verify-peer';
import { windowsTransport, type WinPollWrap } from './transport';

const MAGIC = Buffer.from('FDPW', 'latin1');
const VERSION = 1;
const TOKEN_BYTES = 16;
export const HELLO_BYTES = 32;
const ADDRESS = /^fdpass-win:127\.0\.0\.1:(\d{1,5}):([0-9a-f]{32})$/;
/** Most connections an offer handshakes with at once; more wait in the listener's backlog. */
const MAX_HANDSHAKES = 8;
const EAGAIN = uvCode('EAGAIN');

/** Options of `ChannelOffer#accept()` (Windows). */
export interface AcceptOptions extends HandshakeOptions {
  /** Accept only this process (e.g. the child you started); others are turned away. */
  expectPid?: number;
}

/** The hello: "FDPW", version, 11 zero bytes, the token. */
export function encodeHello(token: Uint8Array): Buffer {
  const hello = Buffer.alloc(HELLO_BYTES);
  MAGIC.copy(hello, 0);
  hello[4] = VERSION;
  hello.set(token, 16);
  return hello;
}

/** Why hello is not a hello carrying token, or undefined if it is. */
function helloProblem(hello: Buffer, token: Uint8Array): string | undefined {
  if (!hello.subarray(0, 4).equals(MAGIC) || hello[4] !== VERSION) return 'not an fdpass Windows hello';
  if (!timingSafeEqual(hello.subarray(16, 32), token)) return 'a wrong token';
  return undefined;
}

/** The transport socket's local and remote ends, which the verification binds its challenges to. */
function addressesOf(sock: number): Uint8Array {
  const addresses = new Uint8Array(ADDRESSES_BYTES);
  const err = windowsTransport().socketAddresses(sock, addresses);
  if (err < 0) throw errnoException(err, 'getpeername', 'the connection');
  return addresses;
}

function readHello(sock: number, timeoutMs: number, signal?: AbortSignal): Promise<Buffer> {
  return readExactly(sock, HELLO_BYTES, timeoutMs, 'hello', signal);
}

function sendHello(sock: number, hello: Buffer): void {
  sendWhole(sock, hello, 'the hello');
}

/** A connection an offer turned away, and why (for its 'rejected' callback and tests). */
export interface RejectedPeer {
  /** Why it was turned away. */
  reason: string;
}

/**
 * Windows: an offer of a channel to another process, made by `Channel.offer()`. Give
 * `offer.address` to that process, which calls `Channel.connectTo(address)`; `accept()` resolves
 * with this side's channel. See docs/windows-channel-protocol.md.
 */
export class ChannelOffer {
  readonly #token = randomBytes(TOKEN_BYTES);
  readonly #listener: number;
  readonly #poll: WinPollWrap;
  readonly #port: number;
  #state: 'open' | 'accepting' | 'closed' = 'open';
  /** What the listener's poll calls while accept() waits. */
  #onListenerEvent: ((status: number) => void) | undefined;
  #cancel: (() => void) | undefined;
  /** Connections turned away so far, and why. */
  readonly rejected: RejectedPeer[] = [];

  /** @internal Channel.offer() makes offers. */
  constructor() {
    const win = windowsTransport();
    const out = new Float64Array(2);
    const err = win.listen(out);
    if (err < 0) throw errnoException(err, 'listen', '127.0.0.1');
    this.#listener = out[0]!;
    this.#port = out[1]!;
    this.#poll = new win.WinPollWrap((status) => this.#onListenerEvent?.(status));
    const openErr = this.#poll.open(this.#listener);
    if (openErr < 0) {
      win.closeSocket(this.#listener);
      throw errnoException(openErr, 'uv_poll_init_socket');
    }
    this.#poll.unref();
  }

  /** What the other process passes to connectChannel(): the port and the token. Keep it secret. */
  get address(): string {
    return `fdpass-win:127.0.0.1:${this.#port}:${this.#token.toString('hex')}`;
  }

  /**
   * The channel to the first process that connects with the token and a process id that
   * checks out (and is expectPid, if given). Others are closed and recorded in `rejected`.
   * The listener closes once the channel is made.
   */
  accept(options?: AcceptOptions): Promise<WindowsChannel> {
    let timeout: number;
    let expectPid: number | undefined;
    try {
      channelOptions(options);
      timeout = handshakeTimeoutOf(options);
      expectPid = options?.expectPid === undefined ? undefined : validateInteger(options.expectPid, 'options.expectPid', 1, 0xffff_ffff);
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.#state !== 'open')
      return Promise.reject(fdpassError('ERR_FDPASS_HANDOVER_BUSY', 'fdpass: this offer was accepted or closed already'));
    this.#state = 'accepting';
    const win = windowsTransport();
    // Stops every verification still under way once the offer has its peer or is closed.
    const verifications = new AbortController();
    return new Promise<WindowsChannel>((resolve, reject) => {
      const handshaking = new Set<number>();
      let done = false;
      const finish = (error: Error | undefined, sock?: number, peer?: VerifiedPeer): void => {
        if (done) return;
        done = true;
        verifications.abort(fdpassError('ERR_FDPASS_HANDOVER_FAILED', 'fdpass: the offer has its peer, or was closed'));
        this.#stopListening();
        for (const other of handshaking) if (other !== sock) win.closeSocket(other);
        if (error !== undefined) return reject(error);
        try {
          resolve(new WindowsChannel(fromTransport, sock, peer, options));
        } catch (err) {
          win.closeSocket(sock!);
          reject(err);
        }
      };
      const turnAway = (sock: number, reason: string): void => {
        handshaking.delete(sock);
        win.closeSocket(sock);
        this.rejected.push({ reason });
        acceptWaiting();
      };
      const handshake = async (sock: number): Promise<void> => {
        handshaking.add(sock);
        let peer: VerifiedPeer | undefined;
        try {
          const problem = helloProblem(await readHello(sock, timeout, verifications.signal), this.#token);
          if (problem !== undefined) return turnAway(sock, problem);
          sendHello(sock, encodeHello(this.#token));
          peer = await verifyPeer(sock, addressesOf(sock), timeout, verifications.signal, { expectPid });
        } catch (error) {
          if (!done) turnAway(sock, (error as Error).message);
          return;
        }
        if (done) {
          if (peer.process !== 0) win.closeProcess(peer.process);
          return;
        }
        handshaking.delete(sock);
        finish(undefined, sock, peer);
      };
      const acceptWaiting = (): void => {
        while (!done && handshaking.size < MAX_HANDSHAKES) {
          const sock = win.accept(this.#listener);
          if (sock === EAGAIN) break;
          if (sock < 0) return finish(errnoException(sock, 'accept'));
          void handshake(sock);
        }
      };
      this.#cancel = () => finish(fdpassError('ERR_FDPASS_HANDOVER_FAILED', 'fdpass: the offer was closed'));
      this.#onListenerEvent = (status) => (status < 0 ? finish(errnoException(status, 'uv_poll')) : acceptWaiting());
      this.#poll.ref();
      const err = this.#poll.start(true, false);
      if (err < 0) finish(errnoException(err, 'uv_poll_start'));
    });
  }

  /** Stops offering and closes the listener: a pending accept() rejects. */
  close(): void {
    if (this.#cancel !== undefined) this.#cancel();
    else this.#stopListening();
  }

  #stopListening(): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    this.#onListenerEvent = undefined;
    this.#poll.close(() => {});
  }
}

/**
 * A channel to the process that made the offer at `address` (ChannelOffer.address): the hello
 * carries the token, then each side proves its process id to the other (verify-peer.ts).
 */
export async function connectChannel(address: string, options?: HandshakeOptions): Promise<WindowsChannel> {
  validateString(address, 'address');
  validateOptions(options, 'options');
  channelOptions(options);
  const timeout = handshakeTimeoutOf(options);
  const match = ADDRESS.exec(address);
  if (match === null) throw invalidArgValue('address', 'must be a ChannelOffer address (fdpass-win:127.0.0.1:<port>:<token>)', address);
  const port = Number(match[1]);
  const token = Buffer.from(match[2]!, 'hex');
  const win = windowsTransport();
  const sock = win.connect(port);
  if (sock < 0) throw errnoException(sock, 'connect', `127.0.0.1:${port}`);
  let peer: VerifiedPeer | undefined;
  try {
    sendHello(sock, encodeHello(token));
    // The offer may be handshaking with up to MAX_HANDSHAKES others, each for handshakeTimeout,
    // before it reads our hello: waiting only handshakeTimeout here timed out now and then under load.
    const problem = helloProblem(await readHello(sock, 2 * timeout), token);
    if (problem !== undefined) throw fdpassError('ERR_FDPASS_HANDOVER_FAILED', `fdpass: the offer answered with ${problem}`);
    peer = await verifyPeer(sock, addressesOf(sock), timeout, new AbortController().signal);
    return new WindowsChannel(fromTransport, sock, peer, options);
  } catch (error) {
    if (peer !== undefined && peer.process !== 0) win.closeProcess(peer.process);
    win.closeSocket(sock);
    throw error;
  }
}
