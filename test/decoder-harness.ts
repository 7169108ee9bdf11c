// The stream decoder counts fds and never holds them; these tests give it what a Channel's
// ledger gives it: a FIFO of (fake) fds that results take from or close at the front.
import { StreamDecoder, decodePacket, type DecodeSink, type FramingLimits } from '../lib/framing';
import type { FdpassError } from '../lib/errors';

/** A message with its fds, or an error in its place (whose fds were closed). */
export type DecodeOutcome = { data: Buffer; fds: number[] } | FdpassError;

export function isDecodeError(outcome: DecodeOutcome): outcome is FdpassError {
  return outcome instanceof Error;
}

/**
 * A StreamDecoder and the fds it was given, the way a Channel keeps them: messages take fds
 * from the front, errors close them through `closeFds`, and after a fatal error every fd that
 * arrives is closed at once.
 */
export class QueueDecoder {
  readonly decoder: StreamDecoder;
  readonly #closeFds: (fds: number[]) => void;
  readonly #queue: number[] = [];
  #out: DecodeOutcome[] = [];
  /** What the sink answers at each message boundary; a test may pause the decoder. */
  paused: boolean | (() => boolean) = false;
  readonly #sink: DecodeSink;

  constructor(limits: FramingLimits, closeFds: (fds: number[]) => void) {
    this.decoder = new StreamDecoder(limits);
    this.#closeFds = closeFds;
    const paused = (): boolean => (typeof this.paused === 'function' ? this.paused() : this.paused);
    this.#sink = {
      message: (data, nfds) => this.#out.push({ data, fds: this.#take(nfds) }),
      error: (error, discardFds, fatal) => {
        const fds = fatal ? this.#queue.splice(0) : this.#take(discardFds);
        if (fds.length > 0) this.#closeFds(fds);
        this.#out.push(error);
      },
      get paused() {
        return paused();
      },
    };
  }

  get failed(): boolean {
    return this.decoder.failed;
  }

  get inFrame(): boolean {
    return this.decoder.inFrame;
  }

  get heldFds(): number {
    return this.#queue.length;
  }

  get heldBytes(): number {
    return this.decoder.heldBytes;
  }

  /** One read, with its fds; returns (and appends to `out`) what it completed. */
  push(
    bytes: Uint8Array,
    offset: number,
    length: number,
    fds: ArrayLike<number>,
    fdsOffset: number,
    nfds: number,
    out: DecodeOutcome[] = [],
  ): DecodeOutcome[] {
    this.#out = out;
    const arrived = Array.from({ length: nfds }, (_, i) => fds[fdsOffset + i]!);
    if (this.decoder.failed || this.#ended) {
      if (arrived.length > 0) this.#closeFds(arrived);
      return out;
    }
    this.#queue.push(...arrived);
    this.lastConsumed = this.decoder.push(bytes, offset, length, nfds, this.#sink);
    return out;
  }

  /** Bytes the last push consumed (fewer than it was given when paused). */
  lastConsumed = 0;
  #ended = false;

  /** EOF: the error to report, if any; every fd held is closed. */
  end(): FdpassError | null {
    const out: DecodeOutcome[] = [];
    this.#out = out;
    this.decoder.end(this.#sink);
    this.close();
    return out.find(isDecodeError) ?? null;
  }

  /** Closes what is held; later pushes' fds are closed as they come. */
  close(): void {
    this.#ended = true;
    const fds = this.#queue.splice(0);
    if (fds.length > 0) this.#closeFds(fds);
  }

  #take(count: number): number[] {
    if (count > this.#queue.length) throw new Error(`the decoder took ${count} fds, but only ${this.#queue.length} were given`);
    return this.#queue.splice(0, count);
  }
}

/** decodePacket with the packet's fds: a message, or an error after closing them. */
export function decodePacketWithFds(
  bytes: Uint8Array,
  offset: number,
  length: number,
  fds: ArrayLike<number>,
  fdsOffset: number,
  nfds: number,
  limits: FramingLimits,
  closeFds: (fds: number[]) => void,
): DecodeOutcome {
  const own = Array.from({ length: nfds }, (_, i) => fds[fdsOffset + i]!);
  const outcome = decodePacket(bytes, offset, length, nfds, limits);
  if (outcome instanceof Error) {
    if (own.length > 0) closeFds(own);
    return outcome;
  }
  return { data: outcome, fds: own };
}
