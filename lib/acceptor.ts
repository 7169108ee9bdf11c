// Accepting connections without a JS socket each: a listening socket's poll handle accepts in
// native code, no more than its holder has room for, and each accepted fd goes straight into
// the handle's ledger. There it stays until the holder hands it on or closes it; whatever is
// left is closed with the handle, even if no JS runs again. The Unix socket Server and the
// worker pool's TCP listener both accept here.
import { constants as os } from 'node:os';
import { binding, constants, type PollWrap } from './binding';
import { errnoException } from './errors';
import { FdLedger } from './fd-ledger';
import { ReceiveBudget } from './receive-budget';
import { readInetAddress, type InetAddress } from './tcp-listener';

export interface AcceptorHost {
  /**
   * `count` new connections: the newest `count` fds of the ledger, oldest first. With
   * addresses, peerAddress(i) is the i-th one's client, until this call returns.
   */
  accepted(count: number): void;
  /**
   * accept() failed: `fatal` false for one client's failure or a shortage (the acceptor pauses
   * briefly and goes on), true when the poll itself failed and accepting has stopped.
   */
  failed(error: Error, fatal: boolean): void;
}

export interface AcceptorOptions {
  /** Accept only while the holder holds fewer connections than this. */
  maxHeld: number;
  /** Record each client's address (TCP listeners), at no extra syscall. */
  withAddresses: boolean;
  /** What errors name: the socket path, or the address. */
  describe(): string;
}

const EAGAIN = -os.errno.EAGAIN;
// Out of fds or memory: the connection stays in the backlog, and the listener stays
// readable. Accepting again at once would spin; wait for something to be freed.
const RESOURCE_ERRORS = new Set([os.errno.EMFILE, os.errno.ENFILE, os.errno.ENOBUFS, os.errno.ENOMEM].map((e) => -e));
const RESOURCE_PAUSE_MS = 100;

// Accept records, shared by this thread's acceptors (each handles its batch in the callback
// that brought it): one without addresses, one with room for an address per connection.
const BATCH = constants.MAX_MESSAGES_PER_BATCH;
const { RECORD_STRIDE, RECORD_BYTES, INET_ADDRESS_BYTES } = constants;
interface AcceptBuffers {
  data: Uint8Array;
  records: Int32Array;
  slotBytes: number;
}
const acceptBuffers: { plain?: AcceptBuffers; withAddresses?: AcceptBuffers } = {};

function buffersFor(withAddresses: boolean): AcceptBuffers {
  const slotBytes = withAddresses ? INET_ADDRESS_BYTES : 1;
  const make = (): AcceptBuffers => ({
    data: new Uint8Array(BATCH * slotBytes),
    records: new Int32Array(new ArrayBuffer(4 * RECORD_STRIDE * BATCH)),
    slotBytes,
  });
  return withAddresses ? (acceptBuffers.withAddresses ??= make()) : (acceptBuffers.plain ??= make());
}

export class Acceptor {
  /** Accepted fds the holder has not handed on or closed. */
  readonly ledger: FdLedger;
  readonly #poll: PollWrap;
  readonly #budget: ReceiveBudget;
  readonly #buffers: AcceptBuffers;
  readonly #host: AcceptorHost;
  readonly #options: AcceptorOptions;
  #active = true;
  #held = 0;
  /** Whether the poll watches for connections (undefined before the first start). */
  #watching: boolean | undefined;
  #refd = true;
  #resumeTimer: NodeJS.Timeout | undefined;
  /** A stopped poll keeps nothing alive: while accepting is paused, this does. */
  #keepAlive: NodeJS.Timeout | undefined;

