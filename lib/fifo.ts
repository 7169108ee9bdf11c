// A first-in, first-out queue whose shift() moves nothing. Array.prototype.shift moves every
// element one place left, and in an array that has lived a while each move is a write barrier:
// a busy channel's inbox (some 60 messages after a wake-up) paid that at every message taken.

/** Taken-from slots are dropped in one go once they are this many and at least half the array. */
const COMPACT_AFTER = 1024;

export class Fifo<T> {
  #items: (T | undefined)[] = [];
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  push(item: T): void {
    this.#items.push(item);
  }

  /** The oldest item, taken out; undefined when empty. */
  shift(): T | undefined {
    const items = this.#items;
    if (this.#head === items.length) return undefined;
    const item = items[this.#head];
    items[this.#head++] = undefined; // not kept alive by the queue
    if (this.#head === items.length) {
      items.length = 0;
      this.#head = 0;
    } else if (this.#head >= COMPACT_AFTER && 2 * this.#head >= items.length) {
      // A queue that never empties: drop the slots already taken, each moved item paid once.
      items.splice(0, this.#head);
      this.#head = 0;
    }
    return item;
  }

  clear(): void {
    this.#items.length = 0;
    this.#head = 0;
  }
}
