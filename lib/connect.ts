// A client: connect() to a server's Unix socket path (or abstract name), as a Channel.
import { constants as os } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { binding, constants } from './binding';
import { Channel, channelOptions, type ChannelOptions } from './channel';
import { abortError, errnoException, invalidArgType, invalidArgValue } from './errors';
import { closeFds } from './fd';
import { validateOptions } from './validators';
import type { ServerSocketType } from './server';
import { describeAddress, socketAddress } from './socket-address';

export interface ConnectOptions extends ChannelOptions {
  /** A file path, or with `abstract` a name in Linux's abstract namespace. */
  path: string;
  abstract?: boolean;
  /** The server's socket type. Default 'stream'. */
  type?: ServerSocketType;
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
 */
export async function connect(pathOrOptions: string | ConnectOptions): Promise<Channel> {
  const options = typeof pathOrOptions === 'string' ? { path: pathOrOptions } : validateOptions(pathOrOptions, 'options');
  const { path, abstract, type = 'stream', signal } = options as Partial<ConnectOptions>;
  const address = socketAddress(path, abstract, 'connect');
  if (type !== 'stream' && type !== 'seqpacket') throw invalidArgValue('type', "must be 'stream' or 'seqpacket'", type);
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidArgType('signal', 'an instance of AbortSignal', signal);
  channelOptions(options as ChannelOptions);
  if (signal?.aborted) throw abortError(signal);

  const sock = binding.unixSocket(type === 'stream' ? constants.SOCK_STREAM : constants.SOCK_SEQPACKET);
  if (sock < 0) throw errnoException(sock, 'socket');
  try {
    const giveUpAt = performance.now() + FULL_BACKLOG_WAIT_MS;
    for (let pause = 1; ; pause = Math.min(2 * pause, MAX_RETRY_PAUSE_MS)) {
      const err = binding.connectUnix(sock, address.name, address.abstract);
      if (err === 0) break;
      if (err !== EAGAIN || performance.now() >= giveUpAt) {
        throw errnoException(err, 'connect', err === EAGAIN ? `${describeAddress(address)}: the server's backlog stayed full` : describeAddress(address));
      }
      await sleep(pause, undefined, { signal });
    }
    return new Channel(sock, options as ChannelOptions);
  } catch (error) {
    closeFds([sock]);
    throw error;
  }
}