  /** Takes ownership of the listening socket `sock`, unless this throws. */
  constructor(sock: number, host: AcceptorHost, options: AcceptorOptions) {
    this.#host = host;
    this.#options = options;
    this.#buffers = buffersFor(options.withAddresses);
    const { data, records, slotBytes } = this.#buffers;
    this.#poll = new binding.PollWrap((status, count) => this.#onPoll(status, count), data, records, slotBytes, constants.RECEIVE_ACCEPT);
    const err = this.#poll.open(sock);
    if (err < 0) throw errnoException(err, 'uv_poll_init', options.describe());
    this.ledger = new FdLedger(this.#poll);
    this.#budget = new ReceiveBudget(options.maxHeld, Number.MAX_SAFE_INTEGER);
    this.#poll.setBudget(this.#budget.slots);
    this.update(0);
  }

  get accepting(): boolean {
    return this.#active;
  }

  /** The holder holds `held` connections now: accept while that is below maxHeld. */
  update(held: number): void {
    this.#held = held;
    if (!this.#active) return;
    // Accept no more than there is room for (the addon reads the budget at each wake-up): the
    // rest wait in the kernel's backlog. The poll changes only when room comes or goes.
    this.#budget.slots[constants.BUDGET_HELD_FDS] = held;
    const watching = this.#resumeTimer === undefined && held < this.#options.maxHeld;
    if (watching === this.#watching) return;
    this.#watching = watching;
    const err = this.#poll.start(watching, false);
    if (err < 0) this.#host.failed(errnoException(err, 'uv_poll_start', this.#options.describe()), false);
    this.#updateKeepAlive();
  }

  /** The client of the i-th connection of the batch being handled (TCP: address and port). */
  peerAddress(i: number): InetAddress | undefined {
    const { data, records, slotBytes } = this.#buffers;
    if (slotBytes < INET_ADDRESS_BYTES || records[i * RECORD_STRIDE + RECORD_BYTES] !== INET_ADDRESS_BYTES) return undefined;
    return readInetAddress(data, i * slotBytes);
  }

  ref(): void {
    this.#refd = true;
    if (this.#active) this.#poll.ref();
    this.#resumeTimer?.ref();
    this.#updateKeepAlive();
  }

  unref(): void {
    this.#refd = false;
    if (this.#active) this.#poll.unref();
    this.#resumeTimer?.unref();
    this.#updateKeepAlive();
  }

  /** Accepts no more; the socket stays open, so new clients wait in the backlog until close(). */
  stop(): void {
    if (!this.#active) return;
    this.#active = false;
    clearTimeout(this.#resumeTimer);
    this.#resumeTimer = undefined;
    this.#updateKeepAlive();
    this.#poll.start(false, false);
  }

  /** Stops, then closes the listening socket and every fd the ledger still holds. */
  close(): Promise<void> {
    this.stop();
    return new Promise<void>((resolve) => {
      if (!this.#poll.close(resolve)) resolve();
    });
  }

  #onPoll(status: number, count: number): void {
    if (!this.#active) return; // the addon closes an unclaimed batch's fds with the handle
    if (status < 0) {
      // libuv has stopped the poll: this listener accepts no more.
      this.stop();
      this.#host.failed(errnoException(status, 'poll', this.#options.describe()), true);
      return;
    }
    const { records } = this.#buffers;
    let accepted = 0;
    let failure = 0;
    for (let i = 0; i < count; i++) {
      const result = records[i * RECORD_STRIDE + RECORD_BYTES]!;
      if (result < 0) failure = result;
      else accepted++; // a failure ends the batch: the successes come first
    }
    if (accepted > 0) this.#host.accepted(accepted);
    this.ledger.ensureRoom();
    if (failure < 0) this.#acceptFailed(failure);
    this.update(this.#held);
  }

  #acceptFailed(err: number): void {
    if (err === EAGAIN || !this.#active) return; // the holder closed mid-batch
    if (RESOURCE_ERRORS.has(err)) {
      this.#resumeTimer = setTimeout(() => {
        this.#resumeTimer = undefined;
        this.update(this.#held);
      }, RESOURCE_PAUSE_MS);
      if (!this.#refd) this.#resumeTimer.unref();
      this.update(this.#held);
    }
    // Anything else (ECONNABORTED: the client gave up) is that one client's.
    this.#host.failed(errnoException(err, 'accept', this.#options.describe()), false);
  }

  #updateKeepAlive(): void {
    const wanted = this.#refd && this.#active && this.#watching === false && this.#resumeTimer === undefined;
    if (wanted && this.#keepAlive === undefined) {
      this.#keepAlive = setInterval(() => {}, 0x7fff_ffff);
    } else if (!wanted && this.#keepAlive !== undefined) {
      clearInterval(this.#keepAlive);
      this.#keepAlive = undefined;
    }
  }
}
