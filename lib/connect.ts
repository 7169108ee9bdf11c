// A client: connect() to a server's Unix socket path (or abstract name), as a Channel.
import { constants as os } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { binding } from './binding';
import { Channel, channelOptions, type ChannelOptions } from './channel';
import { abortError, errnoException } from './errors';
import { closeFds } from './fd';
import { describeAddress, socketPathOptions, type SocketAddress, type SocketPathOptions } from './socket-address';
import { validateAbortSignal } from './validators';

export interface ConnectOptions extends SocketPathOptions, ChannelOptions {
  /** Gives up connecting (while the server's backlog is full): rejects with an AbortError. */
  signal?: AbortSignal;
}

const EAGAIN = -os.errno.EAGAIN;
// A Unix socket connects at once or, while the server's backlog is full, not at all (EAGAIN);
// try again with a growing pause, for this long in all, before giving up with EAGAIN.
const FULL_BACKLOG_WAIT_MS = 5000;
const MAX_RETRY_PAUSE_MS = 50;

/**
 * A channel connected to the server at path. Rejects with ENOENT when nothing is there,
 * ECONNREFUSED when a socket file is there but no server, EPROTOTYPE for a server of
 * another socket type.
 * @example
 * import { connect } from 'fdpass';
 *
 * const channel = await connect('/run/myapp/fds.sock');
 * await channel.send({ data: 'give me the log file' });
 * const { fd } = await channel.recv();
 */
export async function connect(pathOrOptions: string | ConnectOptions): Promise<Channel> {
  const { options, address, typeNumber } = socketPathOptions(pathOrOptions, 'connect');
  const signal = validateAbortSignal(options.signal, 'signal');
  channelOptions(options);
  if (signal?.aborted) throw abortError(signal);

  const sock = await connectSocket(address, typeNumber, signal);
  try {
    return new Channel(sock, options);
  } catch (error) {
    closeFds([sock]);
    throw error;
  }
}

/** A socket of typeNumber connected to address: its fd, which the caller owns. */
export async function connectSocket(address: SocketAddress, typeNumber: number, signal: AbortSignal | undefined): Promise<number> {
  const sock = binding.unixSocket(typeNumber);
  if (sock < 0) throw errnoException(sock, 'socket');
  try {
    const giveUpAt = performance.now() + FULL_BACKLOG_WAIT_MS;
    for (let pause = 1; ; pause = Math.min(2 * pause, MAX_RETRY_PAUSE_MS)) {
      const err = binding.connectUnix(sock, address.name, address.abstract);
      if (err === 0) return sock;
      if (err !== EAGAIN || performance.now() >= giveUpAt) {
        throw errnoException(
          err,
          'connect',
          err === EAGAIN ? `${describeAddress(address)}: the server's backlog stayed full` : describeAddress(address),
        );
      }
      await sleep(pause, undefined, { signal });
    }
  } catch (error) {
    closeFds([sock]);
    throw error;
  }
}
