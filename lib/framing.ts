// fdpass's message wire format (docs/wire-format.md): a bare fd (one 0x00 byte carrying one
// fd, as IO::FDPass sends) or a frame (an 8-byte header, then the payload). Pure: no I/O, no
// native calls, and no fds either: the decoder counts them, and tells its caller how many to
// take (for a message) or close (for an error) from the front of the fds it was given, so
// that fds stay wherever the caller keeps them.
import { fdpassError, type FdpassError } from './errors';
import { allocPayload, copyPayload } from './payload-pool';
import { validateInteger, validateOptions } from './validators';

export const MESSAGE_HEADER_BYTES = 8;
export const TAG_BARE_FD = 0;
export const TAG_FRAME = 1;
/** Linux's SCM_MAX_FD: the most fds one sendmsg can carry, so the most one message has. */
export const MAX_FDS_PER_FRAME = 253;
/** The header's length field is a uint32. */
export const MAX_PAYLOAD_BYTES = 0xffff_ffff;

export interface FramingLimits {
  /** The largest payload a receiver accepts, 0..MAX_PAYLOAD_BYTES. */
  readonly maxPayloadBytes: number;
  /** The most fds a receiver accepts in one message, 0..MAX_FDS_PER_FRAME. */
  readonly maxFdsPerMessage: number;
}

/**
 * Where a decoder's results go. fds are never passed: "the front" is the oldest of the fds
 * the caller has given the decoder (with push) that no earlier result took or closed.
 */
export interface DecodeSink {
  /** A whole message: its payload, and how many fds it takes from the front. */
  message(data: Buffer, nfds: number): void;
  /**
   * An error in place of a message: close `discardFds` fds at the front. `fatal`: the stream
   * cannot be read further, and discardFds covers every fd the decoder holds.
   */
  error(error: FdpassError, discardFds: number, fatal: boolean): void;
  /** Read at each message boundary: true stops decoding there, to go on with the rest later. */
  readonly paused: boolean;
}

/** Shared by every message without data: a zero-length Buffer cannot be written to. */
export const noData = Buffer.alloc(0);

/** A message with no data and exactly one fd goes as a bare fd, whatever the socket type. */
export function isBareFd(dataLength: number, nfds: number): boolean {
  return dataLength === 0 && nfds === 1;
}

/** Checks limits (e.g. once, from a Channel's options) and returns a frozen copy. */
export function validateFramingLimits(limits: FramingLimits): FramingLimits {
  const { maxPayloadBytes, maxFdsPerMessage } = validateOptions(limits, 'limits');
  return Object.freeze({
    maxPayloadBytes: validateInteger(maxPayloadBytes, 'limits.maxPayloadBytes', 0, MAX_PAYLOAD_BYTES),
    maxFdsPerMessage: validateInteger(maxFdsPerMessage, 'limits.maxFdsPerMessage', 0, MAX_FDS_PER_FRAME),
  });
}

/** Writes a frame header at target[offset..offset + 8), for a send that builds its own buffer. */
export function writeHeader(target: Uint8Array, offset: number, length: number, nfds: number): void {
  validateInteger(length, 'length', 0, MAX_PAYLOAD_BYTES);
  validateInteger(nfds, 'nfds', 0, MAX_FDS_PER_FRAME);
  putHeader(target, offset, length, nfds);
}

/** writeHeader for values already checked (a send's, once per message). */
export function putHeader(target: Uint8Array, offset: number, length: number, nfds: number): void {
  target[offset] = TAG_FRAME;
  target[offset + 1] = 0;
  target[offset + 2] = nfds & 0xff;
  target[offset + 3] = nfds >>> 8;
  target[offset + 4] = length & 0xff;
  target[offset + 5] = (length >>> 8) & 0xff;
  target[offset + 6] = (length >>> 16) & 0xff;
  target[offset + 7] = length >>> 24;
}

/** The 8-byte header of a frame of `length` payload bytes carrying `nfds` fds. */
export function encodeHeader(length: number, nfds: number): Buffer {
  const header = Buffer.allocUnsafe(MESSAGE_HEADER_BYTES);
  writeHeader(header, 0, length, nfds);
  return header;
}

/**
 * Decodes one packet of a seqpacket or dgram socket, which is exactly one message carrying
 * `nfds` fds: its payload (copied out of bytes), or the error to report in its place, in which
 * case the caller closes the packet's fds. The caller handles EOF (a zero-byte read on
 * seqpacket) and MSG_CTRUNC/MSG_TRUNC first; limits must be valid (validateFramingLimits).
 */
