// Every error fdpass raises, shaped like Node's own: a string `code`, and for
// system errors `errno` and `syscall`.
import { getSystemErrorMap } from 'node:util';

/**
 * What the kernel refused, shaped like Node's own system errors: `sendmsg EPIPE (Broken
 * pipe)`, with `code`, `errno` and `syscall`.
 */
export interface SystemError extends Error {
  /** The errno's name: 'EPIPE', 'EBADF', 'EMFILE'... */
  code: string;
  /** Negative, as in Node's own system errors (-9 for EBADF on Linux). */
  errno: number;
  /** The call that failed: 'sendmsg', 'connect', 'bind'... */
  syscall: string;
}

/** libuv's end-of-file code: what recv reports when the peer has closed. */
export const UV_EOF = -4095;

const systemErrors = getSystemErrorMap();

/** The name of a negative errno: 'EPIPE' for -32 on Linux. */
export function errnoName(err: number): string {
  return systemErrors.get(err)?.[0] ?? `Unknown system error ${err}`;
}

/** A system error from a negative errno returned by the addon, e.g. `sendmsg EPIPE`. */
export function errnoException(err: number, syscall: string, detail?: string): SystemError {
  const [code, description] = systemErrors.get(err) ?? [`Unknown system error ${err}`, 'unknown error'];
  const message = `${syscall} ${code}${detail ? `: ${detail}` : ''} (${description})`;
  const error = new Error(message) as SystemError;
  error.code = code;
  error.errno = err;
  error.syscall = syscall;
  Error.captureStackTrace(error, errnoException);
  return error;
}

/**
 * fdpass's own error codes. Wrong arguments are Node's TypeError (`ERR_INVALID_ARG_TYPE`) or
 * RangeError (`ERR_OUT_OF_RANGE`); what the kernel refuses is a {@link SystemError}; a call the
 * platform cannot do is Node's `ERR_FEATURE_UNAVAILABLE_ON_PLATFORM`.
 */
export type FdpassErrorCode =
  /** A call on a closed channel, or one pending when it closed; `cause` is the error that ended it, if one did. */
  | 'ERR_FDPASS_CHANNEL_CLOSED'
  /** Bytes or fds from the peer that are no message (a bad frame, a pool message that breaks the protocol): dropped, their fds closed. */
  | 'ERR_FDPASS_BAD_MESSAGE'
  /** A message over the receiver's maxPayloadBytes: dropped, its fds closed. */
  | 'ERR_FDPASS_MESSAGE_TOO_LARGE'
  /** A message with more fds than the receiver's maxFdsPerMessage: dropped, its fds closed. */
  | 'ERR_FDPASS_TOO_MANY_FDS'
  /** The kernel cut a message's fds (MSG_CTRUNC: the receiver at its fd limit, say); those that arrived are closed. */
  | 'ERR_FDPASS_TRUNCATED'
  /** A frame left incomplete longer than frameTimeout: the channel ends, the frame's fds closed. */
  | 'ERR_FDPASS_FRAME_TIMEOUT'
  /** A channel's own socket given to closeFd(), a conversion, or a send that would close it: close the channel instead. */
  | 'ERR_FDPASS_FD_OWNED_BY_CHANNEL'
  /** parentChannel() a second time, in a process started without a channel, or with a malformed FDPASS_CHANNEL_FD. */
  | 'ERR_FDPASS_NO_PARENT_CHANNEL'
  /** A malformed LISTEN_* or NOTIFY_SOCKET variable. */
  | 'ERR_FDPASS_INVALID_ENVIRONMENT'
  /** A listener handover (or a Windows channel's handshake) that failed: the other side left or spoke out of turn. */
  | 'ERR_FDPASS_HANDOVER_FAILED'
  /** A listener handover (or a Windows channel's handshake) that took too long. */
  | 'ERR_FDPASS_HANDOVER_TIMEOUT'
  /** A handover already under way, or an offer already accepted or closed. */
  | 'ERR_FDPASS_HANDOVER_BUSY'
  /** A conversion of an fd of another kind (toServer() of a file, say). */
  | 'ERR_FDPASS_WRONG_FD_KIND'
  /** Sending a net.Socket whose bytes Node has read or may read: they would be lost to the receiver. */
  | 'ERR_FDPASS_SOCKET_IN_USE'
  /** listen() on a closed worker pool. */
  | 'ERR_FDPASS_POOL_CLOSED'
  /** A pool's worker exited before it joined. */
  | 'ERR_FDPASS_WORKER_EXITED'
  /** Windows: a record naming a process that is not the socket's peer. */
  | 'ERR_FDPASS_PEER_MISMATCH'
  /** Windows: a peer the system cannot name. */
  | 'ERR_FDPASS_PEER_UNVERIFIED'
  /**
   * Thrown by require() or import of fdpass when its native addon cannot load (no prebuild for
   * the system and none built, or one the system cannot run): the message says which and what
   * to do; `cause` is node-gyp-build's or dlopen's error.
   */
  | 'ERR_FDPASS_ADDON_NOT_LOADED';

