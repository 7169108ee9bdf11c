// What a Channel delivers: data and the fds that travelled with it.
import { closeFds } from './fd';

const noData = Buffer.alloc(0);

export class ReceivedMessage {
  /** The bytes sent with the fds (empty for a bare fd, as IO::FDPass sends). */
  readonly data: Buffer;
  /** The received fds, in the order sent. The receiver owns them: close each when done. */
  readonly fds: readonly number[];

  constructor(fds: readonly number[], data: Buffer = noData) {
    this.fds = fds;
    this.data = data;
  }

  /** The message's first fd (a bare-fd message has exactly one), or -1 if it carried none. */
  get fd(): number {
    return this.fds[0] ?? -1;
  }

  /** Closes every fd of the message. */
  close(): void {
    closeFds(this.fds);
  }
}
