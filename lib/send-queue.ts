// A channel's send side: each send goes out at once when nothing waits before it; else it
// queues, in call order, until the socket is writable again (EAGAIN) or the kernel has room
// again (ETOOMANYREFS, ENOBUFS: a short pause). Queued messages go out a sendmmsg at a time:
// bare fds, and frames copied to the same slab (frame-store.ts). Small messages sent one
// after another in one turn of the event loop are gathered the same way: the first goes at
// once, the rest wait for a microtask, so that a burst costs one syscall per batch.
import { constants as os } from 'node:os';
import { binding, constants } from './binding';
import { errnoException } from './errors';
import { holdFrame, releaseFrame } from './frame-store';
import { MESSAGE_HEADER_BYTES } from './framing';
import { closeHanded, writeFrameHeader, type Outgoing } from './outgoing';

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
// The largest frame a burst gathers: copying a larger one to the slab costs more than the
// sendmsg it saves (at 4 KiB, sender CPU per message rose from 6.3 to 7.1 µs).
const LARGEST_GATHERED_FRAME = 1024;
const { MSG_DONTWAIT, MAX_FDS_PER_MESSAGE } = constants;

// A send's header and fds, written here just before the native call; one set per thread,
// registered with the addon once, so that a send passes it only the payload (sendFrame, and
// sendmsg given null for its fds, as RawStream's writes are too).
const header = new Uint8Array(new ArrayBuffer(MESSAGE_HEADER_BYTES));
export const sendFdScratch = new Int32Array(new ArrayBuffer(4 * MAX_FDS_PER_MESSAGE));
if (process.platform !== 'win32') binding.setSendScratch(header, sendFdScratch);

// One sendmmsg: per message [dataOffset, dataLength, fdsOffset, nfds, sent (out)], every
// message's data in one array (a bare fd's zero byte, or one slab of frames).
const BATCH = constants.MAX_MESSAGES_PER_BATCH;
const SENT = 4;
const batch = { records: new Int32Array(5 * BATCH), fds: new Int32Array(BATCH * MAX_FDS_PER_MESSAGE) };
const zeroByte = new Uint8Array(1);

