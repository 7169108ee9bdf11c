// How two processes on Windows make a channel (docs/windows-channel-protocol.md): one offers
// (a loopback listener and a random token, written as an address to give the other), the
// other connects; each side sends a hello with its process id and the token, and checks the
// other's claimed id against the system's TCP table before it pushes anything into it. The
// offer accepts exactly one peer: connections without the token, or whose id does not check
// out, are closed and it goes on waiting.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { errnoException, fdpassError, invalidArgValue } from '../errors';
import { validateInteger, validateOptions, validateString } from '../validators';
import { WindowsChannel, fromTransport } from './channel';
import { readExactly, sendWhole } from './read-exactly';
import { uvCode } from './uv-code';
import { handshakeTimeoutOf, type HandshakeOptions } from './verify-peer';

export type { HandshakeOptions } from './verify-peer';
import { windowsBinding } from '../binding';
import { windowsTransport, type WinPollWrap } from './transport';

const MAGIC = Buffer.from('FDPW', 'latin1');
const VERSION = 1;
const TOKEN_BYTES = 16;
export const HELLO_BYTES = 32;
const ADDRESS = /^fdpass-win:127\.0\.0\.1:(\d{1,5}):([0-9a-f]{32})$/;
/** Most connections an offer handshakes with at once; more wait in the listener's backlog. */
const MAX_HANDSHAKES = 8;
const EAGAIN = uvCode('EAGAIN');
const ESRCH = uvCode('ESRCH');
/** Wine (ntdll's wine_get_version): its TCP table names fewer owners. */
const underWine = process.platform === 'win32' && windowsBinding.wineVersion() !== null;

/** Options of `ChannelOffer#accept()` (Windows). */
export interface AcceptOptions extends HandshakeOptions {
  /** Accept only this process (e.g. the child you started); others are turned away. */
  expectPid?: number;
}

/** The hello: "FDPW", version, 3 zero bytes, the sender's pid (uint32 LE), 4 zero bytes, the token. */
export function encodeHello(pid: number, token: Uint8Array): Buffer {
  const hello = Buffer.alloc(HELLO_BYTES);
  MAGIC.copy(hello, 0);
  hello[4] = VERSION;
  hello.writeUInt32LE(pid, 8);
  hello.set(token, 16);
  return hello;
}

/** The hello's pid if it is well formed and carries token; else why not. */
function checkHello(hello: Buffer, token: Uint8Array): number | string {
  if (!hello.subarray(0, 4).equals(MAGIC) || hello[4] !== VERSION) return 'not an fdpass Windows hello';
  if (!timingSafeEqual(hello.subarray(16, 32), token)) return 'a wrong token';
  return hello.readUInt32LE(8);
}

// Wine builds its TCP table from /proc/net/tcp, which can miss a row while other sockets come
// and go (more so on a busy machine): a row not found is looked for again, 10 ms apart.
const PEER_LOOKUPS = 20;
const PEER_LOOKUP_PAUSE_MS = 10;
const ENOMEM = uvCode('ENOMEM');

/**
 * The process at the other end of sock, from the TCP table: its pid, or -err. lookups: how
 * many tries at least (the connector makes one: under Wine its answer is always ESRCH, see
 * below); more while `until` (a Date.now() deadline) has not passed: on a loaded machine one
 * read of Wine's table can take a good part of a second.
 */
async function peerPidOf(sock: number, lookups = PEER_LOOKUPS, until = 0): Promise<number> {
  const win = windowsTransport();
  let pid = win.peerPid(sock);
  for (let i = 1; (i < lookups || Date.now() < until) && (pid === ESRCH || pid === ENOMEM); i++) {
    await new Promise((resolve) => setTimeout(resolve, PEER_LOOKUP_PAUSE_MS));
    pid = win.peerPid(sock);
  }
  return pid;
}