export function decodePacket(bytes: Uint8Array, offset: number, length: number, nfds: number, limits: FramingLimits): Buffer | FdpassError {
  const tag = length > 0 ? bytes[offset]! : -1;
  if (tag === TAG_BARE_FD && length === 1 && nfds === 1) return limitError(0, 1, limits) ?? noData;
  if (length === 0) return badMessage(`an empty packet${withClosedFds(nfds)}`);
  if (tag === TAG_BARE_FD) {
    return badMessage(`a bare-fd packet must be one zero byte with one fd, not ${length} byte(s) with ${nfds} fd(s)${withClosedFds(nfds)}`);
  }
  if (tag !== TAG_FRAME) return badMessage(`${unknownTag(tag)}${withClosedFds(nfds)}`);
  if (length < MESSAGE_HEADER_BYTES)
    return badMessage(`a ${length}-byte packet is shorter than a frame header (8 bytes)${withClosedFds(nfds)}`);
  if (bytes[offset + 1] !== 0) return badMessage(`${badReserved(bytes[offset + 1]!)}${withClosedFds(nfds)}`);
  const headerNfds = readNfds(bytes, offset);
  const payloadLength = readLength(bytes, offset);
  if (payloadLength !== length - MESSAGE_HEADER_BYTES) {
    return badMessage(
      `a frame packet's header says ${payloadLength} payload bytes, but ${length - MESSAGE_HEADER_BYTES} followed it${withClosedFds(nfds)}`,
    );
  }
  if (headerNfds !== nfds)
    return badMessage(`a frame packet's header says ${headerNfds} fd(s), but ${nfds} came with it${withClosedFds(nfds)}`);
  const error = limitError(payloadLength, nfds, limits);
  if (error !== null) return error;
  return payloadLength === 0 ? noData : copyPayload(bytes, offset + MESSAGE_HEADER_BYTES, offset + length);
}

// Where a StreamDecoder is within the byte stream.
const AT_BOUNDARY = 0; // the next byte is a tag
const IN_HEADER = 1; // part of a frame header is in #header
const IN_PAYLOAD = 2; // the header is complete, the payload is arriving into #payload
const SKIPPING = 3; // an over-limit frame's payload is being read past

// A payload buffer starts at most this big and doubles as bytes arrive, so a header that
// announces a large payload costs memory only as the payload actually comes.
const INITIAL_PAYLOAD_BYTES = 64 * 1024;

/**
 * Reassembles messages from a stream socket's reads. Each read's fds join a queue; a message
 * takes its fds from the front of the queue once its header is complete. The kernel delivers
 * fds with the read that returns the first byte of the sendmsg that carried them, and a
 * sender attaches a message's fds to the sendmsg that begins with its tag: so fds that no
 * message starting in their read claims belong to no message at all. They end the stream, as
 * does any other protocol error (unknown tag, reserved byte, too few fds): the decoder reports
 * it once, as fatal, and takes no more input.
 */
export class StreamDecoder {
  readonly #limits: FramingLimits;
  #state: 'open' | 'failed' | 'ended' = 'open';

  #phase = AT_BOUNDARY;
  readonly #header = new Uint8Array(MESSAGE_HEADER_BYTES);
  #headerBytes = 0;
  /** Whether the partial header began in the read being decoded (its fds may be in that read). */
  #headerBeganThisRead = false;
  /** fds given to the decoder that no message has claimed yet, oldest first. */
  #queuedFds = 0;
  /**
   * How many of them came with reads before the one being decoded. Only a frame header begun
   * in an earlier read may claim them; a message that begins in this read claims this read's.
   */
  #earlierFds = 0;
  /** The fds the frame in IN_PAYLOAD claimed, at the front, until the frame completes. */
  #frameFds = 0;
  #payload: Buffer = noData;
  #payloadLength = 0;
  /** Payload bytes received (IN_PAYLOAD) or still to skip (SKIPPING). */
  #payloadBytes = 0;
  #framesBegun = 0;

  constructor(limits: FramingLimits) {
    this.#limits = validateFramingLimits(limits);
  }

  /** True after a fatal error: the stream cannot be resynchronised. */
  get failed(): boolean {
    return this.#state === 'failed';
  }

  /** True while part of a message has arrived but not all of it: EOF now cuts a frame. */
  get inFrame(): boolean {
    return this.#phase !== AT_BOUNDARY;
  }

  /** How many frames have begun: tells one partial frame from the next. */
  get framesBegun(): number {
    return this.#framesBegun;
  }

