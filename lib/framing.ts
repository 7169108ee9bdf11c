// fdpass's message wire format (docs/wire-format.md): a bare fd (one 0x00 byte carrying one
// fd, as IO::FDPass sends) or a frame (an 8-byte header, then the payload). Pure: no I/O,
// no native calls; fds are plain numbers, closed through the callback the caller gives.
import { fdpassError, invalidArgType, outOfRange, type FdpassError } from './errors';

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

/** One received message. Its fds are the caller's to close from here on. */
export interface DecodedMessage {
  data: Buffer;
  fds: number[];
}

/** A message, or an error in its place (whose fds the decoder already closed). */
export type DecodeOutcome = DecodedMessage | FdpassError;

export type CloseFds = (fds: number[]) => void;

// Shared by every message without data: a zero-length Buffer cannot be written to.
const noData = Buffer.alloc(0);

/** A message with no data and exactly one fd goes as a bare fd, whatever the socket type. */
export function isBareFd(dataLength: number, nfds: number): boolean {
  return dataLength === 0 && nfds === 1;
}

export function isDecodeError(outcome: DecodeOutcome): outcome is FdpassError {
  return outcome instanceof Error;
}

/** Checks limits (e.g. once, from a Channel's options) and returns a frozen copy. */
export function validateFramingLimits(limits: FramingLimits): FramingLimits {
  if (typeof limits !== 'object' || limits === null) throw invalidArgType('limits', 'of type object', limits);
  const { maxPayloadBytes, maxFdsPerMessage } = limits;
  validateInteger(maxPayloadBytes, 'limits.maxPayloadBytes', MAX_PAYLOAD_BYTES);
  validateInteger(maxFdsPerMessage, 'limits.maxFdsPerMessage', MAX_FDS_PER_FRAME);
  return Object.freeze({ maxPayloadBytes, maxFdsPerMessage });
}

/** Writes a frame header at target[offset..offset + 8), for a send that builds its own buffer. */
export function writeHeader(target: Uint8Array, offset: number, length: number, nfds: number): void {
  validateInteger(length, 'length', MAX_PAYLOAD_BYTES);
  validateInteger(nfds, 'nfds', MAX_FDS_PER_FRAME);
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
 * Decodes one packet of a seqpacket or dgram socket, which is exactly one message. On an
 * error the packet's fds are closed through closeFds. The caller handles EOF (a zero-byte
 * read on seqpacket) and MSG_CTRUNC/MSG_TRUNC before this; limits must be valid
 * (validateFramingLimits). What is returned is copied out of bytes and fds.
 */