function readHello(sock: number, timeoutMs: number): Promise<Buffer> {
  return readExactly(sock, HELLO_BYTES, timeoutMs, 'hello');
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
    const timeout = handshakeTimeoutOf(options);
    const expectPid =
      options?.expectPid === undefined ? undefined : validateInteger(options.expectPid, 'options.expectPid', 1, 0xffff_ffff);
    if (this.#state !== 'open')
      return Promise.reject(fdpassError('ERR_FDPASS_HANDOVER_BUSY', 'fdpass: this offer was accepted or closed already'));
    this.#state = 'accepting';
    const win = windowsTransport();
    return new Promise<WindowsChannel>((resolve, reject) => {
      const handshaking = new Set<number>();
      let done = false;
      const finish = (error: Error | undefined, sock?: number, pid?: number): void => {
        if (done) return;
        done = true;
        this.#stopListening();
        for (const other of handshaking) if (other !== sock) win.closeSocket(other);
        if (error !== undefined) return reject(error);
        try {
          resolve(new WindowsChannel(fromTransport, sock, pid, options));
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
      const handshake = (sock: number): void => {
        handshaking.add(sock);
        readHello(sock, timeout).then(
          async (hello) => {
            if (done) return;
            const claimed = checkHello(hello, this.#token);
            if (typeof claimed === 'string') return turnAway(sock, claimed);
            // The connector waits twice handshakeTimeout for our reply: one for its hello
            // to come, one for this lookup.
            const actual = await peerPidOf(sock, PEER_LOOKUPS, Date.now() + timeout);
            if (done) return;
            if (actual !== claimed) return turnAway(sock, `claimed process ${claimed}, but the connection is process ${actual}'s`);
            if (expectPid !== undefined && actual !== expectPid) return turnAway(sock, `process ${actual}, not the expected ${expectPid}`);
            try {
              sendHello(sock, encodeHello(process.pid, this.#token));
            } catch (error) {
              return turnAway(sock, (error as Error).message);
            }
            handshaking.delete(sock);
            finish(undefined, sock, actual);
          },
          (error: Error) => {
            if (!done) turnAway(sock, error.message);
          },
        );
      };
      const acceptWaiting = (): void => {
        while (!done && handshaking.size < MAX_HANDSHAKES) {
          const sock = win.accept(this.#listener);
          if (sock === EAGAIN) break;
          if (sock < 0) return finish(errnoException(sock, 'accept'));
          handshake(sock);
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
 * A channel to the process that made the offer at `address` (ChannelOffer.address). The
 * offering process's id is read from the TCP table before anything is sent, and must be the
 * one its hello claims.
 */
export async function connectChannel(address: string, options?: HandshakeOptions): Promise<WindowsChannel> {
  validateString(address, 'address');
  validateOptions(options, 'options');
  const timeout = handshakeTimeoutOf(options);
  const match = ADDRESS.exec(address);
  if (match === null) throw invalidArgValue('address', 'must be a ChannelOffer address (fdpass-win:127.0.0.1:<port>:<token>)', address);
  const port = Number(match[1]);
  const token = Buffer.from(match[2]!, 'hex');
  const win = windowsTransport();
  const sock = win.connect(port);
  if (sock < 0) throw errnoException(sock, 'connect', `127.0.0.1:${port}`);
  try {
    // Read before the hello: the offer closes its listener once it has its peer.
    const offerer = await peerPidOf(sock, underWine ? 1 : PEER_LOOKUPS);
    if (offerer < 0 && !(offerer === ESRCH && underWine))
      throw errnoException(offerer, 'GetExtendedTcpTable', `no process owns 127.0.0.1:${port}`);
    sendHello(sock, encodeHello(process.pid, token));
    // The offer has handshakeTimeout to read our hello and as long again to look us up in
    // the TCP table: waiting only handshakeTimeout here timed out now and then under load
    // while the offer was still looking (a child's 'no hello within 5000 ms', nobody turned away).
    const reply = await readHello(sock, 2 * timeout);
    const claimed = checkHello(reply, token);
    if (typeof claimed === 'string') throw fdpassError('ERR_FDPASS_HANDOVER_FAILED', `fdpass: the offer answered with ${claimed}`);
    // Wine's TCP table names no owner for a listener or an accepted connection: there the
    // offer's pid is taken from its hello, which only a holder of the token can send
    // (docs/windows-channel-protocol.md says what that leaves open).
    if (offerer < 0) return new WindowsChannel(fromTransport, sock, claimed, options);
    if (claimed !== offerer) {
      throw fdpassError(
        'ERR_FDPASS_HANDOVER_FAILED',
        `fdpass: the offer claimed process ${claimed}, but port ${port} is process ${offerer}'s`,
      );
    }
    return new WindowsChannel(fromTransport, sock, offerer, options);
  } catch (error) {
    win.closeSocket(sock);
    throw error;
  }
}