  /** Bytes still to come before the message under way is complete (0 at a boundary). */
  get bytesToBoundary(): number {
    switch (this.#phase) {
      case IN_HEADER:
        return MESSAGE_HEADER_BYTES - this.#headerBytes;
      case IN_PAYLOAD:
        return this.#payloadLength - this.#payloadBytes;
      case SKIPPING:
        return this.#payloadBytes;
      default:
        return 0;
    }
  }

  /** fds given to the decoder and not yet taken or closed: queued, or claimed by a partial frame. */
  get heldFds(): number {
    return this.#queuedFds + this.#frameFds;
  }

  /**
   * Bytes the partial frame holds, counted at its announced length from the moment its header
   * is complete: that is what it will hold, and the buffer may run ahead of what has arrived.
   */
  get heldBytes(): number {
    return this.#phase === IN_PAYLOAD ? this.#payloadLength : 0;
  }

  /**
   * Decodes one read: `length` bytes at bytes[offset], which came with `nfds` fds (the caller
   * appends them to the fds it keeps for the decoder). Copies what it keeps. Reports results
   * to the sink in stream order, and returns how many bytes it consumed: fewer than `length`
   * when the sink paused it at a message boundary (then go on with pushRest). Consumes
   * nothing once the stream has failed or ended.
   */
  push(bytes: Uint8Array, offset: number, length: number, nfds: number, sink: DecodeSink): number {
    if (this.#state !== 'open') return 0;
    this.#earlierFds = this.#queuedFds;
    this.#queuedFds += nfds;
    this.#headerBeganThisRead = false;
    if (
      length === 1 &&
      nfds === 1 &&
      this.#queuedFds === 1 &&
      this.#phase === AT_BOUNDARY &&
      bytes[offset] === TAG_BARE_FD &&
      this.#limits.maxFdsPerMessage > 0
    ) {
      // The common case, one bare fd per read.
      if (sink.paused) return 0;
      this.#queuedFds = 0;
      sink.message(noData, 1);
      return 1;
    }
    if (this.#phase === AT_BOUNDARY && this.#queuedFds === nfds && isWholeFrame(bytes, offset, length, nfds, this.#limits)) {
      // The other common case, a read that is one whole frame and brought its fds.
      if (sink.paused) return 0;
      this.#framesBegun++;
      this.#queuedFds = 0;
      sink.message(length === MESSAGE_HEADER_BYTES ? noData : copyPayload(bytes, offset + MESSAGE_HEADER_BYTES, offset + length), nfds);
      return length;
    }
    return this.#decode(bytes, offset, length, sink);
  }

  /** Decodes the rest of the read that the sink paused: the same read, its fds already given. */
  pushRest(bytes: Uint8Array, offset: number, length: number, sink: DecodeSink): number {
    if (this.#state !== 'open') return 0;
    return this.#decode(bytes, offset, length, sink);
  }

  #decode(bytes: Uint8Array, offset: number, length: number, sink: DecodeSink): number {
    const end = offset + length;
    let at = offset;
    while (at < end && this.#state === 'open') {
      switch (this.#phase) {
        case AT_BOUNDARY: {
          if (sink.paused) return at - offset;
          if (this.#earlierFds > 0) {
            // A message begins in this read, and earlier reads' fds are still unclaimed.
            this.#fail(sink, `${this.#earlierFds} fd(s) arrived that no message declared`);
            break;
          }
          const tag = bytes[at]!;
          if (tag === TAG_BARE_FD) {
            at++;
            this.#bareFd(sink);
          } else if (tag !== TAG_FRAME) {
            this.#fail(sink, unknownTag(tag));
          } else if (end - at >= MESSAGE_HEADER_BYTES) {
            // The whole header is in this read: parse it in place.
            this.#framesBegun++;
            if (bytes[at + 1] !== 0) {
              this.#fail(sink, badReserved(bytes[at + 1]!));
            } else {
              const frameNfds = readNfds(bytes, at);
              const payloadLength = readLength(bytes, at);
              at += MESSAGE_HEADER_BYTES;
              this.#startFrame(payloadLength, frameNfds, end - at, sink);
            }
          } else {
            this.#framesBegun++;
            this.#header.set(bytes.subarray(at, end));
            this.#headerBytes = end - at;
            this.#headerBeganThisRead = true;
            this.#phase = IN_HEADER;
            at = end;
            this.#checkReserved(sink);
          }
          break;
        }
        case IN_HEADER: {
          const count = Math.min(MESSAGE_HEADER_BYTES - this.#headerBytes, end - at);
          this.#header.set(bytes.subarray(at, at + count), this.#headerBytes);
          this.#headerBytes += count;
          at += count;
          if (this.#checkReserved(sink) && this.#headerBytes === MESSAGE_HEADER_BYTES) {
            this.#startFrame(readLength(this.#header, 0), readNfds(this.#header, 0), end - at, sink);
          }
          break;
        }
        case IN_PAYLOAD: {
          const count = Math.min(this.#payloadLength - this.#payloadBytes, end - at);
          this.#reservePayload(this.#payloadBytes + count);
          this.#payload.set(bytes.subarray(at, at + count), this.#payloadBytes);
          this.#payloadBytes += count;
          at += count;
          if (this.#payloadBytes === this.#payloadLength) {
            const data = this.#payload;
            const fds = this.#frameFds;
            this.#endFrame();
            sink.message(data, fds);
          }
          break;
        }
        case SKIPPING: {
          const count = Math.min(this.#payloadBytes, end - at);
          this.#payloadBytes -= count;
          at += count;
          if (this.#payloadBytes === 0) this.#endFrame();
          break;
        }
      }
    }
    if (this.#state === 'open') this.#checkUnclaimed(sink);
    return at - offset;
  }

  /** The stream ended (EOF): a frame cut short, or fds no message claimed, is a fatal error. */
  end(sink: DecodeSink): void {
    if (this.#state !== 'open') return;
    if (this.#phase === IN_HEADER) {
      this.#end(sink, badMessage(`the stream ended within a frame header (${this.#headerBytes} of 8 bytes)${withClosedFds(this.heldFds)}`));
    } else if (this.#phase === IN_PAYLOAD || this.#phase === SKIPPING) {
      const received = this.#phase === IN_PAYLOAD ? this.#payloadBytes : this.#payloadLength - this.#payloadBytes;
      this.#end(
        sink,
        badMessage(`the stream ended within a frame (${received} of ${this.#payloadLength} payload bytes)${withClosedFds(this.heldFds)}`),
      );
    } else if (this.#queuedFds > 0) {
      this.#end(sink, badMessage(`the stream ended with ${this.#queuedFds} fd(s) that no message claimed; they were closed`));
    }
    this.#state = 'ended';
  }

  /** Ends the stream with `error` (fatal), e.g. a frame that stayed incomplete too long. */
  abort(error: FdpassError, sink: DecodeSink): void {
    if (this.#state === 'open') this.#end(sink, error);
  }

  #bareFd(sink: DecodeSink): void {
    if (this.#queuedFds === 0) {
      this.#fail(sink, 'a bare-fd byte (0x00) arrived without an fd');
      return;
    }
    this.#queuedFds--;
    const error = limitError(0, 1, this.#limits);
    if (error === null) sink.message(noData, 1);
    else sink.error(error, 1, false);
  }

  /** The header is complete; `available` payload bytes remain in the current read. */
  #startFrame(payloadLength: number, nfds: number, available: number, sink: DecodeSink): void {
    // A header begun in an earlier read came with that read's fds, never with this one's.
    const beganEarlier = this.#phase === IN_HEADER && !this.#headerBeganThisRead;
    const arrived = beganEarlier ? this.#earlierFds : this.#queuedFds - this.#earlierFds;
    if (arrived < nfds) {
      this.#fail(sink, `a frame header announces ${nfds} fd(s), but only ${arrived} arrived with it`);
      return;
    }
    if (beganEarlier && arrived > nfds) {
      // The read that began this header brought more fds than it declares: no message's.
      this.#fail(sink, `${arrived - nfds} fd(s) arrived that no message declared`);
      return;
    }
    this.#queuedFds -= nfds;
    if (beganEarlier) this.#earlierFds = 0;
    const error = limitError(payloadLength, nfds, this.#limits);
    if (error !== null) {
      // Read past the payload without keeping it; the next message follows it.
      this.#phase = payloadLength > 0 ? SKIPPING : AT_BOUNDARY;
      this.#payloadLength = payloadLength;
      this.#payloadBytes = payloadLength;
      this.#headerBytes = 0;
      sink.error(error, nfds, false);
      return;
    }
    if (payloadLength === 0) {
      this.#endFrame();
      sink.message(noData, nfds);
      return;
    }
    this.#phase = IN_PAYLOAD;
    this.#frameFds = nfds;
    this.#payloadLength = payloadLength;
    this.#payloadBytes = 0;
    this.#payload = allocPayload(Math.min(payloadLength, Math.max(available, INITIAL_PAYLOAD_BYTES)));
  }

  /**
   * After a read: fds still queued belong to no message, unless a frame header under way may
   * still claim them: one begun in this read (its fds came with it), or one begun earlier if
   * this read brought none.
   */
  #checkUnclaimed(sink: DecodeSink): void {
    if (this.#queuedFds === 0) return;
    if (this.#phase === IN_HEADER && (this.#headerBeganThisRead || this.#queuedFds === this.#earlierFds)) return;
    this.#fail(sink, `${this.#queuedFds} fd(s) arrived that no message declared`);
  }

  /** Grows the payload buffer (doubling, capped at the payload's length) to hold `needed` bytes. */
  #reservePayload(needed: number): void {
    if (needed <= this.#payload.length) return;
    const grown = Buffer.allocUnsafe(Math.min(this.#payloadLength, Math.max(needed, 2 * this.#payload.length)));
    this.#payload.copy(grown, 0, 0, this.#payloadBytes);
    this.#payload = grown;
  }

  /** False (and failed) if the header's reserved byte has arrived and is not zero. */
  #checkReserved(sink: DecodeSink): boolean {
    if (this.#headerBytes < 2 || this.#header[1] === 0) return true;
    this.#fail(sink, badReserved(this.#header[1]!));
    return false;
  }

  #endFrame(): void {
    this.#phase = AT_BOUNDARY;
    this.#headerBytes = 0;
    this.#frameFds = 0;
    this.#payload = noData;
    this.#payloadLength = 0;
    this.#payloadBytes = 0;
  }

  /** A protocol error: the stream cannot be resynchronised. */
  #fail(sink: DecodeSink, reason: string): void {
    const held = this.heldFds;
    this.#end(
      sink,
      badMessage(`${reason}; the stream cannot be read further${held > 0 ? ` and its ${held} received fd(s) were closed` : ''}`),
    );
  }

  /** Reports a fatal error: every fd held goes with it, and no more input is taken. */
  #end(sink: DecodeSink, error: FdpassError): void {
    const held = this.heldFds;
    this.#queuedFds = 0;
    this.#earlierFds = 0;
    this.#endFrame();
    this.#state = 'failed';
    sink.error(error, held, true);
  }
}

/** Whether bytes[offset..offset + length) is exactly one valid frame of nfds fds, within limits. */
function isWholeFrame(bytes: Uint8Array, offset: number, length: number, nfds: number, limits: FramingLimits): boolean {
  return (
    length >= MESSAGE_HEADER_BYTES &&
    bytes[offset] === TAG_FRAME &&
    bytes[offset + 1] === 0 &&
    readNfds(bytes, offset) === nfds &&
    readLength(bytes, offset) === length - MESSAGE_HEADER_BYTES &&
    limitError(length - MESSAGE_HEADER_BYTES, nfds, limits) === null
  );
}

function readNfds(bytes: Uint8Array, offset: number): number {
  return bytes[offset + 2]! | (bytes[offset + 3]! << 8);
}

function readLength(bytes: Uint8Array, offset: number): number {
  // The top byte multiplied, not shifted: a shift would make lengths >= 2 GiB negative.
  return (bytes[offset + 4]! | (bytes[offset + 5]! << 8) | (bytes[offset + 6]! << 16)) + bytes[offset + 7]! * 0x100_0000;
}

/** The error for a well-formed message over the receiver's limits, or null. Payload first. */
function limitError(payloadLength: number, nfds: number, limits: FramingLimits): FdpassError | null {
  if (payloadLength > limits.maxPayloadBytes) {
    return fdpassError(
      'ERR_FDPASS_MESSAGE_TOO_LARGE',
      `a message of ${payloadLength} bytes exceeds maxPayloadBytes (${limits.maxPayloadBytes}); it was dropped${withClosedFds(nfds)}`,
    );
  }
  if (nfds > limits.maxFdsPerMessage) {
    return fdpassError(
      'ERR_FDPASS_TOO_MANY_FDS',
      `a message with ${nfds} fds exceeds maxFdsPerMessage (${limits.maxFdsPerMessage}); it was dropped${withClosedFds(nfds)}`,
    );
  }
  return null;
}

function badMessage(reason: string): FdpassError {
  return fdpassError('ERR_FDPASS_BAD_MESSAGE', reason);
}

function unknownTag(tag: number): string {
  return `unknown message tag 0x${hex(tag)} (expected 0x00, a bare fd, or 0x01, a frame)`;
}

function badReserved(value: number): string {
  return `a frame header's reserved byte is 0x${hex(value)}, not 0x00`;
}

function withClosedFds(nfds: number): string {
  return nfds > 0 ? `; its ${nfds} fd(s) were closed` : '';
}

function hex(byte: number): string {
  return byte.toString(16).padStart(2, '0');
}
