// The fds a poll handle's owner holds for nobody, in the ledger the addon appends to and
// closes at teardown (the contract is described in binding.ts). JS hands fds out by moving
// the head, with no native call; fds it drops are closed and taken out by the addon in one step.
import { constants, type PollWrap } from './binding';

const { LEDGER_HEAD: HEAD, LEDGER_TAIL: TAIL, LEDGER_READ_CAP: READ_CAP, LEDGER_FIRST_FD: FIRST, MAX_FDS_PER_MESSAGE } = constants;
const INITIAL_CAPACITY = 1024;

export class FdLedger {
  readonly #poll: PollWrap;
  #slots = newSlots(INITIAL_CAPACITY);

  constructor(poll: PollWrap) {
    this.#poll = poll;
    poll.setLedger(this.#slots);
  }

  /** The shared memory, for PollWrap.open(fd, fromLedger). */
  get slots(): Int32Array {
    return this.#slots;
  }

  /** How many fds are held. */
  get size(): number {
    return this.#slots[TAIL]! - this.#slots[HEAD]!;
  }

  /** The fd `index` places from the oldest. */
  fdAt(index: number): number {
    return this.#slots[FIRST + this.#slots[HEAD]! + index]!;
  }

  /** A copy of `count` fds from `offset` places after the oldest. */
  fds(offset: number, count: number): number[] {
    const start = FIRST + this.#slots[HEAD]! + offset;
    const copy = new Array<number>(count);
    for (let i = 0; i < count; i++) copy[i] = this.#slots[start + i]!;
    return copy;
  }

  /** The oldest `count` fds were handed out: they are their taker's now. */
  release(count: number): void {
    const head = this.#slots[HEAD]! + count;
    if (head >= this.#slots[TAIL]!) {
      this.#slots[HEAD] = 0;
      this.#slots[TAIL] = 0;
    } else {
      this.#slots[HEAD] = head;
    }
  }

  /** Closes `count` fds from `offset` places after the oldest, and forgets them. */
  close(offset: number, count: number): void {
    if (count > 0 && this.#poll.closeLedgerFds(offset, count) < 0)
      throw new RangeError(`fdpass: ledger close(${offset}, ${count}) out of range`);
  }

  /** Bytes the addon may still read on a stream while the budget is full (see binding.ts). */
  set readCap(bytes: number) {
    this.#slots[READ_CAP] = Math.min(bytes, 0x7fff_ffff);
  }

  /** Grows the ledger, if need be, so that the addon always has room for a whole message more. */
  ensureRoom(): void {
    const capacity = this.#slots.length - FIRST;
    if (capacity - this.size >= 2 * MAX_FDS_PER_MESSAGE) return;
    const grown = newSlots(2 * capacity);
    const head = this.#slots[HEAD]!;
    const size = this.size;
    grown.set(this.#slots.subarray(FIRST + head, FIRST + head + size), FIRST);
    grown[TAIL] = size;
    grown[READ_CAP] = this.#slots[READ_CAP]!;
    // The old ledger stays the addon's until this call: the fds are recorded in one or the other.
    this.#poll.setLedger(grown);
    this.#slots = grown;
  }
}

// Off the V8 heap (an ArrayBuffer of its own): the addon keeps a pointer to this memory.
function newSlots(capacity: number): Int32Array {
  return new Int32Array(new ArrayBuffer(4 * (FIRST + capacity)));
}
