// What a Channel delivers: data and the fds that travelled with it.
import { invalidArgValue, outOfRange } from './errors';
import { closeFds } from './fd';
import { noData } from './framing';
import { validateInteger } from './validators';
/** Shared by every message without fds, and every closed one. */
export const noFds: readonly number[] = Object.freeze([]);

/** What fds reads where an fd was taken out of the message. */
const TAKEN = -1;

/**
 * What a Channel delivers: the data and the fds that travelled together in one message.
 * The receiver owns the fds: use them, `take()` them, or `close()` the message, which closes
 * those not taken.
 */
export class ReceivedMessage {
  /**
   * The bytes sent with the fds (empty for a bare fd, as IO::FDPass sends). Up to 16 KiB, it
   * may share its memory with other messages' data, as Node's small Buffers share its pool:
   * to keep a few bytes of it for long, copy them (Buffer.from).
   */
  readonly data: Buffer;
  #fds: readonly number[];

  constructor(fds: readonly number[], data: Buffer = noData) {
    this.#fds = fds;
    this.data = data;
  }

  /**
   * The received fds, in the order sent. The receiver owns them: close each when done (or
   * call close()). An fd taken out with take() reads -1 in its place. Empty once close() has
   * run.
   */
  get fds(): readonly number[] {
    return this.#fds;
  }

  /** The message's first fd (a bare-fd message has exactly one), or -1 if it has none (or is closed, or it was taken). */
  get fd(): number {
    return this.#fds[0] ?? -1;
  }

  /**
   * Closes every fd of the message, once: a second call closes nothing, so it can never close
   * a file that has reused one of the numbers since. An fd you made a Channel of belongs to
   * that channel now, and is left open.
   */
  close(): void {
    const fds = this.#fds;
    this.#fds = noFds;
    if (fds.length > 0) closeFds(fds.includes(TAKEN) ? fds.filter((fd) => fd !== TAKEN) : fds);
  }

  /**
   * Takes the fd at `index` out of the message: it is the caller's from here on, and close()
   * leaves it open. Its place in `fds` reads -1 (the others keep their places). The
   * conversions (toSocket(message) and the rest) take their fd this way, once the new object
   * owns it. Throws `ERR_OUT_OF_RANGE` for an index the message has no fd at (a closed
   * message has none) and `ERR_INVALID_ARG_VALUE` for an fd already taken.
   */
  take(index = 0): number {
    const fd = fdAt(this, index);
    this.#fds = this.#fds.with(index, TAKEN);
    return fd;
  }
}

/** The fd at `index` of a message, still the message's: what take(index) would take, checked the same way. */
export function fdAt(message: ReceivedMessage, index: number): number {
  const { fds } = message;
  if (fds.length === 0) throw outOfRange('index', "an fd's index, and the message has none (none came with it, or it is closed)", index);
  validateInteger(index, 'index', 0, fds.length - 1);
  const fd = fds[index]!;
  if (fd === TAKEN) throw invalidArgValue('index', 'names an fd already taken from the message', index);
  return fd;
}
