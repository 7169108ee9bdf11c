// WorkerPool, the master's side of a worker pool: it accepts TCP connections natively (the
// acceptor: no JS socket per connection) and hands each to one of N worker processes over
// the channel it started them with, several per message when several are ready. Workers
// serve them (pool-worker.ts). Each connection's owner, step by step:
//
//   accepted      the acceptor's ledger holds the master's fd (closed with it, even if no JS
//                 runs again)
//   sent          the worker has a copy in flight; the master keeps its own
//   acknowledged  the worker took it (a record on its acknowledgement pipe, written before
//                 the worker reads from the connection): the master closes its copy, and
//                 never hands it on
//   worker gone   the connections it had not acknowledged go to another worker; the ones it
//                 had die with it
//
// A worker that dies is taken out at once (its channel's end or its exit, whichever comes
// first) and restarted; one that keeps dying at start waits longer each time.
import type { ChildProcess, StdioOptions } from 'node:child_process';
import { availableParallelism } from 'node:os';
import EventEmitter from 'eventemitter3';
import { emitSafely } from './emit-safely';
import { Acceptor } from './acceptor';
import { holdBatchScheduling } from './batch-scheduling';
import { binding } from './binding';
import type { Channel } from './channel';
import { forkWithChannel, spawnWithChannel, type ChildWithChannel } from './child';
import { errnoException, fdpassError, invalidArgType, invalidArgValue, unsupportedPlatform, type SystemError } from './errors';
import { closeFds } from './fd';
import { MAX_FDS_PER_FRAME } from './framing';
import type { ReceivedMessage } from './message';
import {
  ACK_BYTES,
  NO_DELAY,
  REPORT_CLOSES,
  STATUS,
  TCP_CONNECTIONS,
  WORKER_ID_VARIABLE,
  decodePoolMessage,
  encodeConnections,
  encodeHello,
  type PoolMessage,
} from './pool-protocol';
import { checkListeningSocket, hasNoDelay, listenTcp, type InetAddress, type TcpListenOptions } from './tcp-listener';
import { validateBoolean, validateFunction, validateInteger, validateOneOf, validateOptions, validateString } from './validators';

/** A Node.js module to fork, or any program (its end of the channel is named by FDPASS_CHANNEL_FD). */
export type WorkerScript =
  | string
  | {
      /** The program to run. */
      command: string;
      /** Its arguments, before the pool's `args`. */
      args?: readonly string[];
    };

/** How a WorkerPool picks the worker for a connection (see {@link WorkerPoolOptions.strategy}). */
export type PoolStrategy = 'round-robin' | 'least-busy';

/** What the `data` option is told about a connection (TCP listeners only). */
export interface PoolConnectionInfo {
  /** The client's IP address. */
  remoteAddress: string | undefined;
  /** The client's port. */
  remotePort: number | undefined;
  /** 'IPv4' or 'IPv6'. */
  remoteFamily: 'IPv4' | 'IPv6' | undefined;
}

/** Options of `new WorkerPool()`. */
export interface WorkerPoolOptions {
  /** Worker processes. Default: os.availableParallelism(). */
  workers?: number;
  /**
   * 'round-robin' (default): each connection to the next worker in turn. 'least-busy': to the
   * worker with the fewest open connections (as the workers last reported) plus connections
   * on their way to it.
   */
  strategy?: PoolStrategy;
  /** Arguments for each worker. */
  args?: readonly string[];
  /** Each worker's environment (default process.env), plus FDPASS_POOL_WORKER_ID: its slot, 0 to workers - 1. */
  env?: NodeJS.ProcessEnv;
  /** As child_process.spawn's; default 'inherit'. */
  stdio?: StdioOptions;
  /**
   * Data to send with each connection (the worker sees it as `connection.data`): a string or
   * bytes, or undefined for none. A callback that throws closes that connection, and the
   * error goes to 'error' listeners.
   */
  data?: (connection: PoolConnectionInfo) => string | Uint8Array | undefined;
  /**
   * Connections the master holds at most: accepted and not yet acknowledged by a worker
   * (each worker gets no more than its share of them in flight). Beyond that, new clients
   * wait in the kernel's backlog. Default 1024.
   */
  maxPendingConnections?: number;
  /**
   * Linux: while the pool accepts, the thread that called listen() runs under SCHED_BATCH
   * (if it ran under SCHED_OTHER; back to it in close()), so that waking for new connections
   * does not preempt busy workers, and each wake-up finds more connections waiting. With a
   * new connection per request and every CPU busy, that measured 1.21 and 1.35 times the
   * requests a second; with one client at a time, 0.94 of the rate without it. The master's
   * own work waits for a CPU's turn (up to a scheduler time slice) while the CPUs are busy;
   * processes and threads it starts inherit the policy, except through spawnWithChannel (the
   * workers too) and spawnWorker, which start them under SCHED_OTHER. A thread keeps what it
   * inherited after close(): a `new Worker()` of its own, or libuv's threadpool if first used
   * (fs, dns.lookup, crypto, zlib) while the pool accepts. Default true; false leaves the
   * scheduling alone.
   */
  batchScheduling?: boolean;
}