function isSmall(outgoing: Outgoing): boolean {
  return outgoing.bare || outgoing.frameBytes <= LARGEST_GATHERED_FRAME;
}

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
  /** A send went out at once in this turn: small ones after it are gathered until endBurst. */
  #inBurst = false;
  /** What the queue holds was gathered in this burst (it waits for endBurst, not for writable). */
  #gathering = false;
  readonly #endBurst = (): void => {
    this.#inBurst = false;
    if (!this.#gathering) return;
    this.#gathering = false;
    if (this.#closedBy === undefined) this.flush();
  };

  constructor(fd: number, host: SendQueueHost) {
    this.#fd = fd;
    this.#host = host;
  }

  get length(): number {
    return this.#queue.length;
  }

  /** Whether the socket must be watched for writable: sends wait, and no pause is under way. */
  get wantsWritable(): boolean {
    return this.#queue.length > 0 && this.#retryTimer === undefined && !this.#gathering;
  }

  /** Resolves once the kernel has all of outgoing; rejects with the system error that refused it. */
  send(outgoing: Outgoing): Promise<void> {
    if (this.#closedBy !== undefined) {
      closeHanded(outgoing);
      return Promise.reject(this.#closedBy);
    }
    if (this.#queue.length === 0 && this.#inBurst && isSmall(outgoing)) {
      this.#gathering = true;
    } else if (this.#queue.length === 0) {
      if (!this.#inBurst) {
        this.#inBurst = true;
        queueMicrotask(this.#endBurst);
      }
      const err = this.#sendFirst(outgoing);
      if (err === 0) {
        closeHanded(outgoing);
        return Promise.resolve();
      }
      if (!this.#mustWait(err)) {
        closeHanded(outgoing);
        return Promise.reject(errnoException(err, 'sendmsg'));
      }
    }
    if (!outgoing.bare) holdFrame(outgoing); // the caller may reuse its bytes once send() returns
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ outgoing, resolve, reject });
      if (!this.#gathering) this.#host.changed(); // a gathered send needs no poll: endBurst flushes
    });
  }

  /** The socket is writable again (or a pause is over): sends what waited, in order. */
  flush(): void {
    const queue = this.#queue;
    let sent = 0;
    while (queue.length > 0 && this.#closedBy === undefined && this.#retryTimer === undefined && sent < MAX_SENDS_PER_WAKEUP) {
      const head = queue[0]!;
      const count = this.#gatherBatch();
      if (count === 0) {
        const err = this.#sendRest(head.outgoing);
        if (err < 0 && this.#mustWait(err)) break;
        queue.shift();
        this.#settle(head, err);
        sent++;
        continue;
      }
      const data = head.outgoing.bare ? zeroByte : head.outgoing.frame!;
      const taken = binding.sendmmsg(this.#fd, data, batch.records, batch.fds, count);
      if (taken < 0 && this.#mustWait(taken)) break;
      // A failure belongs to the first message the kernel refused; the rest try again.
      if (taken < 0) {
        this.#settle(queue.shift()!, taken);
        sent++;
        continue;
      }
      // The last message taken may have gone in part (a stream with little room): the rest follows.
      const last = queue[taken - 1]!.outgoing;
      const lastSent = batch.records[5 * (taken - 1) + SENT]!;
      const whole = lastSent === (last.bare ? 1 : last.frameBytes);
      for (const pending of queue.splice(0, whole ? taken : taken - 1)) this.#settle(pending, 0);
      sent += taken;
      if (!whole) last.offset = lastSent;
      if (taken < count || !whole) break; // the socket is full again
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
    // What a burst gathered would have gone at once, were it not for the gathering: try it now.
    if (this.#gathering && this.#closedBy === undefined) {
      this.#gathering = false;
      this.flush();
    }
    this.#closedBy ??= error;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    for (const pending of this.#queue.splice(0)) {
      releaseFrame(pending.outgoing);
      closeHanded(pending.outgoing);
      pending.reject(this.#closedBy);
    }
  }

  /**
   * The first try of a send, straight from the caller's payload: 0 once the kernel has all of
   * it, else -errno (EAGAIN also after part of a large frame went: see offset).
   */
  #sendFirst(outgoing: Outgoing): number {
    if (outgoing.bare) {
      const sent = binding.sendFd(this.#fd, outgoing.fd, MSG_DONTWAIT);
      return sent < 0 ? sent : 0; // one byte: taken whole or not at all
    }
    writeFrameHeader(outgoing, header, 0);
    const nfds = copyFds(outgoing.fds, sendFdScratch, 0);
    const sent = binding.sendFrame(this.#fd, outgoing.payload, nfds, MSG_DONTWAIT);
    if (sent < 0) return sent;
    outgoing.offset = sent;
    return sent === outgoing.frameBytes ? 0 : EAGAIN;
  }

  /** One sendmsg of what is left of a waiting message: 0 once the kernel has all of it, else -errno. */
  #sendRest(outgoing: Outgoing): number {
    if (outgoing.bare) return this.#sendFirst(outgoing);
    const { frame, frameStart, frameBytes, offset } = outgoing;
    const nfds = offset === 0 ? copyFds(outgoing.fds, sendFdScratch, 0) : 0; // the fds went with the first part
    const sent = binding.sendmsg(this.#fd, frame!, frameStart + offset, frameBytes - offset, null, nfds);
    if (sent < 0) return sent;
    outgoing.offset += sent;
    return outgoing.offset === frameBytes ? 0 : EAGAIN;
  }

  /**
   * How many messages at the head of the queue go in one sendmmsg (0: the head goes alone):
   * bare fds, or whole frames in the head's slab. Their records and fds are written to batch.
   */
  #gatherBatch(): number {
    const queue = this.#queue;
    const head = queue[0]!.outgoing;
    if (!head.bare && head.offset > 0) return 0;
    const { records, fds } = batch;
    let count = 0;
    let nfds = 0;
    while (count < BATCH && count < queue.length) {
      const outgoing = queue[count]!.outgoing;
      const at = 5 * count;
      if (head.bare) {
        if (!outgoing.bare) break;
        records[at] = 0;
        records[at + 1] = 1;
        fds[nfds] = outgoing.fd;
        records[at + 3] = 1;
      } else {
        if (outgoing.frame !== head.frame || outgoing.offset > 0) break;
        records[at] = outgoing.frameStart;
        records[at + 1] = outgoing.frameBytes;
        records[at + 3] = copyFds(outgoing.fds, fds, nfds);
      }
      records[at + 2] = nfds;
      records[at + SENT] = 0;
      nfds += records[at + 3]!;
      count++;
    }
    return count === 1 && !head.bare ? 0 : count;
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
    releaseFrame(pending.outgoing);
    closeHanded(pending.outgoing);
    if (err === 0) pending.resolve();
    else pending.reject(errnoException(err, 'sendmsg'));
  }
}

/** Copies fds into target at `at`; returns how many. */
export function copyFds(fds: readonly number[], target: Int32Array, at: number): number {
  for (let i = 0; i < fds.length; i++) target[at + i] = fds[i]!;
  return fds.length;
}
