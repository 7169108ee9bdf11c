// The stream decoder counts fds and never holds them; these tests give it what a Channel's
// ledger gives it: a FIFO of (fake) fds that results take from or close at the front. Also the
// fake fds themselves, a sender's encoding of test messages, and summaries to compare outcomes.
import { createHash } from 'node:crypto';
import { expect } from 'vitest';
import { StreamDecoder, TAG_BARE_FD, decodePacket, encodeHeader, isBareFd, type DecodeSink, type FramingLimits } from '../lib/framing';
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
  #fatalError: FdpassError | null = null;
  /** What the sink answers at each message boundary; a test may pause the decoder. */
  paused: boolean | (() => boolean) = false;
  readonly #sink: DecodeSink;

  constructor(limits: FramingLimits, closeFds: (fds: number[]) => void) {
    this.decoder = new StreamDecoder(limits);
    this.#closeFds = closeFds;
    const paused = (): boolean => (typeof this.paused === 'function' ? this.paused() : this.paused);
    this.#sink = {
      message: (data, nfds) => {
        this.#expectNoFatalError('a message');
        this.#out.push({ data, fds: this.#take(nfds) });
      },
      error: (error, discardFds, fatal) => {
        this.#expectNoFatalError('an error');
        if (fatal && discardFds !== this.#queue.length) {
          throw new Error(
            `a fatal error discards ${discardFds} fds, but the decoder was given ${this.#queue.length} that are not yet taken or closed`,
          );
        }
        const fds = this.#take(discardFds);
        if (fds.length > 0) this.#closeFds(fds);
        if (fatal) this.#fatalError = error;
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

  /** The one fatal error the decoder reported, if it did. */
  get fatalError(): FdpassError | null {
    return this.#fatalError;
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

  /** The rest of the read the sink paused the decoder in (its fds were given with it). */
  pushRest(bytes: Uint8Array, offset: number, length: number, out: DecodeOutcome[] = []): DecodeOutcome[] {
    this.#out = out;
    this.lastConsumed = this.decoder.pushRest(bytes, offset, length, this.#sink);
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
    // At EOF the decoder has nothing left to claim them: it must have closed what it held.
    if (this.#queue.length > 0)
      throw new Error(`the stream ended with ${this.#queue.length} fds that the decoder neither gave out nor closed`);
    this.close();
    return out.find(isDecodeError) ?? null;
  }

  /** Closes what is held; later pushes' fds are closed as they come. */
  close(): void {
    this.#ended = true;
    const fds = this.#queue.splice(0);
    if (fds.length > 0) this.#closeFds(fds);
  }

  #expectNoFatalError(what: string): void {
    if (this.#fatalError !== null) throw new Error(`the decoder reported ${what} after its fatal error (${this.#fatalError.message})`);
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

/** Hands out unique fake fds and checks that each is closed at most once, and only if issued. */
export class FakeFds {
  #next = 1000;
  readonly issued = new Set<number>();
  readonly closed: number[] = [];
  readonly #closedSet = new Set<number>();
  readonly close = (fds: number[]): void => {
    for (const fd of fds) {
      if (!this.issued.has(fd)) throw new Error(`closed fd ${fd}, which was never issued`);
      if (this.#closedSet.has(fd)) throw new Error(`closed fd ${fd} twice`);
      this.#closedSet.add(fd);
      this.closed.push(fd);
    }
  };

  issue(count: number): number[] {
    const fds: number[] = [];
    for (let i = 0; i < count; i++) {
      this.issued.add(this.#next);
      fds.push(this.#next++);
    }
    return fds;
  }

  /** Every issued fd was either delivered in a message or closed, never both. */
  expectAccountedFor(outcomes: DecodeOutcome[]): void {
    const delivered = outcomes.flatMap((outcome) => (isDecodeError(outcome) ? [] : outcome.fds));
    expect(delivered.filter((fd) => this.#closedSet.has(fd))).toEqual([]);
    expect([...delivered, ...this.closed].sort((a, b) => a - b)).toEqual([...this.issued].sort((a, b) => a - b));
  }
}

export interface TestMessage {
  data: Buffer;
  fds: number[];
  /** Send as a frame even if it could go as a bare fd (which a receiver must accept too). */
  asFrame?: boolean;
}

/** The wire bytes of one message, as a sender following docs/wire-format.md writes them. */
export function wireBytes(message: TestMessage): Buffer {
  if (message.asFrame !== true && isBareFd(message.data.length, message.fds.length)) return Buffer.from([TAG_BARE_FD]);
  return Buffer.concat([encodeHeader(message.data.length, message.fds.length), message.data]);
}

/** A byte stream of messages, with where each message starts (its fds go with that byte). */
export function streamOf(messages: TestMessage[]): { stream: Buffer; starts: number[] } {
  const parts = messages.map(wireBytes);
  const starts: number[] = [];
  let at = 0;
  for (const part of parts) {
    starts.push(at);
    at += part.length;
  }
  return { stream: Buffer.concat(parts), starts };
}

/** Plain objects for toEqual: the bytes and fds of each message, the code of each error. */
export function summary(outcomes: DecodeOutcome[]): unknown[] {
  return outcomes.map((outcome) =>
    isDecodeError(outcome) ? { code: outcome.code } : { data: describeData(outcome.data), fds: outcome.fds },
  );
}

/** Short data as hex; long data by length and digest, so comparing megabytes stays quick. */
export function describeData(data: Buffer): string {
  return data.length <= 64 ? data.toString('hex') : `${data.length} bytes, sha256 ${createHash('sha256').update(data).digest('hex')}`;
}

/** What summary() gives for these messages, delivered whole and in order. */
export function expected(messages: TestMessage[]): unknown[] {
  return messages.map((message) => ({ data: describeData(message.data), fds: message.fds }));
}