/** listen()'s options: a TCP address to bind, or `fd`, a listening socket from elsewhere. */
export interface PoolListenOptions extends TcpListenOptions {
  /**
   * A listening TCP (or Unix stream) socket, from systemd or a server handing over. The pool
   * owns it once listen() has taken it (it closes it in close()); if listen() throws or
   * rejects before workers start, it is still yours.
   */
  fd?: number;
}

/** Options of `WorkerPool#close()`. */
export interface PoolCloseOptions {
  /**
   * Milliseconds the workers have to finish their connections and exit once told to drain;
   * those still running then are killed (SIGKILL). Default 10000.
   */
  timeout?: number;
}

/** A worker as the master sees it now. */
export interface PoolWorker {
  /** Its slot, 0 to workers - 1, kept by its replacements (FDPASS_POOL_WORKER_ID). */
  id: number;
  /** Its process id; undefined until it has started. */
  pid: number | undefined;
  /** It has joined and takes connections. */
  online: boolean;
  /** Open connections as it last reported them, plus those on their way to it. */
  connections: number;
}

/** What the 'exit' event tells of a worker that is gone. */
export interface WorkerExit {
  /** Its slot, which its replacement takes. */
  id: number;
  /** Its process id; undefined if it never started. */
  pid: number | undefined;
  /** Its exit code, or null if a signal ended it. */
  code: number | null;
  /** The signal that ended it, or null. */
  signal: NodeJS.Signals | null;
  /** Connections it had taken and had open when it last reported: they died with it. */
  heldConnections: number;
  /** Connections sent to it but not acknowledged: handed to other workers. */
  rehandedConnections: number;
  /**
   * Milliseconds until its replacement starts: 0 after a worker that lived a second or more
   * since it joined, else 100, doubled for each such death in a row, up to 10000. Undefined
   * when the pool is closing, or is starting and fails for it.
   */
  restartDelay: number | undefined;
}

/** The events a WorkerPool emits, each with its listener's arguments. */
export interface WorkerPoolEvents {
  /** A worker (a first one or a replacement) joined and takes connections. */
  online: [worker: PoolWorker];
  /** A worker is gone; unless the pool is closing, a replacement starts. */
  exit: [exit: WorkerExit];
  /** A failed accept, a worker that broke the protocol, a `data` callback that threw. */
  error: [error: Error];
  /** close() is done: every worker has exited, every fd the master held is closed. */
  close: [];
}

const DEFAULT_MAX_PENDING = 1024;
const DEFAULT_CLOSE_TIMEOUT_MS = 10_000;
// A worker that lived this long after it joined was healthy: its replacement starts at once.
const HEALTHY_LIFETIME_MS = 1000;
// A worker that dies sooner waits before its restart: this, doubled for each time in a row,
// up to the most.
const FIRST_RESTART_DELAY_MS = 100;
const MAX_RESTART_DELAY_MS = 10_000;
// A worker that exited whose channel has not ended (another process inherited its end) is
// given up on after this: its unacknowledged connections are handed on.
const EXITED_CHANNEL_GRACE_MS = 1000;
const STRATEGIES: readonly PoolStrategy[] = ['round-robin', 'least-busy'];
// While connections are in flight, the acknowledgement pipes are read at least this often
// (else whenever connections are handed out): the master's copies of acknowledged
// connections close within this, so that a worker's close(2) reaches its client.
const ACK_READ_INTERVAL_MS = 10;
// Where acknowledgement pipes are read into: a whole number of records.
const ackBuffer = Buffer.alloc(512 * ACK_BYTES);

/** A connection the master holds: its fd is in the acceptor's ledger at this entry's index. */
interface Entry {
  readonly fd: number;
  readonly data: Uint8Array | undefined;
  /** The worker it was sent to and that has not acknowledged it yet. */
  worker: Slot | undefined;
  /** The master's copy is to be closed: acknowledged by a worker (or refused by `data`). */
  done: boolean;
}

