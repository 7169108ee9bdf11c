// A channel's send side: each send goes out at once when nothing waits before it; else it
// queues, in call order, until the socket is writable again (EAGAIN) or the kernel has room
// again (ETOOMANYREFS, ENOBUFS: a short pause). Queued bare fds go out a sendmmsg at a time.
import { constants as os } from 'node:os';
import { binding, constants } from './binding';
import { errnoException } from './errors';
import { closeHanded, type Outgoing } from './outgoing';

interface PendingSend {
  outgoing: Outgoing;
  resolve(): void;
  reject(error: Error): void;
}

/** What the send side needs from the channel that owns it. */
export interface SendQueueHost {
  /** Whether the queue wants the socket watched for writable, or keeps the process alive, changed. */
  changed(): void;
}

const EAGAIN = -os.errno.EAGAIN;
const EWOULDBLOCK = -os.errno.EWOULDBLOCK;
// The kernel is short of something that frees over time, with nothing to signal it: too many
// of this user's fds in flight (the peer has not taken them yet), or socket buffer memory.
// libuv treats ENOBUFS like EAGAIN; a pause instead of a writable wait cannot spin.
const SHORT_OF_ROOM = new Set([-constants.ETOOMANYREFS, -os.errno.ENOBUFS]);
const ROOM_RETRY_MS = 5;
// Most messages one writable wake-up sends before it lets the rest of the loop run, as
// libuv bounds its reads: a long backlog to a fast reader must not starve other handles.
const MAX_SENDS_PER_WAKEUP = 1024;

// A batch of bare fds for one sendmmsg: [dataOffset, dataLength, fdsOffset, nfds, sent].
const BATCH = constants.MAX_MESSAGES_PER_BATCH;
const zeroByte = new Uint8Array(1);
const bareBatch = { records: new Int32Array(5 * BATCH), fds: new Int32Array(BATCH) };
for (let i = 0; i < BATCH; i++) bareBatch.records.set([0, 1, i, 1, 0], 5 * i);

function isWouldBlock(err: number): boolean {
  return err === EAGAIN || err === EWOULDBLOCK;
}

export class SendQueue {
  readonly #fd: number;
  readonly #host: SendQueueHost;
  readonly #queue: PendingSend[] = [];
  #retryTimer: NodeJS.Timeout | undefined;
  #refd = true;
  /** Why the queue takes no more sends: the channel closed, or its fd is gone. */
  #closedBy: Error | undefined;

  constructor(fd: number, host: SendQueueHost) {
    this.#fd = fd;
    this.#host = host;
  }

  get length(): number {
    return this.#queue.length;
  }

  /** Whether the socket must be watched for writable: sends wait, and no pause is under way. */
  get wantsWritable(): boolean {
    return this.#queue.length > 0 && this.#retryTimer === undefined;
  }

  /** Resolves once the kernel has all of outgoing; rejects with the system error that refused it. */
  send(outgoing: Outgoing): Promise<void> {
    if (this.#closedBy !== undefined) {
      closeHanded(outgoing);
      return Promise.reject(this.#closedBy);
    }
    if (this.#queue.length === 0) {
      const err = this.#sendOne(outgoing);
      if (err === 0) {
        closeHanded(outgoing);
        return Promise.resolve();
      }
      if (!this.#mustWait(err)) {
        closeHanded(outgoing);
        return Promise.reject(errnoException(err, 'sendmsg'));
      }
    }
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ outgoing, resolve, reject });
      this.#host.changed();
    });
  }

  /** The socket is writable again (or a pause is over): sends what waited, in order. */
  flush(): void {
    const queue = this.#queue;
    let sent = 0;
    while (queue.length > 0 && this.#closedBy === undefined && this.#retryTimer === undefined && sent < MAX_SENDS_PER_WAKEUP) {
      const head = queue[0]!;
      if (head.outgoing.bare) {
        const count = this.#gatherBareBatch();
        const taken = binding.sendmmsg(this.#fd, zeroByte, bareBatch.records, bareBatch.fds, count);
        if (taken < 0 && this.#mustWait(taken)) break;
        // A failure belongs to the first message the kernel refused; the rest try again.
        for (const pending of queue.splice(0, taken < 0 ? 1 : taken)) this.#settle(pending, taken < 0 ? taken : 0);
        sent += Math.max(taken, 1);
        if (taken >= 0 && taken < count) break; // the socket is full again
      } else {
        const err = this.#sendOne(head.outgoing);
        if (err < 0 && this.#mustWait(err)) break;
        queue.shift();
        this.#settle(head, err);
        sent++;
      }
    }
    this.#host.changed();
  }

  /** Keep a retry pause from holding the process open when the channel does not. */
  setRef(refd: boolean): void {
    this.#refd = refd;
    if (refd) this.#retryTimer?.ref();
    else this.#retryTimer?.unref();
  }

  /** The channel closed (or lost its fd): every waiting send, and every later one, rejects with `error`. */
  close(error: Error): void {
    this.#closedBy ??= error;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    for (const pending of this.#queue.splice(0)) {
      closeHanded(pending.outgoing);
      pending.reject(this.#closedBy);
    }
  }

  /**
   * One sendmsg of what is left of a message: 0 once the kernel has all of it, else
   * -errno (EAGAIN also after part of a large frame went; the rest follows, without fds).
   */
  #sendOne(outgoing: Outgoing): number {
    if (outgoing.bare) {
      const sent = binding.sendFd(this.#fd, outgoing.fd, constants.MSG_DONTWAIT);
      return sent < 0 ? sent : 0; // one byte: taken whole or not at all
    }
    const { bytes, fds } = outgoing;
    const length = bytes.length - outgoing.offset;
    const nfds = outgoing.offset === 0 ? fds.length : 0; // the fds went with the first part
    const sent = binding.sendmsg(this.#fd, bytes, outgoing.offset, length, fds, nfds, constants.MSG_DONTWAIT);
    if (sent < 0) return sent;
    outgoing.offset += sent;
    return sent === length ? 0 : EAGAIN;
  }

  /** How many bare fds lead the queue, up to one batch; they are copied for sendmmsg. */
  #gatherBareBatch(): number {
    const queue = this.#queue;
    let count = 0;
    while (count < BATCH && count < queue.length && queue[count]!.outgoing.bare) {
      bareBatch.fds[count] = queue[count]!.outgoing.fd;
      count++;
    }
    return count;
  }

  /** Whether a send that failed with err waits and tries again, rather than failing. */
  #mustWait(err: number): boolean {
    if (isWouldBlock(err)) return true;
    if (!SHORT_OF_ROOM.has(err)) return false;
    if (this.#retryTimer === undefined) {
      this.#retryTimer = setTimeout(() => {
        this.#retryTimer = undefined;
        this.flush();
      }, ROOM_RETRY_MS);
      if (!this.#refd) this.#retryTimer.unref(); // an unref'd channel keeps nothing alive
    }
    return true;
  }

  #settle(pending: PendingSend, err: number): void {
    closeHanded(pending.outgoing);
    if (err === 0) pending.resolve();
    else pending.reject(errnoException(err, 'sendmsg'));
  }
}
