// Children and worker threads that start with a Channel to their parent.
//
// A child process gets its end of a new socketpair on an fd of its own (the one after its
// stdio: 3 with the usual three), named by the environment variable FDPASS_CHANNEL_FD, in
// blocking mode (what IO::FDPass, Python's socket.recv_fds and C peers expect; a Node child's
// Channel makes it non-blocking again). Node's IPC pipe is not used: it reads from its socket.
//
// A worker thread shares the process's fd table, so its end is a number the parent keeps
// until the worker claims it: the claim is one atomic flag in shared memory, and whichever
// side sets it first owns the fd (the worker's Channel, or the parent, which closes it when a
// worker that never claimed it exits).
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { Worker, getEnvironmentData, setEnvironmentData, type WorkerOptions } from 'node:worker_threads';
import { withoutBatchScheduling } from './batch-scheduling';
import { binding } from './binding';
import { Channel, type ChannelOptions } from './channel';
import { errnoException, fdpassError, invalidArgType } from './errors';
import { socketpair } from './socketpair';
import { validateOptions, validateString } from './validators';

/** The environment variable that tells a child which fd is its channel to the parent. */
export const CHANNEL_FD_VARIABLE = 'FDPASS_CHANNEL_FD';

/** The worker's claim on its end: UNCLAIMED until the worker or the parent takes it. */
const UNCLAIMED = 0;
const CLAIMED_BY_WORKER = 1;
const CLOSED_BY_PARENT = 2;
const WORKER_CHANNEL_KEY = 'fdpass:parent-channel';

interface WorkerChannelEnd {
  fd: number;
  claim: Int32Array;
}

/** Options of {@link spawnWithChannel}: child_process.spawn's, and the channel's. */
export interface SpawnWithChannelOptions extends SpawnOptions {
  /** Options for the parent's end (budgets, limits). */
  channel?: ChannelOptions;
}

/** What {@link spawnWithChannel} and {@link forkWithChannel} return. */
export interface ChildWithChannel {
  /** The child process, as child_process.spawn returns it. */
  child: ChildProcess;
  /** The parent's end; the child's is the fd named by FDPASS_CHANNEL_FD in its environment. */
  channel: Channel;
}

/**
 * Starts a child process (any program, in any language) with a Channel to it, like
 * child_process.spawn. The child finds its end on the fd that follows its stdio (3 when stdio
 * has the usual three entries) and in `process.env.FDPASS_CHANNEL_FD`; a Node child opens it
 * with `parentChannel()`. The child's end is in blocking mode, as Perl's IO::FDPass and
 * Python's socket.recv_fds need.
 *
 * The parent's copy of the child's end is closed before this returns, so the channel sees
 * `'end'` when the child (and whatever it handed its end to) exits. If the program cannot be
 * started, `child` emits `'error'` (as with spawn) and the channel ends.
 *
 * @example
 * const { child, channel } = spawnWithChannel('python3', ['worker.py'], { stdio: 'inherit' });
 * await channel.send(fileHandle);
 */
export function spawnWithChannel(command: string, args: readonly string[] = [], options: SpawnWithChannelOptions = {}): ChildWithChannel {
  validateString(command, 'command');
  validateOptions(options, 'options');
  const { channel: channelOptions, ...spawnOptions } = options;
  const stdio = stdioEntries(spawnOptions.stdio);
  const [mine, theirs] = socketpair();
  let channel: Channel | undefined;
  try {
    const err = binding.setNonBlocking(theirs, false);
    if (err < 0) throw errnoException(err, 'fcntl');
    channel = new Channel(mine, channelOptions);
    // A WorkerPool's master may run under SCHED_BATCH: the child starts under SCHED_OTHER.
    const child = withoutBatchScheduling(() =>
      spawn(command, args, {
        ...spawnOptions,
        stdio: [...stdio, theirs],
        env: { ...(spawnOptions.env ?? process.env), [CHANNEL_FD_VARIABLE]: String(stdio.length) },
      }),
    );
    return { child, channel };
  } catch (error) {
    if (channel) void channel.close();
    else binding.close(mine);
    throw error;
  } finally {
    // The child has its copy now (or never will): ours would keep the channel from ending.
    binding.close(theirs);
  }
}

/** Options of {@link forkWithChannel}: {@link SpawnWithChannelOptions}, and Node's own options for the child. */
export interface ForkWithChannelOptions extends SpawnWithChannelOptions {
  /**
   * Node's own options for the child, as with fork. Default: this process's execArgv. A child
   * started under another uid may be unable to read the loaders they name (tsx's, in a checkout
   * only root can read): give it `[]` and a plain JavaScript module.
   */
  execArgv?: readonly string[];
}

/**
 * Starts `modulePath` in a new Node.js process, with this process's execArgv unless options
 * give others (so a parent run under tsx starts a TypeScript child the same way), and a
 * Channel to it: the child calls `parentChannel()`. Node's own IPC pipe is not opened.
 * @example
 * // Root: opens what the worker may not, and hands it down.
 * const { channel } = forkWithChannel('/opt/myapp/worker.js', [], { uid: 65534, gid: 65534, execArgv: [] });
 * await channel.send({ fds: [listener, secret] }, { close: true });
 *
 * // The worker, as uid 65534:
 * const [listenerFd, secretFd] = (await parentChannel().recv()).fds;
 */