/** One place in the pool, held by one worker process at a time. */
interface Slot {
  readonly id: number;
  child: ChildProcess | undefined;
  channel: Channel | undefined;
  /** The read end of its acknowledgement pipe (-1 when it has none). */
  acks: number;
  /** starting: spawned, not yet joined; gone: taken out, waiting for its exit and channel end. */
  state: 'stopped' | 'starting' | 'online' | 'gone';
  /** Sent and not acknowledged, in the order sent. */
  inFlight: Entry[];
  /** Connections it reported taken, in all (modulo 2^32). */
  taken: number;
  /** Connections it reported open. */
  open: number;
  /** Sends not yet settled (in the kernel, or failed). */
  sending: number;
  /** This dispatch's connections for it. */
  batch: Entry[];
  exited: boolean;
  channelClosed: boolean;
  /** It broke the protocol: killed, and nothing more it says is read. */
  misbehaved: boolean;
  exit: { code: number | null; signal: NodeJS.Signals | null };
  rehanded: number;
  joinedAt: number;
  /** Deaths in a row before it had lived HEALTHY_LIFETIME_MS. */
  failures: number;
  restartTimer: NodeJS.Timeout | undefined;
  graceTimer: NodeJS.Timeout | undefined;
}

/**
 * A master that accepts TCP connections and hands each one, over a Channel, to one of N
 * worker processes (Node modules, or programs in any language), which serve it: what Node's
 * `cluster` does, with acknowledged handoff, replacement of workers that die, and a listening
 * socket from anywhere. A Node worker calls {@link serveFromPool} or {@link joinPool}. An
 * EventEmitter (eventemitter3) of {@link WorkerPoolEvents}.
 *
 * @example
 * // master.ts
 * import { WorkerPool } from 'fdpass';
 *
 * const pool = new WorkerPool('./worker.js', { workers: 2 });
 * pool.on('exit', ({ id, signal }) => console.log(`worker ${id} died (${signal}); a replacement starts`));
 * const { port } = await pool.listen({ port: 8080 }); // or { fd }: a listening socket from systemd, or a restart
 * // ...
 * await pool.close(); // stop accepting; the workers drain and exit
 *
 * // worker.js
 * import http from 'node:http';
 * import { serveFromPool } from 'fdpass';
 *
 * serveFromPool(http.createServer((request, response) => response.end(`hello from ${process.pid}`)));
 */
export class WorkerPool extends EventEmitter<WorkerPoolEvents> {
  readonly #script: WorkerScript;
  readonly #strategy: PoolStrategy;
  readonly #args: readonly string[];
  readonly #env: NodeJS.ProcessEnv | undefined;
  readonly #stdio: StdioOptions;
  readonly #dataFor: WorkerPoolOptions['data'];
  readonly #maxPending: number;
  readonly #batchScheduling: boolean;
  /** Gives the thread its scheduling back (see batchScheduling), while accepting. */
  #releaseScheduling: (() => void) | undefined;
  /** The most connections one worker may have in flight. */
  readonly #perWorker: number;
  readonly #slots: Slot[] = [];
  #state: 'new' | 'starting' | 'listening' | 'closing' | 'closed' = 'new';
  #acceptor: Acceptor | undefined;
  #address: InetAddress | undefined;
  /** What the HELLO tells workers of every connection: TCP_CONNECTIONS, NO_DELAY. */
  #connectionFlags = 0;
  /** Every connection the master holds, oldest first: entry i's fd is the ledger's i-th. */
  #entries: Entry[] = [];
  /** Connections waiting for a worker, oldest first. */
  #waiting: Entry[] = [];
  #next = 0;
  /** Reads the acknowledgement pipes while connections are in flight and nothing else does. */
  #ackTimer: NodeJS.Timeout | undefined;
  #whenAllOnline: { resolve(): void; reject(error: Error): void } | undefined;
  #whenSent: (() => void) | undefined;
  #whenExited: (() => void) | undefined;
  #closing: Promise<void> | undefined;

  constructor(script: WorkerScript, options?: WorkerPoolOptions) {
    super();
    if (process.platform === 'win32') throw unsupportedPlatform('WorkerPool');
    this.#script = validateScript(script);
    const {
      workers = availableParallelism(),
      strategy = 'round-robin',
      args = [],
      env,
      stdio = 'inherit',
      data,
      maxPendingConnections = DEFAULT_MAX_PENDING,
      batchScheduling = true,
    } = validateOptions(options, 'options');
    validateInteger(workers, 'options.workers', 1, 1024);
    this.#strategy = validateOneOf(strategy, 'options.strategy', STRATEGIES);
    this.#args = validateStrings(args, 'options.args');
    if (env !== undefined) validateOptions(env, 'options.env');
    this.#env = env;
    this.#stdio = stdio;
    this.#dataFor = data === undefined ? undefined : validateFunction<NonNullable<WorkerPoolOptions['data']>>(data, 'options.data');
    this.#maxPending = validateInteger(maxPendingConnections, 'options.maxPendingConnections', 1, 1 << 20);
    this.#perWorker = Math.max(1, Math.ceil(this.#maxPending / workers));
    this.#batchScheduling = validateBoolean(batchScheduling, 'options.batchScheduling');
    for (let id = 0; id < workers; id++) this.#slots.push(newSlot(id));
  }

