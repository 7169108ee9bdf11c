// A Channel's options, checked once: the same on every platform (lib/channel.ts on Unix,
// lib/win/channel.ts on Windows).
import { MAX_FDS_PER_FRAME, MAX_PAYLOAD_BYTES } from './framing';
import type { ReceiveLimits } from './receiver';
import { validateInteger, validateOptions } from './validators';

/** A channel's limits: what a peer may make it hold (the peer is not trusted), and how long a frame may take. */
export interface ChannelOptions {
  /**
   * Most received fds held for nobody (messages nobody has taken, a frame still arriving)
   * before the channel stops reading and leaves the rest in the kernel, so a peer cannot fill
   * your fd table. Exceeded by one message at most. Default 128.
   */
  maxBufferedFds?: number;
  /**
   * The same for memory: each buffered message or error costs its payload plus 256 bytes, and
   * bytes of a frame still arriving count too. Reading pauses between messages, never inside
   * a frame. Default: 4 MiB, or maxPayloadBytes if that is larger.
   */
  maxBufferedBytes?: number;
  /**
   * Largest payload accepted from the peer; a larger message is dropped (its fds closed)
   * and reported as an error with code 'ERR_FDPASS_MESSAGE_TOO_LARGE'. Default 1 MiB.
   * On seqpacket and dgram sockets it also sizes the receive buffer, up to 4 MiB.
   */
  maxPayloadBytes?: number;
  /**
   * Most fds accepted in one message from the peer; a message with more is dropped (its
   * fds closed) and reported with code 'ERR_FDPASS_TOO_MANY_FDS'. Default 253, Linux's limit.
   */
  maxFdsPerMessage?: number;
  /**
   * Milliseconds a frame may stay incomplete on a stream while the channel reads, before the
   * channel ends with 'ERR_FDPASS_FRAME_TIMEOUT' and closes the frame's fds: a peer cannot
   * park fds in a frame it never finishes. 0 waits forever. Default 10000.
   */
  frameTimeout?: number;
}

const DEFAULT_MAX_BUFFERED_FDS = 128;
const DEFAULT_MAX_BUFFERED_BYTES = 4 * 1024 * 1024;
const DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024;
const DEFAULT_FRAME_TIMEOUT_MS = 10_000;
/** A channel's options, checked, with their defaults. */
export function channelOptions(options: ChannelOptions | undefined): {
  maxBufferedFds: number;
  maxBufferedBytes: number;
  limits: ReceiveLimits;
} {
  const {
    maxBufferedFds = DEFAULT_MAX_BUFFERED_FDS,
    maxPayloadBytes = DEFAULT_MAX_PAYLOAD_BYTES,
    maxFdsPerMessage = MAX_FDS_PER_FRAME,
    frameTimeout = DEFAULT_FRAME_TIMEOUT_MS,
    maxBufferedBytes = Math.max(
      DEFAULT_MAX_BUFFERED_BYTES,
      validateInteger(maxPayloadBytes, 'options.maxPayloadBytes', 0, MAX_PAYLOAD_BYTES),
    ),
  } = validateOptions(options, 'options');
  return {
    maxBufferedFds: validateInteger(maxBufferedFds, 'options.maxBufferedFds', 1, Number.MAX_SAFE_INTEGER),
    maxBufferedBytes: validateInteger(maxBufferedBytes, 'options.maxBufferedBytes', 1, Number.MAX_SAFE_INTEGER),
    limits: {
      maxPayloadBytes,
      maxFdsPerMessage: validateInteger(maxFdsPerMessage, 'options.maxFdsPerMessage', 0, MAX_FDS_PER_FRAME),
      frameTimeout: validateInteger(frameTimeout, 'options.frameTimeout', 0, 0x7fff_ffff),
    },
  };
}
