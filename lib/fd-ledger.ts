// The fds a channel's inbox holds for nobody, written where the addon can read them: if a
// worker is terminated, no JS runs to close them, and the poll handle closes them instead.
// JS writes plain memory on each message; the addon reads it only when the handle closes,
// so buffering and taking a message cost no native call.
import type { PollWrap } from './binding';

const HEAD = 0;
const TAIL = 1;
const FIRST = 2;
const INITIAL_CAPACITY = 256;

export class FdLedger {
  readonly #poll: PollWrap;
  /** [head, tail, fds...]: the fds at FIRST + head .. FIRST + tail, oldest first. */
  #slots = new Int32Array(FIRST + INITIAL_CAPACITY);

  constructor(poll: PollWrap) {
    this.#poll = poll;
    poll.setLedger(this.#slots);
  }

  /** How many fds the inbox holds. */
  get size(): number {
    return this.#slots[TAIL]! - this.#slots[HEAD]!;
  }

  /** The inbox took a message: its fds, appended in order. */
  add(fds: readonly number[]): void {
    let tail = this.#slots[TAIL]!;
    if (FIRST + tail + fds.length > this.#slots.length) tail = this.#makeRoom(fds.length);
    for (let i = 0; i < fds.length; i++) this.#slots[FIRST + tail + i] = fds[i]!;
    this.#slots[TAIL] = tail + fds.length;
  }

  /** The inbox handed out its oldest message, of count fds: they are the taker's now. */
  take(count: number): void {
    const head = this.#slots[HEAD]! + count;
    if (head >= this.#slots[TAIL]!) {
      this.#slots[HEAD] = 0;
      this.#slots[TAIL] = 0;
    } else {
      this.#slots[HEAD] = head;
    }
  }

  /** Moves what is held to the front, growing (and telling the addon) if it still does not fit. */
  #makeRoom(more: number): number {
    const head = this.#slots[HEAD]!;
    const held = this.#slots[TAIL]! - head;
    const needed = FIRST + held + more;
    if (needed <= this.#slots.length) {
      this.#slots.copyWithin(FIRST, FIRST + head, FIRST + head + held);
    } else {
      const grown = new Int32Array(Math.max(needed, 2 * this.#slots.length));
      grown.set(this.#slots.subarray(FIRST + head, FIRST + head + held), FIRST);
      this.#slots = grown;
      this.#poll.setLedger(grown);
    }
    this.#slots[HEAD] = 0;
    this.#slots[TAIL] = held;
    return held;
  }
}