  /**
   * Binds (or takes `fd`), starts the workers, and resolves with the address once every
   * worker has joined; then accepting begins. Rejects with ERR_FDPASS_WORKER_EXITED, and
   * closes the pool, if a worker exits before it joins (a script that fails at start).
   */
  async listen(options?: PoolListenOptions): Promise<InetAddress | undefined> {
    const { fd, ...tcp } = validateOptions(options, 'options');
    if (fd !== undefined && Object.values(tcp).some((value) => value !== undefined))
      throw invalidArgValue('options', 'takes fd, a listening socket, or the address to bind (port, host...), not both', options);
    if (this.#state !== 'new') {
      if (this.#state === 'closing' || this.#state === 'closed') throw poolClosed();
      const error = new Error('listen() was called already') as Error & { code: string };
      error.code = 'ERR_SERVER_ALREADY_LISTEN';
      throw error;
    }
    this.#state = 'starting';
    let listener: { fd: number; address: InetAddress | undefined };
    try {
      listener = fd === undefined ? await listenTcp(tcp) : { fd, address: checkListeningSocket(fd, 'options.fd') };
    } catch (error) {
      if (this.#state === 'starting') this.#state = 'new';
      throw error;
    }
    try {
      if (this.#state !== 'starting') throw poolClosed(); // close() came while binding
      this.#acceptor = this.#accept(listener.fd, listener.address);
    } catch (error) {
      if (this.#state === 'starting') this.#state = 'new';
      if (fd === undefined) closeFds([listener.fd]); // one of ours: a caller's fd is still the caller's
      throw error;
    }
    // From here the pool owns the socket, and closes it in close().
    this.#address = listener.address;
    if (listener.address !== undefined) this.#connectionFlags = TCP_CONNECTIONS | (hasNoDelay(listener.fd) ? NO_DELAY : 0);
    const allOnline = new Promise<void>((resolve, reject) => (this.#whenAllOnline = { resolve, reject }));
    for (const slot of this.#slots) this.#start(slot);
    await allOnline;
    return this.#address;
  }

  /** The address listened on, as net.Server.address() (null before listen(), or for a Unix socket). */
  address(): InetAddress | null {
    return this.#address === undefined ? null : { ...this.#address };
  }

  /** The workers as the master sees them now (it reads what they have written to it first). */
  get workers(): PoolWorker[] {
    if (this.#state === 'listening') for (const slot of this.#slots) this.#readAcks(slot);
    return this.#slots.map((slot) => describeSlot(slot));
  }

  /** Connections the master holds: accepted and not yet acknowledged by a worker. */
  get pendingConnections(): number {
    return this.#entries.length;
  }

  /**
   * Stops accepting (new clients are refused once the socket closes), lets every connection
   * already sent reach its worker, then tells each worker to drain (its channel ends: it
   * takes no more, finishes what it serves, and exits). Connections no worker took are closed.
   * Resolves once every worker has exited, killing those still running after `timeout` ms.
   */
  close(options?: PoolCloseOptions): Promise<void> {
    const { timeout = DEFAULT_CLOSE_TIMEOUT_MS } = validateOptions(options, 'options');
    validateInteger(timeout, 'options.timeout', 0, 0x7fff_ffff);
    this.#closing ??= this.#shutdown(timeout);
    return this.#closing;
  }

  async #shutdown(timeout: number): Promise<void> {
    const deadline = Date.now() + timeout;
    this.#state = 'closing';
    this.#whenAllOnline?.reject(poolClosed());
    this.#whenAllOnline = undefined;
    for (const slot of this.#slots) {
      clearTimeout(slot.restartTimer);
      slot.restartTimer = undefined;
    }
    clearTimeout(this.#ackTimer);
    this.#acceptor?.stop();
    this.#releaseScheduling?.();
    this.#releaseScheduling = undefined;
    // A send still queued in a channel would be lost when it closes: let them reach the kernel.
    await this.#until(
      () => this.#slots.every((slot) => slot.sending === 0),
      deadline,
      (wake) => (this.#whenSent = wake),
    );
    // Each worker sees its channel end: it takes no more, drains and exits.
    const channelsClosed = this.#slots.map((slot) => slot.channel?.close());
    const acceptor = this.#acceptor;
    this.#acceptor = undefined;
    this.#entries = [];
    this.#waiting = [];
    await Promise.all([...channelsClosed, acceptor?.close()]);
    const allExited = (): boolean => this.#slots.every((slot) => slot.child === undefined);
    await this.#until(allExited, deadline, (wake) => (this.#whenExited = wake));
    for (const slot of this.#slots) slot.child?.kill('SIGKILL');
    await this.#until(allExited, Infinity, (wake) => (this.#whenExited = wake));
    this.#state = 'closed';
    emitSafely(this, 'close');
  }

  /** Resolves when done() holds (checked whenever wake is called), or at the deadline. */
  async #until(done: () => boolean, deadline: number, setWake: (wake: (() => void) | undefined) => void): Promise<void> {
    if (done()) return;
    await new Promise<void>((resolve) => {
      const timer = deadline === Infinity ? undefined : setTimeout(resolve, Math.max(0, deadline - Date.now()));
      setWake(() => {
        if (!done()) return;
        clearTimeout(timer);
        resolve();
      });
    });
    setWake(undefined);
  }

  #start(slot: Slot): void {
    slot.restartTimer = undefined;
    if (this.#state === 'closing' || this.#state === 'closed') return;
    const env = { ...(this.#env ?? process.env), [WORKER_ID_VARIABLE]: String(slot.id) };
    const pipe = new Int32Array(2);
    const err = binding.pipe(pipe);
    if (err < 0) {
      this.#emitError(errnoException(err, 'pipe'));
      this.#scheduleRestart(slot);
      return;
    }
    const [acks, ackWriteEnd] = pipe as unknown as [number, number];
    let started: ChildWithChannel;
    try {
      const script = this.#script;
      started =
        typeof script === 'string'
          ? forkWithChannel(script, this.#args, { env, stdio: this.#stdio })
          : spawnWithChannel(script.command, [...(script.args ?? []), ...this.#args], { env, stdio: this.#stdio });
    } catch (error) {
      closeFds(pipe);
      this.#emitError(error as Error);
      this.#scheduleRestart(slot);
      return;
    }
    const { child, channel } = started;
    Object.assign(slot, { child, channel, acks, state: 'starting' } satisfies Partial<Slot>, processState());
    channel.on('message', (message) => this.#onMessage(slot, channel, message));
    channel.on('error', (error) => {
      // A worker that dies with messages unread leaves ECONNRESET: its 'exit' says it all.
      if ((error as SystemError).code === 'ECONNRESET') return;
      this.#emitError(new Error(`worker ${slot.id} (pid ${child.pid}): ${error.message}`, { cause: error }));
    });
    channel.once('close', () => this.#onChannelClosed(slot, channel));
    child.once('exit', (code, signal) => this.#onExit(slot, child, code, signal));
    child.once('error', (error) => {
      // A program that could not be started: no 'exit' may follow.
      this.#emitError(error);
      if (child.pid === undefined) this.#onExit(slot, child, null, null);
    });
    const flags = (this.#strategy === 'least-busy' ? REPORT_CLOSES : 0) | this.#connectionFlags;
    // The worker gets its pipe's write end with the HELLO; ours goes once the kernel has it.
    // (A worker gone at once ends its channel: the send fails, nothing to do.)
    const sent = (): void => closeFds([ackWriteEnd]);
    channel.send({ data: encodeHello(flags), fds: [ackWriteEnd] }).then(sent, sent);
  }

  #onMessage(slot: Slot, channel: Channel, message: ReceivedMessage): void {
    message.close(); // workers send no fds
    // Read even from a worker taken out: its last acknowledgements come before its channel's end.
    if (slot.channel !== channel || slot.misbehaved) return;
    let status: PoolMessage;
    try {
      status = decodePoolMessage(message.data);
    } catch (error) {
      this.#misbehaved(slot, (error as Error).message);
      return;
    }
    if (status.type !== STATUS) {
      this.#misbehaved(slot, `sent a message of type ${status.type === 'unknown' ? status.code : status.type}, not STATUS`);
      return;
    }
    this.#acknowledged(slot, status.taken, status.open);
    if (slot.state === 'starting') this.#joined(slot);
    this.#dispatch();
  }

  /**
   * What a worker says it has taken (in all, modulo 2^32) and has open, from a STATUS or its
   * pipe: the master's copies of what it acknowledged are closed. A report older than one
   * already read (the pipe and the channel are read at different times) is ignored.
   */
  #acknowledged(slot: Slot, taken: number, open: number): void {
    if (slot.misbehaved) return;
    const acknowledged = (taken - slot.taken) >>> 0;
    if (acknowledged >= 0x8000_0000) return; // behind what was read already
    if (acknowledged > slot.inFlight.length) {
      this.#misbehaved(slot, `acknowledged ${acknowledged} connections, but ${slot.inFlight.length} were on their way to it`);
      return;
    }
    slot.taken = taken;
    slot.open = open;
    if (acknowledged === 0) return;
    for (const entry of slot.inFlight.splice(0, acknowledged)) {
      entry.worker = undefined;
      entry.done = true;
    }
    this.#closeDone();
  }

  /** Reads what the worker has written to its acknowledgement pipe: the last record says it all. */
  #readAcks(slot: Slot): void {
    if (slot.acks < 0) return;
    let taken = -1;
    let open = 0;
    for (;;) {
      const n = binding.read(slot.acks, ackBuffer, 0, ackBuffer.length);
      if (n <= 0) break; // nothing more (EAGAIN), or the worker's end is closed
      // Records are written whole, so a read ends on a record's end.
      const last = n - (n % ACK_BYTES) - ACK_BYTES;
      if (last >= 0) {
        taken = ackBuffer.readUInt32LE(last);
        open = ackBuffer.readUInt32LE(last + 4);
      }
      if (n < ackBuffer.length) break;
    }
    if (taken >= 0) this.#acknowledged(slot, taken, open);
  }

  #joined(slot: Slot): void {
    slot.state = 'online';
    slot.joinedAt = Date.now();
    emitSafely(this, 'online', describeSlot(slot));
    if (this.#whenAllOnline && this.#slots.every((s) => s.state === 'online')) {
      this.#whenAllOnline.resolve();
      this.#whenAllOnline = undefined;
      this.#state = 'listening';
      if (this.#batchScheduling) this.#releaseScheduling = holdBatchScheduling();
      this.#dispatch(); // and accepting begins
    }
  }

  /** The accept loop over the listening socket `fd`, which it owns unless this throws; idle until the workers join. */
  #accept(fd: number, address: InetAddress | undefined): Acceptor {
    const acceptor = new Acceptor(
      fd,
      {
        accepted: (count) => this.#accepted(count),
        failed: (error, fatal) => {
          this.#emitError(error);
          if (fatal) void this.close();
        },
      },
      {
        maxHeld: this.#maxPending,
        withAddresses: this.#dataFor !== undefined && address !== undefined,
        describe: () => describeListener(address, fd),
      },
    );
    // As if it held all it may: it accepts nobody until the workers have joined (#dispatch).
    acceptor.update(this.#maxPending);
    return acceptor;
  }

  /** The newest `count` fds of the ledger are new connections. */
  #accepted(count: number): void {
    const acceptor = this.#acceptor!;
    const ledger = acceptor.ledger;
    const base = ledger.size - count;
    let refused = false;
    for (let i = 0; i < count; i++) {
      const data = this.#dataFor === undefined ? undefined : this.#connectionData(i);
      // A connection the data callback refused (it threw) is closed.
      const entry: Entry = { fd: ledger.fdAt(base + i), data: data ?? undefined, worker: undefined, done: data === null };
      this.#entries.push(entry);
      if (entry.done) refused = true;
      else this.#waiting.push(entry);
    }
    if (refused) this.#closeDone();
    this.#dispatch();
  }

  /** What the `data` option says for the batch's i-th connection: bytes, undefined, or null if it threw. */
  #connectionData(i: number): Uint8Array | undefined | null {
    const address = this.#acceptor!.peerAddress(i);
    try {
      const value = this.#dataFor!({ remoteAddress: address?.address, remotePort: address?.port, remoteFamily: address?.family });
      if (value === undefined || value instanceof Uint8Array) return value;
      if (typeof value === 'string') return Buffer.from(value);
      throw invalidArgType('the value options.data returned', 'a string, a Uint8Array or undefined', value);
    } catch (error) {
      this.#emitError(error as Error);
      return null;
    }
  }

  /** Hands the waiting connections to workers, one message per worker. */
  #dispatch(): void {
    if (this.#state !== 'listening') return; // no connections before, none handed out after
    // What the workers have taken since: room in flight, and their open connections for least-busy.
    for (const slot of this.#slots) if (slot.inFlight.length > 0 || this.#strategy === 'least-busy') this.#readAcks(slot);
    const waiting = this.#waiting;
    if (waiting.length > 0) {
      let handed = 0;
      for (; handed < waiting.length; handed++) {
        const slot = this.#pick();
        if (slot === undefined) break;
        const entry = waiting[handed]!;
        entry.worker = slot;
        slot.inFlight.push(entry);
        slot.batch.push(entry);
      }
      if (handed > 0) {
        waiting.splice(0, handed);
        for (const slot of this.#slots) if (slot.batch.length > 0) this.#send(slot);
      }
    }
    this.#acceptor!.update(this.#entries.length);
    if (this.#ackTimer === undefined && this.#slots.some((slot) => slot.inFlight.length > 0)) {
      this.#ackTimer = setTimeout(() => {
        this.#ackTimer = undefined;
        this.#dispatch();
      }, ACK_READ_INTERVAL_MS);
    }
  }

  /** The next worker by the strategy, among those online with room in flight. */
  #pick(): Slot | undefined {
    const slots = this.#slots;
    const n = slots.length;
    let best: Slot | undefined;
    let bestAt = 0;
    for (let k = 0; k < n; k++) {
      const at = (this.#next + k) % n;
      const slot = slots[at]!;
      if (slot.state !== 'online' || slot.inFlight.length >= this.#perWorker) continue;
      if (this.#strategy === 'round-robin') {
        best = slot;
        bestAt = at;
        break;
      }
      if (best === undefined || slot.open + slot.inFlight.length < best.open + best.inFlight.length) {
        best = slot;
        bestAt = at;
      }
    }
    if (best !== undefined) this.#next = (bestAt + 1) % n;
    return best;
  }

  #send(slot: Slot): void {
    const batch = slot.batch;
    slot.batch = [];
    const channel = slot.channel!;
    for (let start = 0; start < batch.length; start += MAX_FDS_PER_FRAME) {
      const part = batch.length <= MAX_FDS_PER_FRAME ? batch : batch.slice(start, start + MAX_FDS_PER_FRAME);
      const data = this.#dataFor === undefined ? undefined : part.map((entry) => entry.data);
      const fds = part.map((entry) => entry.fd);
      slot.sending++;
      const settled = (): void => {
        slot.sending--;
        this.#whenSent?.();
      };
      // A send that fails (the worker died) leaves its connections unacknowledged: they are
      // handed on when the channel closes.
      channel.send({ data: encodeConnections(part.length, data), fds }).then(settled, settled);
    }
  }

  /** Closes the master's copies of the connections marked done, and forgets them. */
  #closeDone(): void {
    const entries = this.#entries;
    const ledger = this.#acceptor?.ledger;
    if (ledger === undefined) return;
    // Runs of done entries, from the newest back, so that the offsets still to close stay valid.
    let kept = entries.length;
    for (let end = entries.length; end > 0;) {
      if (!entries[end - 1]!.done) {
        end--;
        continue;
      }
      let start = end - 1;
      while (start > 0 && entries[start - 1]!.done) start--;
      ledger.close(start, end - start);
      kept -= end - start;
      end = start;
    }
    if (kept !== entries.length) this.#entries = entries.filter((entry) => !entry.done);
  }

  /** A worker that broke the protocol is killed: what it acknowledged cannot be trusted. */
  #misbehaved(slot: Slot, what: string): void {
    this.#emitError(fdpassError('ERR_FDPASS_BAD_MESSAGE', `worker ${slot.id} (pid ${slot.child?.pid}) ${what}: killing it`));
    slot.misbehaved = true;
    this.#takeOut(slot);
    slot.child?.kill('SIGKILL');
  }

  #onChannelClosed(slot: Slot, channel: Channel): void {
    if (slot.channel !== channel) return;
    slot.channelClosed = true;
    this.#takeOut(slot);
    // The worker wrote its acknowledgements before its channel ended (the STATUS messages
    // among them were read before the end): what is still in flight after reading the pipe
    // never reached its code, and goes to another worker.
    this.#readAcks(slot);
    const unacknowledged = slot.inFlight.splice(0);
    if (unacknowledged.length > 0 && this.#state !== 'closing' && this.#state !== 'closed') {
      slot.rehanded = unacknowledged.length;
      for (const entry of unacknowledged) entry.worker = undefined;
      this.#waiting.unshift(...unacknowledged);
    }
    this.#dispatch();
    if (slot.exited) this.#finish(slot);
  }

  #onExit(slot: Slot, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (slot.child !== child || slot.exited) return;
    slot.exited = true;
    slot.exit = { code, signal };
    this.#takeOut(slot);
    this.#readAcks(slot); // for what it held as it died
    if (slot.channelClosed) {
      this.#finish(slot);
    } else {
      // The channel normally ends at once with the process. If another process holds the
      // worker's end, stop waiting for it.
      const channel = slot.channel;
      slot.graceTimer = setTimeout(() => void channel?.close(), EXITED_CHANNEL_GRACE_MS);
    }
  }

  /** Takes the worker out of the rotation at once. */
  #takeOut(slot: Slot): void {
    if (slot.state === 'starting' || slot.state === 'online') slot.state = 'gone';
  }

  /** The process has exited and its channel is closed: report, and start a replacement. */
  #finish(slot: Slot): void {
    clearTimeout(slot.graceTimer);
    const joined = slot.joinedAt > 0;
    const lived = joined ? Date.now() - slot.joinedAt : 0;
    slot.failures = lived >= HEALTHY_LIFETIME_MS ? 0 : slot.failures + 1;
    // listen() fails rather than restart a script that does not start.
    const startFailed = this.#whenAllOnline !== undefined && !joined;
    const exit: WorkerExit = {
      id: slot.id,
      pid: slot.child?.pid,
      ...slot.exit,
      heldConnections: slot.open,
      rehandedConnections: slot.rehanded,
      restartDelay: startFailed ? undefined : this.#scheduleRestart(slot),
    };
    slot.child = undefined;
    slot.channel = undefined;
    closeFds([slot.acks]);
    slot.acks = -1;
    slot.state = 'stopped';
    slot.open = 0;
    emitSafely(this, 'exit', exit);
    this.#whenExited?.();
    if (startFailed) {
      const starting = this.#whenAllOnline!;
      this.#whenAllOnline = undefined;
      const error = fdpassError(
        'ERR_FDPASS_WORKER_EXITED',
        `worker ${slot.id} (pid ${exit.pid}) exited before it joined the pool (${describeExit(slot.exit)}); the pool is closed`,
      );
      void this.close().then(() => starting.reject(error));
    }
  }

  /** Starts a replacement after the slot's backoff: the delay, or undefined if the pool is closing. */
  #scheduleRestart(slot: Slot): number | undefined {
    if (this.#state !== 'listening' && this.#state !== 'starting') return undefined;
    const delay = slot.failures === 0 ? 0 : Math.min(MAX_RESTART_DELAY_MS, FIRST_RESTART_DELAY_MS * 2 ** (slot.failures - 1));
    slot.restartTimer = setTimeout(() => this.#start(slot), delay);
    return delay;
  }

  #emitError(error: Error): void {
    if (this.listenerCount('error') > 0) emitSafely(this, 'error', error);
  }
}

function newSlot(id: number): Slot {
  return {
    id,
    child: undefined,
    channel: undefined,
    acks: -1,
    state: 'stopped',
    sending: 0,
    batch: [],
    failures: 0,
    restartTimer: undefined,
    graceTimer: undefined,
    ...processState(),
  };
}

/** What a slot knows of one worker process: each replacement starts afresh. */
function processState(): Pick<
  Slot,
  'inFlight' | 'taken' | 'open' | 'exited' | 'channelClosed' | 'misbehaved' | 'exit' | 'rehanded' | 'joinedAt'
> {
  return {
    inFlight: [],
    taken: 0,
    open: 0,
    exited: false,
    channelClosed: false,
    misbehaved: false,
    exit: { code: null, signal: null },
    rehanded: 0,
    joinedAt: 0,
  };
}

function describeSlot(slot: Slot): PoolWorker {
  return { id: slot.id, pid: slot.child?.pid, online: slot.state === 'online', connections: slot.open + slot.inFlight.length };
}

function describeExit({ code, signal }: Slot['exit']): string {
  return signal !== null ? `signal ${signal}` : code !== null ? `code ${code}` : 'it could not be started';
}

function describeListener(address: InetAddress | undefined, fd: number): string {
  if (address === undefined) return `fd ${fd}`;
  return address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
}

function poolClosed(): Error {
  return fdpassError('ERR_FDPASS_POOL_CLOSED', 'the worker pool is closed');
}

function validateScript(script: unknown): WorkerScript {
  if (typeof script === 'string') return script;
  if (typeof script === 'object' && script !== null && typeof (script as { command?: unknown }).command === 'string') {
    const { command, args = [] } = script as { command: string; args?: unknown };
    return { command, args: validateStrings(args, 'script.args') };
  }
  throw invalidArgType('script', 'a module path (string) or { command, args }', script);
}

/** A copy of value, an array of strings. */
function validateStrings(value: unknown, name: string): string[] {
  if (!Array.isArray(value)) throw invalidArgType(name, 'an array of strings', value);
  return value.map((item: unknown, i) => validateString(item, `${name}[${i}]`));
}
