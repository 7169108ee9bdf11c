// The Windows Channel's records (docs/windows-channel-protocol.md): an fdpass frame header,
// then one entry per handle pushed into the receiver, then the payload. Pure: it parses bytes
// and says which entries belong to which record; the channel adopts or discards them.
import { fdpassError, type FdpassError } from '../errors';
import { MAX_FDS_PER_FRAME, MESSAGE_HEADER_BYTES, TAG_FRAME, putHeader, type FramingLimits } from '../framing';

export const KIND_HANDLE = 1;
export const KIND_SOCKET = 2;
/** A handle entry: kind, then the value the sender's duplicate has in the receiver (uint64). */
export const HANDLE_ENTRY_BYTES = 4 + 8;
/** A socket entry: kind, then the WSAPROTOCOL_INFOW that WSADuplicateSocketW made for the receiver. */
export const SOCKET_ENTRY_BYTES = 4 + 628;

/** What the sender pushed for one fd: a handle value in the receiver, or a socket's description. */
export type Entry =
  { readonly kind: typeof KIND_HANDLE; readonly value: number } | { readonly kind: typeof KIND_SOCKET; readonly bytes: Uint8Array };

export interface RecordSink {
  /** A whole record: its entries, in order, and its payload. */
  record(entries: Entry[], payload: Buffer): void;
  /** A record that is not delivered: its entries are to be discarded. fatal: read no further. */
  dropped(error: FdpassError, entries: Entry[], fatal: boolean): void;
}

/** The bytes of a record: header, entries (as pushFd wrote them), payload. */
export function encodeRecord(entries: readonly Uint8Array[], payload: Uint8Array): Buffer {
  let size = MESSAGE_HEADER_BYTES + payload.length;
  for (const entry of entries) size += entry.length;
  const record = Buffer.allocUnsafe(size);
  putHeader(record, 0, payload.length, entries.length);
  let offset = MESSAGE_HEADER_BYTES;
  for (const entry of entries) {
    record.set(entry, offset);
    offset += entry.length;
  }
  record.set(payload, offset);
  return record;
}

const HEADER = 0;
const ENTRY = 1;
const PAYLOAD = 2;
const BROKEN = 3;

function badRecord(message: string): FdpassError {
  return fdpassError('ERR_FDPASS_BAD_MESSAGE', `fdpass: the peer sent ${message}`);
}

export class RecordReader {
  readonly #limits: FramingLimits;
  readonly #sink: RecordSink;
  #state = HEADER;
  readonly #header = Buffer.alloc(MESSAGE_HEADER_BYTES);
  readonly #entry = Buffer.alloc(SOCKET_ENTRY_BYTES);
  #have = 0; // bytes of the header or entry under way
  #need = MESSAGE_HEADER_BYTES;
  #nfds = 0;
  #entries: Entry[] = [];
  #payload: Buffer | null = null; // null while skipping an over-limit payload
  #payloadLeft = 0;
  #payloadHave = 0;
  #overLimit: FdpassError | null = null;

  constructor(limits: FramingLimits, sink: RecordSink) {
    this.#limits = limits;
    this.#sink = sink;
  }

  /** Whether the next byte starts a record (nothing of one is held). */
  get atBoundary(): boolean {
    return this.#state === HEADER && this.#have === 0;
  }

  /** The entries of the record under way, taken out of the reader (to discard them). */
  takePartialEntries(): Entry[] {
    const entries = this.#entries;
    this.#entries = [];
    return entries;
  }