export function decodePacket(
  bytes: Uint8Array,
  offset: number,
  length: number,
  fds: ArrayLike<number>,
  fdsOffset: number,
  nfds: number,
  limits: FramingLimits,
  closeFds: CloseFds,
): DecodeOutcome {
  const tag = length > 0 ? bytes[offset]! : -1;
  let error: FdpassError | null;
  if (tag === TAG_BARE_FD && length === 1 && nfds === 1) {
    error = limitError(0, 1, limits);
    if (error === null) return { data: noData, fds: [fds[fdsOffset]!] };
  } else if (length === 0) {
    error = badMessage(`an empty packet${withClosedFds(nfds)}`);
  } else if (tag === TAG_BARE_FD) {
    error = badMessage(`a bare-fd packet must be one zero byte with one fd, not ${length} byte(s) with ${nfds} fd(s)${withClosedFds(nfds)}`);
  } else if (tag !== TAG_FRAME) {
    error = badMessage(`${unknownTag(tag)}${withClosedFds(nfds)}`);
  } else if (length < MESSAGE_HEADER_BYTES) {
    error = badMessage(`a ${length}-byte packet is shorter than a frame header (8 bytes)${withClosedFds(nfds)}`);
  } else if (bytes[offset + 1] !== 0) {
    error = badMessage(`${badReserved(bytes[offset + 1]!)}${withClosedFds(nfds)}`);
  } else {
    const headerNfds = readNfds(bytes, offset);
    const payloadLength = readLength(bytes, offset);
    if (payloadLength !== length - MESSAGE_HEADER_BYTES) {
      error = badMessage(`a frame packet's header says ${payloadLength} payload bytes, but ${length - MESSAGE_HEADER_BYTES} followed it${withClosedFds(nfds)}`);
    } else if (headerNfds !== nfds) {
      error = badMessage(`a frame packet's header says ${headerNfds} fd(s), but ${nfds} came with it${withClosedFds(nfds)}`);
    } else {
      error = limitError(payloadLength, nfds, limits);
      if (error === null) {
        const data = payloadLength === 0 ? noData : Buffer.from(bytes.subarray(offset + MESSAGE_HEADER_BYTES, offset + length));
        return { data, fds: copyFds(fds, fdsOffset, nfds) };
      }
    }
  }
  if (nfds > 0) closeFds(copyFds(fds, fdsOffset, nfds));
  return error;
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
 * Reassembles messages from a stream socket's reads. Each read's fds join a FIFO queue; a
 * message takes its fds from the head of that queue once its header is complete (the
 * kernel delivers a frame's fds no later than the read that returns its first byte).
 * A protocol error (unknown tag, reserved byte, too few fds) leaves the stream
 * unreadable: the decoder reports it once, closes every fd it holds, and fails for good.
 */
export class StreamDecoder {
  readonly #limits: FramingLimits;
  readonly #closeFds: CloseFds;
  readonly #queue = new FdQueue();
  #state: 'open' | 'failed' | 'closed' = 'open';

  #phase = AT_BOUNDARY;
  readonly #header = new Uint8Array(MESSAGE_HEADER_BYTES);
  #headerBytes = 0;
  #frameFds: number[] = [];
  #payload: Buffer = noData;
  #payloadLength = 0;
  /** Payload bytes received (IN_PAYLOAD) or still to skip (SKIPPING). */
  #payloadBytes = 0;

  constructor(limits: FramingLimits, closeFds: CloseFds) {
    this.#limits = validateFramingLimits(limits);
    if (typeof closeFds !== 'function') throw invalidArgType('closeFds', 'of type function', closeFds);
    this.#closeFds = closeFds;
  }

  /** True after a protocol error: the stream cannot be resynchronised. */
  get failed(): boolean {
    return this.#state === 'failed';
  }

  /** True while part of a message has arrived but not all of it: EOF now cuts a frame. */
  get inFrame(): boolean {
    return this.#phase !== AT_BOUNDARY;
  }

  /** Fds received and not yet handed out in a message: queued, or held by a partial frame. */
  get heldFds(): number {
    return this.#queue.size + (this.#phase === IN_PAYLOAD ? this.#frameFds.length : 0);
  }

  /** Payload bytes of the partial frame held in memory. */
  get heldBytes(): number {
    return this.#phase === IN_PAYLOAD ? this.#payloadBytes : 0;
  }

  /**
   * Decodes one read: `length` bytes at bytes[offset] and `nfds` fds at fds[fdsOffset].
   * Copies what it keeps, so the caller may reuse both buffers right after. Appends the
   * messages and errors completed by this read to `out`, in stream order, and returns it.
   */
  push(
    bytes: Uint8Array,
    offset: number,
    length: number,
    fds: ArrayLike<number>,
    fdsOffset: number,
    nfds: number,
    out: DecodeOutcome[] = [],
  ): DecodeOutcome[] {
    if (this.#state !== 'open') {
      if (nfds > 0) this.#closeFds(copyFds(fds, fdsOffset, nfds));
      return out;
    }
    if (length === 1 && nfds === 1 && bytes[offset] === TAG_BARE_FD && this.#phase === AT_BOUNDARY && this.#queue.size === 0 && this.#limits.maxFdsPerMessage > 0) {
      // The common case, one bare fd per read, without touching the queue.
      out.push({ data: noData, fds: [fds[fdsOffset]!] });
      return out;
    }
    this.#queue.append(fds, fdsOffset, nfds);
    const end = offset + length;
    let at = offset;
    while (at < end) {
      switch (this.#phase) {
        case AT_BOUNDARY: {
          const tag = bytes[at]!;
          if (tag === TAG_BARE_FD) {
            at++;
            this.#bareFd(out);
          } else if (tag !== TAG_FRAME) {
            this.#fail(out, unknownTag(tag));
          } else if (end - at >= MESSAGE_HEADER_BYTES) {
            // The whole header is in this read: parse it in place.
            if (bytes[at + 1] !== 0) {
              this.#fail(out, badReserved(bytes[at + 1]!));
            } else {
              const frameNfds = readNfds(bytes, at);
              const payloadLength = readLength(bytes, at);
              at += MESSAGE_HEADER_BYTES;
              this.#startFrame(payloadLength, frameNfds, end - at, out);
            }
          } else {
            this.#header.set(bytes.subarray(at, end));
            this.#headerBytes = end - at;
            this.#phase = IN_HEADER;
            at = end;
            this.#checkReserved(out);
          }
          break;
        }
        case IN_HEADER: {
          const count = Math.min(MESSAGE_HEADER_BYTES - this.#headerBytes, end - at);
          this.#header.set(bytes.subarray(at, at + count), this.#headerBytes);
          this.#headerBytes += count;
          at += count;
          if (this.#checkReserved(out) && this.#headerBytes === MESSAGE_HEADER_BYTES) {
            this.#startFrame(readLength(this.#header, 0), readNfds(this.#header, 0), end - at, out);
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
            out.push({ data: this.#payload, fds: this.#frameFds });
            this.#endFrame();
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
      if (this.#state !== 'open') break;
    }
    return out;
  }

  /**
   * The stream ended (EOF): closes every fd the decoder holds and returns the error to
   * report, if any — a frame cut short, or fds that no message claimed.
   */
  end(): FdpassError | null {
    if (this.#state !== 'open') return null;
    let error: FdpassError | null = null;
    if (this.#phase === IN_HEADER) {
      error = badMessage(`the stream ended within a frame header (${this.#headerBytes} of 8 bytes)${withClosedFds(this.heldFds)}`);
    } else if (this.#phase === IN_PAYLOAD || this.#phase === SKIPPING) {
      const received = this.#phase === IN_PAYLOAD ? this.#payloadBytes : this.#payloadLength - this.#payloadBytes;
      error = badMessage(`the stream ended within a frame (${received} of ${this.#payloadLength} payload bytes)${withClosedFds(this.heldFds)}`);
    } else if (this.#queue.size > 0) {
      error = badMessage(`the stream ended with ${this.#queue.size} fd(s) that no message claimed; they were closed`);
    }
    this.close();
    return error;
  }

  /** Closes every fd the decoder holds and drops any partial frame; later reads' fds are closed. Idempotent. */
  close(): void {
    this.#closeHeld();
    this.#state = 'closed';
  }

  #bareFd(out: DecodeOutcome[]): void {
    if (this.#queue.size === 0) {
      this.#fail(out, 'a bare-fd byte (0x00) arrived without an fd');
      return;
    }
    const fd = this.#queue.takeOne();
    const error = limitError(0, 1, this.#limits);
    if (error === null) {
      out.push({ data: noData, fds: [fd] });
    } else {
      this.#closeFds([fd]);
      out.push(error);
    }
  }

  /** The header is complete; `available` payload bytes remain in the current read. */
  #startFrame(payloadLength: number, nfds: number, available: number, out: DecodeOutcome[]): void {
    if (this.#queue.size < nfds) {
      this.#fail(out, `a frame header announces ${nfds} fd(s), but only ${this.#queue.size} arrived with it`);
      return;
    }
    const fds = this.#queue.take(nfds);
    const error = limitError(payloadLength, nfds, this.#limits);
    if (error !== null) {
      if (nfds > 0) this.#closeFds(fds);
      out.push(error);
      // Read past the payload without keeping it; the next frame follows it.
      this.#phase = payloadLength > 0 ? SKIPPING : AT_BOUNDARY;
      this.#payloadLength = payloadLength;
      this.#payloadBytes = payloadLength;
      this.#headerBytes = 0;
      return;
    }
    if (payloadLength === 0) {
      out.push({ data: noData, fds });
      this.#endFrame();
      return;
    }
    this.#phase = IN_PAYLOAD;
    this.#frameFds = fds;
    this.#payloadLength = payloadLength;
    this.#payloadBytes = 0;
    this.#payload = Buffer.allocUnsafe(Math.min(payloadLength, Math.max(available, INITIAL_PAYLOAD_BYTES)));
  }

  /** Grows the payload buffer (doubling, capped at the payload's length) to hold `needed` bytes. */
  #reservePayload(needed: number): void {
    if (needed <= this.#payload.length) return;
    const grown = Buffer.allocUnsafe(Math.min(this.#payloadLength, Math.max(needed, 2 * this.#payload.length)));
    this.#payload.copy(grown, 0, 0, this.#payloadBytes);
    this.#payload = grown;
  }

  /** False (and failed) if the header's reserved byte has arrived and is not zero. */
  #checkReserved(out: DecodeOutcome[]): boolean {
    if (this.#headerBytes < 2 || this.#header[1] === 0) return true;
    this.#fail(out, badReserved(this.#header[1]!));
    return false;
  }

  #endFrame(): void {
    this.#phase = AT_BOUNDARY;
    this.#headerBytes = 0;
    this.#frameFds = [];
    this.#payload = noData;
    this.#payloadLength = 0;
    this.#payloadBytes = 0;
  }

  #fail(out: DecodeOutcome[], reason: string): void {
    const held = this.heldFds;
    this.#closeHeld();
    this.#state = 'failed';
    out.push(badMessage(`${reason}; the stream cannot be read further${held > 0 ? ` and its ${held} received fd(s) were closed` : ''}`));
  }

  #closeHeld(): void {
    const fds = this.#phase === IN_PAYLOAD ? this.#frameFds.concat(this.#queue.takeAll()) : this.#queue.takeAll();
    this.#endFrame();
    if (fds.length > 0) this.#closeFds(fds);
  }
}

/** A FIFO of fds in one growable Int32Array: no allocation per fd once warm. */
class FdQueue {
  #fds = new Int32Array(MAX_FDS_PER_FRAME);
  #head = 0;
  #tail = 0;

  get size(): number {
    return this.#tail - this.#head;
  }

  append(fds: ArrayLike<number>, offset: number, count: number): void {
    if (count === 0) return;
    if (this.#head === this.#tail) this.#head = this.#tail = 0;
    if (this.#tail + count > this.#fds.length) this.#makeRoom(count);
    for (let i = 0; i < count; i++) this.#fds[this.#tail++] = fds[offset + i]!;
  }

  takeOne(): number {
    return this.#fds[this.#head++]!;
  }

  take(count: number): number[] {
    const taken: number[] = [];
    for (let i = 0; i < count; i++) taken.push(this.#fds[this.#head++]!);
    return taken;
  }

  takeAll(): number[] {
    return this.take(this.size);
  }

  #makeRoom(count: number): void {
    const size = this.size;
    if (size + count <= this.#fds.length / 2) {
      this.#fds.copyWithin(0, this.#head, this.#tail);
    } else {
      const grown = new Int32Array(2 * (size + count));
      grown.set(this.#fds.subarray(this.#head, this.#tail));
      this.#fds = grown;
    }
    this.#head = 0;
    this.#tail = size;
  }
}

function readNfds(bytes: Uint8Array, offset: number): number {
  return bytes[offset + 2]! | (bytes[offset + 3]! << 8);
}

function readLength(bytes: Uint8Array, offset: number): number {
  // The top byte multiplied, not shifted: a shift would make lengths >= 2 GiB negative.
  return (bytes[offset + 4]! | (bytes[offset + 5]! << 8) | (bytes[offset + 6]! << 16)) + bytes[offset + 7]! * 0x100_0000;
}

function copyFds(fds: ArrayLike<number>, offset: number, count: number): number[] {
  const copy: number[] = [];
  for (let i = 0; i < count; i++) copy.push(fds[offset + i]!);
  return copy;
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

function validateInteger(value: unknown, name: string, max: number): void {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value);
  if (!Number.isInteger(value) || value < 0 || value > max) throw outOfRange(name, `an integer >= 0 and <= ${max}`, value);
}