export function forkWithChannel(modulePath: string, args: readonly string[] = [], options: ForkWithChannelOptions = {}): ChildWithChannel {
  validateString(modulePath, 'modulePath');
  const { execArgv = process.execArgv, ...spawnOptions } = validateOptions(options, 'options');
  if (!Array.isArray(execArgv)) throw invalidArgType('options.execArgv', 'an array of strings', execArgv);
  const nodeOptions = execArgv.map((arg: unknown, i) => validateString(arg, `options.execArgv[${i}]`));
  return spawnWithChannel(process.execPath, [...nodeOptions, modulePath, ...args], spawnOptions);
}

/** What {@link spawnWorker} returns. */
export interface WorkerWithChannel {
  /** The worker thread, as `new Worker()` makes it. */
  worker: Worker;
  /** The parent's end; the worker opens its own with `parentChannel()`. */
  channel: Channel;
}

/** Options of {@link spawnWorker}: worker_threads.Worker's, and the channel's. */
export interface SpawnWorkerOptions extends WorkerOptions {
  /** Options for the parent's end (budgets, limits). */
  channel?: ChannelOptions;
}

/**
 * Starts a worker thread with a Channel to it, like `new Worker(filename, options)`. The
 * worker calls `parentChannel()` to open its end. If the worker exits without doing so, the
 * parent closes that end. (A Channel's own fd cannot be handed to a worker by number: the fd
 * belongs to the Channel, and `new Channel(fd)` in the worker refuses it with EEXIST.)
 */
export function spawnWorker(filename: string | URL, options: SpawnWorkerOptions = {}): WorkerWithChannel {
  validateOptions(options, 'options');
  const { channel: channelOptions, ...workerOptions } = options;
  const [mine, theirs] = socketpair();
  const end: WorkerChannelEnd = { fd: theirs, claim: new Int32Array(new SharedArrayBuffer(4)) };
  let channel: Channel | undefined;
  let worker: Worker;
  try {
    channel = new Channel(mine, channelOptions);
    // Threads inherit the policy too, and keep it after the pool's close(): see spawnWithChannel.
    worker = withEnvironmentData(WORKER_CHANNEL_KEY, end, () => withoutBatchScheduling(() => new Worker(filename, workerOptions)));
  } catch (error) {
    if (channel) void channel.close();
    else binding.close(mine);
    binding.close(theirs);
    throw error;
  }
  worker.once('exit', () => {
    if (Atomics.compareExchange(end.claim, 0, UNCLAIMED, CLOSED_BY_PARENT) === UNCLAIMED) binding.close(theirs);
  });
  return { worker, channel };
}

/**
 * Opens the Channel a parent started this process (spawnWithChannel, forkWithChannel) or this
 * worker thread (spawnWorker) with. Once: a second call, or one in a process started without
 * a channel, throws ERR_FDPASS_NO_PARENT_CHANNEL. In a child process the fd is made
 * close-on-exec and FDPASS_CHANNEL_FD is removed from the environment, so this process's own
 * children neither inherit the socket nor mistake it for theirs.
 */
export function parentChannel(options?: ChannelOptions): Channel {
  const end = getEnvironmentData(WORKER_CHANNEL_KEY) as WorkerChannelEnd | undefined;
  if (end !== undefined) return claimWorkerEnd(end, options);
  const fd = channelFdFromEnvironment();
  const err = binding.setCloseOnExec(fd, true);
  if (err < 0) throw errnoException(err, 'fcntl', `${CHANNEL_FD_VARIABLE}=${fd}`);
  const channel = new Channel(fd, options);
  delete process.env[CHANNEL_FD_VARIABLE];
  return channel;
}

function claimWorkerEnd(end: WorkerChannelEnd, options: ChannelOptions | undefined): Channel {
  // This thread's own workers must not see our end (they would race us for it).
  setEnvironmentData(WORKER_CHANNEL_KEY, undefined);
  if (Atomics.compareExchange(end.claim, 0, UNCLAIMED, CLAIMED_BY_WORKER) !== UNCLAIMED) {
    throw fdpassError('ERR_FDPASS_NO_PARENT_CHANNEL', 'this worker has already opened its parent channel');
  }
  try {
    return new Channel(end.fd, options);
  } catch (error) {
    binding.close(end.fd);
    throw error;
  }
}

function channelFdFromEnvironment(): number {
  const value = process.env[CHANNEL_FD_VARIABLE];
  if (value === undefined) {
    throw fdpassError(
      'ERR_FDPASS_NO_PARENT_CHANNEL',
      `this process has no parent channel (${CHANNEL_FD_VARIABLE} is not set: start it with spawnWithChannel(), or it was opened already)`,
    );
  }
  if (!/^(0|[1-9]\d{0,8})$/.test(value)) {
    throw fdpassError('ERR_FDPASS_NO_PARENT_CHANNEL', `${CHANNEL_FD_VARIABLE} must be an fd number, not '${value.slice(0, 20)}'`);
  }
  return Number(value);
}

/** spawn's stdio as an array of at least three entries: the channel's fd goes after them. */
function stdioEntries(stdio: SpawnOptions['stdio']): Exclude<SpawnOptions['stdio'], string | undefined> {
  if (stdio === undefined) return ['pipe', 'pipe', 'pipe'];
  if (typeof stdio === 'string') return [stdio, stdio, stdio];
  const entries = [...stdio];
  while (entries.length < 3) entries.push(undefined);
  return entries;
}

/** Runs create() with key set in the environment data new workers copy, then restores it. */
function withEnvironmentData<T>(key: string, value: WorkerChannelEnd, create: () => T): T {
  const previous = getEnvironmentData(key);
  setEnvironmentData(key, value);
  try {
    return create();
  } finally {
    setEnvironmentData(key, previous);
  }
}