  /** Parses bytes[start, end). After a fatal error it reads nothing more. */
  push(bytes: Uint8Array, start: number, end: number): void {
    let at = start;
    while (at < end && this.#state !== BROKEN) {
      if (this.#state === PAYLOAD) {
        const n = Math.min(this.#payloadLeft, end - at);
        if (this.#payload !== null) this.#payload.set(bytes.subarray(at, at + n), this.#payloadHave);
        this.#payloadHave += n;
        this.#payloadLeft -= n;
        at += n;
        if (this.#payloadLeft === 0) this.#finish();
        continue;
      }
      const target = this.#state === HEADER ? this.#header : this.#entry;
      const n = Math.min(this.#need - this.#have, end - at);
      target.set(bytes.subarray(at, at + n), this.#have);
      this.#have += n;
      at += n;
      if (this.#have < this.#need) continue;
      if (this.#state === HEADER) this.#headerDone();
      else this.#entryPartDone();
    }
    // An empty payload finishes its record as soon as its entries are in.
    if (this.#state === PAYLOAD && this.#payloadLeft === 0) this.#finish();
  }

  #headerDone(): void {
    const h = this.#header;
    if (h[0] !== TAG_FRAME) return this.#fatal(badRecord(`a record with tag ${h[0]} (a Windows channel sends only frames, tag 1)`));
    if (h[1] !== 0) return this.#fatal(badRecord(`a record whose reserved byte is ${h[1]}, not 0`));
    this.#nfds = h.readUInt16LE(2);
    const length = h.readUInt32LE(4);
    if (this.#nfds > MAX_FDS_PER_FRAME) return this.#fatal(badRecord(`a record of ${this.#nfds} handles (at most ${MAX_FDS_PER_FRAME})`));
    this.#overLimit = null;
    if (this.#nfds > this.#limits.maxFdsPerMessage) {
      this.#overLimit = fdpassError(
        'ERR_FDPASS_TOO_MANY_FDS',
        `fdpass: a message of ${this.#nfds} fds was dropped (maxFdsPerMessage is ${this.#limits.maxFdsPerMessage}); its handles were closed`,
      );
    } else if (length > this.#limits.maxPayloadBytes) {
      this.#overLimit = fdpassError(
        'ERR_FDPASS_MESSAGE_TOO_LARGE',
        `fdpass: a message of ${length} bytes was dropped (maxPayloadBytes is ${this.#limits.maxPayloadBytes}); its handles were closed`,
      );
    }
    this.#payload = this.#overLimit === null ? Buffer.allocUnsafe(length) : null;
    this.#payloadLeft = length;
    this.#payloadHave = 0;
    this.#nextEntryOrPayload();
  }

  // An entry arrives in two steps: its kind, then the body that the kind sizes.
  #entryPartDone(): void {
    if (this.#need === 4) {
      const kind = this.#entry.readUInt32LE(0);
      if (kind === KIND_HANDLE) this.#need = HANDLE_ENTRY_BYTES;
      else if (kind === KIND_SOCKET) this.#need = SOCKET_ENTRY_BYTES;
      else return this.#fatal(badRecord(`an entry of unknown kind ${kind}`));
      return;
    }
    if (this.#need === HANDLE_ENTRY_BYTES) {
      const value = this.#entry.readBigUInt64LE(4);
      // Handle values are multiples of 4 below 2^31 (adoptHandle checks the rest).
      if (value >= 0x8000_0000n) return this.#fatal(badRecord(`a handle value out of range (${value})`));
      this.#entries.push({ kind: KIND_HANDLE, value: Number(value) });
    } else {
      this.#entries.push({ kind: KIND_SOCKET, bytes: Uint8Array.prototype.slice.call(this.#entry, 0, SOCKET_ENTRY_BYTES) });
    }
    this.#nextEntryOrPayload();
  }

  #nextEntryOrPayload(): void {
    this.#have = 0;
    if (this.#entries.length < this.#nfds) {
      this.#state = ENTRY;
      this.#need = 4;
    } else {
      this.#state = PAYLOAD;
    }
  }

  #finish(): void {
    const entries = this.#entries;
    const payload = this.#payload;
    const overLimit = this.#overLimit;
    this.#entries = [];
    this.#payload = null;
    this.#overLimit = null;
    this.#state = HEADER;
    this.#have = 0;
    this.#need = MESSAGE_HEADER_BYTES;
    if (overLimit !== null || payload === null) this.#sink.dropped(overLimit ?? badRecord('nothing'), entries, false);
    else this.#sink.record(entries, payload);
  }

  #fatal(error: FdpassError): void {
    this.#state = BROKEN;
    this.#sink.dropped(error, this.takePartialEntries(), true);
  }
}
