// What a Channel delivers: data and the fds that travelled with it.
import { closeFds } from './fd';
import { noData } from './framing';
/** Shared by every message without fds, and every closed one. */
export const noFds: readonly number[] = Object.freeze([]);

export class ReceivedMessage {
  /** The bytes sent with the fds (empty for a bare fd, as IO::FDPass sends). */
  readonly data: Buffer;
  #fds: readonly number[];

  constructor(fds: readonly number[], data: Buffer = noData) {
    this.#fds = fds;
    this.data = data;
  }

  /**
   * The received fds, in the order sent. The receiver owns them: close each when done (or
   * call close()). Empty once close() has run.
   */
  get fds(): readonly number[] {
    return this.#fds;
  }

  /** The message's first fd (a bare-fd message has exactly one), or -1 if it has none (or is closed). */
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
    if (fds.length > 0) closeFds(fds);
  }
}
