// What received data may occupy while nobody takes it: fds and bytes, for one channel or
// shared by a server's channels that nobody has taken yet. JS keeps the counts; the addon
// reads them at each wake-up (binding.ts) and reads no more than the room left.
import { constants } from './binding';

const {
  BUDGET_MAX_FDS: MAX_FDS,
  BUDGET_HELD_FDS: HELD_FDS,
  BUDGET_MAX_BYTES: MAX_BYTES,
  BUDGET_HELD_BYTES: HELD_BYTES,
  BUDGET_LENGTH,
} = constants;

export class ReceiveBudget {
  /** [maxFds, heldFds, maxBytes, heldBytes], off the V8 heap: the addon keeps a pointer to it. */
  readonly slots = new Float64Array(new ArrayBuffer(8 * BUDGET_LENGTH));
  /** Holders that stopped reading for want of room, to be told when there is some again. */
  readonly #waiting = new Set<() => void>();
  #notifying = false;

  constructor(maxFds: number, maxBytes: number) {
    this.slots[MAX_FDS] = maxFds;
    this.slots[MAX_BYTES] = maxBytes;
  }

  get maxFds(): number {
    return this.slots[MAX_FDS]!;
  }

  set maxFds(value: number) {
    this.slots[MAX_FDS] = value;
  }

  get maxBytes(): number {
    return this.slots[MAX_BYTES]!;
  }

  get full(): boolean {
    return this.slots[HELD_FDS]! >= this.slots[MAX_FDS]! || this.bytesFull;
  }

  get bytesFull(): boolean {
    return this.slots[HELD_BYTES]! >= this.slots[MAX_BYTES]!;
  }

  /** Whether the byte budget would be full with `extra` bytes more held (negative: fewer). */
  bytesFullWith(extra: number): boolean {
    return this.slots[HELD_BYTES]! + extra >= this.slots[MAX_BYTES]!;
  }

  /** Adds to (or, negative, takes from) what is held; wakes the waiting when room appears. */
  charge(fds: number, bytes: number): void {
    this.slots[HELD_FDS] = this.slots[HELD_FDS]! + fds;
    this.slots[HELD_BYTES] = this.slots[HELD_BYTES]! + bytes;
    if ((fds < 0 || bytes < 0) && this.#waiting.size > 0 && !this.full && !this.#notifying) {
      // After the current call: a holder woken in the middle of another's bookkeeping would
      // see it half done.
      this.#notifying = true;
      queueMicrotask(() => this.#notify());
    }
  }

  /** Calls wake once, when the budget next has room. */
  whenRoom(wake: () => void): void {
    this.#waiting.add(wake);
  }

  cancel(wake: () => void): void {
    this.#waiting.delete(wake);
  }

  #notify(): void {
    this.#notifying = false;
    for (const wake of this.#waiting) {
      if (this.full) break;
      this.#waiting.delete(wake);
      wake();
    }
  }
}
