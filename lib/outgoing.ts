// What Channel.send() takes, checked, and turned into what one sendmsg carries
// (docs/wire-format.md): a bare fd as IO::FDPass sends it, or a frame.
import { Server, Socket } from 'node:net';
import { binding } from './binding';
import { fdpassError, invalidArgType, outOfRange } from './errors';
import { closeHandedFd, toSendableFd, type FdLike } from './fd';
import { MAX_FDS_PER_FRAME, MAX_PAYLOAD_BYTES, MESSAGE_HEADER_BYTES, isBareFd, putHeader } from './framing';
import { isFdNumber } from './validators';

/** A message to send: a payload and the fds that travel with it. */
export interface Message {
  /** Bytes, or a string sent as UTF-8. Copied at the call. Default: none. */
  readonly data?: string | Uint8Array;
  /** Sent in this order, at most 253 (Linux's limit per message). Default: none. */
  readonly fds?: readonly FdLike[];
}

/**
 * A send, checked. A frame goes out straight from the caller's payload when the socket takes
 * it at once; only a frame that must wait is copied (see frame), as the caller may change its
 * bytes once send() has returned.
 */
export interface Outgoing {
  /** One zero byte with one fd: small enough that the kernel takes it whole or not at all. */
  readonly bare: boolean;
  /** A bare fd's fd (-1 for a frame): a number, so a bare send allocates no array. */
  readonly fd: number;
  /** A frame's fds, attached to its first part (empty for a bare fd). */
  readonly fds: readonly number[];
  /** A frame's payload as the caller gave it, until frame holds the copy. */
  payload: Uint8Array;
  /** A frame's header and payload once copied: frameBytes of frame from frameStart. */
  frame: Uint8Array | null;
  frameStart: number;
  readonly frameBytes: number;
  /** Bytes the kernel has taken so far: a stream may take a large frame in parts. */
  offset: number;
  /** What to close once the kernel has the fds (`close: true`), else undefined. */
  readonly handed: readonly FdLike[] | undefined;
}

const noPayload = new Uint8Array(0);
const noFds: readonly number[] = Object.freeze([]);

function isMessage(value: unknown): value is Message {
  if (typeof value !== 'object' || value === null || 'fd' in value || !('data' in value || 'fds' in value)) return false;
  // An object literal is no Socket or Server: instanceof is slow in Node (its streams define
  // Symbol.hasInstance, which turns V8's fast path off for every class), and a send runs it.
  return Object.getPrototypeOf(value) === Object.prototype || !(value instanceof Socket || value instanceof Server);
}

function payloadOf(data: unknown): Uint8Array {
  if (data === undefined) return noPayload;
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  if (data instanceof Uint8Array) return data;
  throw invalidArgType('message.data', 'a string, Buffer or Uint8Array', data);
}

function fdsOf(fds: unknown): readonly FdLike[] {
  if (fds === undefined) return [];
  if (!Array.isArray(fds)) throw invalidArgType('message.fds', 'an array of fds', fds);
  if (fds.length > MAX_FDS_PER_FRAME) {
    throw outOfRange('message.fds.length', `at most ${MAX_FDS_PER_FRAME} (Linux's limit per message); send several messages`, fds.length);
  }
  return fds as readonly FdLike[];
}

function bareFd(fd: number, handed: readonly FdLike[] | undefined): Outgoing {
  return { bare: true, fd, fds: noFds, payload: noPayload, frame: null, frameStart: 0, frameBytes: 1, offset: 0, handed };
}

/** Validates what send() was given; throws TypeError/RangeError before anything is taken. */
export function toOutgoing(value: FdLike | Message, close: boolean): Outgoing {
  if (!isMessage(value)) {
    const fd = toSendableFd(value, 'fd');
    if (close) refuseChannelSocket(fd);
    return bareFd(fd, close ? [value] : undefined);
  }
  const payload = payloadOf(value.data);
  const handed = fdsOf(value.fds);
  const fds = new Array<number>(handed.length);
  for (let i = 0; i < handed.length; i++) {
    const fd = handed[i];
    // A plain fd number, checked without building its name for an error that will not come.
    fds[i] = isFdNumber(fd) ? fd : toSendableFd(fd, `message.fds[${i}]`);
  }
  if (payload.length > MAX_PAYLOAD_BYTES) {
    throw outOfRange('message.data.length', `at most ${MAX_PAYLOAD_BYTES}`, payload.length);
  }
  if (close) for (const fd of fds) refuseChannelSocket(fd);
  const closeAfter = close && handed.length > 0 ? handed : undefined;
  if (isBareFd(payload.length, fds.length)) return bareFd(fds[0]!, closeAfter);
  return {
    bare: false,
    fd: -1,
    fds,
    payload,
    frame: null,
    frameStart: 0,
    frameBytes: MESSAGE_HEADER_BYTES + payload.length,
    offset: 0,
    handed: closeAfter,
  };
}

/** Writes a frame's header at target[at..at + 8). */
export function writeFrameHeader(outgoing: Outgoing, target: Uint8Array, at: number): void {
  putHeader(target, at, outgoing.payload.length, outgoing.fds.length);
}

/** `close: true` hands an fd over to fdpass to close: never a Channel's own socket, which is its channel's. */
function refuseChannelSocket(fd: number): void {
  if (binding.isOwnedFd(fd)) {
    throw fdpassError(
      'ERR_FDPASS_FD_OWNED_BY_CHANNEL',
      `fd ${fd} is a Channel's socket: send it without { close: true }, or close its channel`,
    );
  }
}

/** Closes what the caller handed over with `close: true`; see closeHandedFd. */
export function closeHanded(outgoing: Outgoing): void {
  if (outgoing.handed !== undefined) for (const fd of outgoing.handed) closeHandedFd(fd);
}