/**
 * An error of fdpass's own: its `code` says which (see {@link FdpassErrorCode}); `cause` what led to it, where something did.
 */
export interface FdpassError extends Error {
  /** Which error it is. */
  code: FdpassErrorCode;
}

/** An error of fdpass's own making (a protocol violation, a closed channel). */
export function fdpassError(code: FdpassErrorCode, message: string, cause?: unknown): FdpassError {
  const error = (cause === undefined ? new Error(message) : new Error(message, { cause })) as FdpassError;
  error.code = code;
  Error.captureStackTrace(error, fdpassError);
  return error;
}

/** A call on a closed channel; `cause`: the error that ended the channel, if one did. */
export function closedError(cause?: Error): FdpassError {
  return fdpassError(
    'ERR_FDPASS_CHANNEL_CLOSED',
    cause === undefined ? 'the channel is closed' : `the channel is closed (${cause.message})`,
    cause,
  );
}

/** Control data cut by the kernel: the receiver hit its fd limit, or a peer sent too many. */
export function truncatedError(syscall: string): FdpassError {
  return fdpassError(
    'ERR_FDPASS_TRUNCATED',
    `${syscall}: the kernel cut the message's fds (MSG_CTRUNC: is the receiver at its fd limit?); ` + 'the fds that did arrive were closed',
  );
}

/**
 * What this platform lacks (Linux's abstract socket names, systemd on Windows), with Node's own
 * code for it.
 */
export function unavailableOnPlatform(message: string): Error & { code: 'ERR_FEATURE_UNAVAILABLE_ON_PLATFORM' } {
  const error = new Error(message) as Error & { code: 'ERR_FEATURE_UNAVAILABLE_ON_PLATFORM' };
  error.code = 'ERR_FEATURE_UNAVAILABLE_ON_PLATFORM';
  Error.captureStackTrace(error, unavailableOnPlatform);
  return error;
}

/** What fdpass cannot do on this platform yet (Windows has no SCM_RIGHTS), said at the call. */
export function unsupportedPlatform(what: string): Error {
  return unavailableOnPlatform(`${what} is not supported on ${process.platform}: it needs Unix domain sockets with SCM_RIGHTS`);
}

/** A call made out of turn (Node's ERR_INVALID_STATE). */
export function invalidState(reason: string): Error {
  const error = new Error(`Invalid state: ${reason}`);
  (error as Error & { code: string }).code = 'ERR_INVALID_STATE';
  Error.captureStackTrace(error, invalidState);
  return error;
}

/**
 * A conversion asked of an fd that is something else (toServer() of a file, say): a
 * TypeError, as Node's own ERR_INVALID_FD_TYPE is.
 */
export function wrongFdKindError(message: string): FdpassError {
  const error = new TypeError(message) as TypeError & FdpassError;
  error.code = 'ERR_FDPASS_WRONG_FD_KIND';
  Error.captureStackTrace(error, wrongFdKindError);
  return error;
}

export function invalidArgType(name: string, expected: string, actual: unknown): TypeError {
  const error = new TypeError(`The "${name}" argument must be ${expected}. Received ${describe(actual)}`);
  (error as TypeError & { code: string }).code = 'ERR_INVALID_ARG_TYPE';
  return error;
}

export function outOfRange(name: string, range: string, actual: unknown): RangeError {
  const error = new RangeError(`The value of "${name}" is out of range. It must be ${range}. Received ${describe(actual)}`);
  (error as RangeError & { code: string }).code = 'ERR_OUT_OF_RANGE';
  return error;
}

export function invalidArgValue(name: string, reason: string, actual: unknown): TypeError {
  const error = new TypeError(`The argument "${name}" ${reason}. Received ${describe(actual)}`);
  (error as TypeError & { code: string }).code = 'ERR_INVALID_ARG_VALUE';
  return error;
}

/** Like Node's own AbortError: code 'ABORT_ERR', the signal's reason as cause. */
export function abortError(signal: AbortSignal): Error {
  const error = new Error('The operation was aborted', { cause: signal.reason });
  error.name = 'AbortError';
  (error as Error & { code: string }).code = 'ABORT_ERR';
  return error;
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'number' || typeof value === 'bigint') return `${typeof value} ${String(value)}`;
  if (typeof value === 'string') return `type string ('${value.length > 28 ? `${value.slice(0, 25)}...` : value}')`;
  if (typeof value === 'function') return `function ${value.name || '<anonymous>'}`;
  if (typeof value === 'object') return `an instance of ${value.constructor?.name ?? 'Object'}`;
  if (typeof value === 'symbol') return `type symbol (${value.toString()})`;
  if (typeof value === 'boolean') return `type boolean (${value})`;
  return 'undefined';
}
