// A TCP listening socket made by the addon (socket, SO_REUSEADDR, bind, listen), so that its
// connections are accepted without a JS socket each (acceptor.ts); a listening socket taken
// from elsewhere, checked; and the addresses the addon reports, in Node's shape.
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { constants as os } from 'node:os';
import { binding, constants } from './binding';
import { errnoException, invalidArgType, invalidArgValue, outOfRange, type SystemError } from './errors';
import { closeFds } from './fd';
import { validateBoolean, validateFd, validateInteger } from './validators';

/** An IP address and port, as net.Server.address() reports them. */
export interface InetAddress {
  /** The IP address, as text. */
  address: string;
  /** 'IPv4' or 'IPv6'. */
  family: 'IPv4' | 'IPv6';
  /** The port. */
  port: number;
}

/** A TCP address to listen on, as net.Server.listen() takes it. */
export interface TcpListenOptions {
  /** Default 0: the kernel picks a free port (see address()). */
  port?: number;
  /**
   * An IP address or a name to look up. Default: every address, IPv6 and IPv4 ('::' with
   * IPv4 mapped in), or '0.0.0.0' where the host has no IPv6; as net.Server.listen().
   */
  host?: string;
  /** Connections the kernel queues until they are accepted. Default 511, as Node's net. */
  backlog?: number;
  /** With an IPv6 host, refuse IPv4 clients (IPV6_V6ONLY). Default false. */
  ipv6Only?: boolean;
  /**
   * TCP_NODELAY on the listening socket, which its connections inherit on Linux and the BSDs:
   * no Nagle delay on small writes, as http.createServer() sets by default. Default true.
   */
  noDelay?: boolean;
}

const DEFAULT_BACKLOG = 511;
const EAFNOSUPPORT = -os.errno.EAFNOSUPPORT;
const { INET_ADDRESS_BYTES } = constants;
const addressScratch = new Uint8Array(INET_ADDRESS_BYTES);
const socketFacts = new Int32Array(4);

/** The address the addon wrote at data[offset] (see inet_socket.h), or undefined for a non-IP socket. */
export function readInetAddress(data: Uint8Array, offset: number): InetAddress | undefined {
  const family = data[offset]!;
  if (family !== 4 && family !== 6) return undefined;
  const length = data[offset + 1]!;
  const port = data[offset + 2]! | (data[offset + 3]! << 8);
  const address = Buffer.from(data.buffer, data.byteOffset + offset + 4, length).toString('latin1');
  return { address, family: family === 4 ? 'IPv4' : 'IPv6', port };
}

/** Whether a TCP socket has TCP_NODELAY set (a listener's connections inherit it). */
export function hasNoDelay(fd: number): boolean {
  // A failure (a stream socket that is not TCP, say) reads as no: the answer that costs a syscall, not Nagle's delay.
  return binding.getSocketOption(fd, constants.IPPROTO_TCP, constants.TCP_NODELAY) > 0;
}

/** The socket's own address (getsockname), or undefined for a socket that is not TCP/IP. */
export function localAddress(fd: number): InetAddress | undefined {
  const err = binding.localAddress(fd, addressScratch);
  if (err < 0) throw errnoException(err, 'getsockname', `fd ${fd}`);
  return readInetAddress(addressScratch, 0);
}

/** Binds and listens on a new TCP socket: close-on-exec and non-blocking, owned by the caller. */
export async function listenTcp(options: TcpListenOptions): Promise<{ fd: number; address: InetAddress }> {
  const { port = 0, host, backlog = DEFAULT_BACKLOG, ipv6Only = false, noDelay = true } = options;
  if (typeof port !== 'number') throw invalidArgType('options.port', 'of type number', port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw outOfRange('options.port', '>= 0 and <= 65535', port);
  if (host !== undefined && typeof host !== 'string') throw invalidArgType('options.host', 'of type string', host);
  validateInteger(backlog, 'options.backlog', 0, 0x7fff_ffff);
  validateBoolean(ipv6Only, 'options.ipv6Only');
  validateBoolean(noDelay, 'options.noDelay');
  const settings = { port, backlog, ipv6Only, noDelay };
  if (host === undefined) {
    try {
      return bindAndListen('::', 6, settings);
    } catch (error) {
      if ((error as SystemError).errno !== EAFNOSUPPORT) throw error;
      return bindAndListen('0.0.0.0', 4, settings); // no IPv6 on this host
    }
  }
  const family = isIP(host);
  if (family === 4 || family === 6) return bindAndListen(host, family, settings);
  const found = await lookup(host);
  return bindAndListen(found.address, found.family === 6 ? 6 : 4, settings);
}

function bindAndListen(
  host: string,
  family: 4 | 6,
  settings: { port: number; backlog: number; ipv6Only: boolean; noDelay: boolean },
): { fd: number; address: InetAddress } {
  const where = `${family === 6 ? `[${host}]` : host}:${settings.port}`;
  const fd = binding.inetSocket(family);
  if (fd < 0) throw addressError(fd, 'socket', where, host, settings.port);
  try {
    const { SOL_SOCKET, SO_REUSEADDR, IPPROTO_IPV6, IPV6_V6ONLY, IPPROTO_TCP, TCP_NODELAY } = constants;
    // As libuv does for every TCP listener: a restarted server can bind at once, while
    // connections of its predecessor are still in TIME_WAIT.
    let err = binding.setSocketOption(fd, SOL_SOCKET, SO_REUSEADDR, 1);
    if (err === 0 && family === 6) err = binding.setSocketOption(fd, IPPROTO_IPV6, IPV6_V6ONLY, settings.ipv6Only ? 1 : 0);
    if (err === 0 && settings.noDelay) err = binding.setSocketOption(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    if (err < 0) throw addressError(err, 'setsockopt', where, host, settings.port);
    err = binding.bindInet(fd, family, Buffer.from(host, 'latin1'), settings.port);
    if (err < 0) throw addressError(err, 'bind', where, host, settings.port);
    err = binding.listen(fd, settings.backlog);
    if (err < 0) throw addressError(err, 'listen', where, host, settings.port);
    return { fd, address: localAddress(fd)! };
  } catch (error) {
    closeFds([fd]);
    throw error;
  }
}

/** A system error that says which address, with `address` and `port`, as Node's net does. */
function addressError(err: number, syscall: string, where: string, address: string, port: number): SystemError {
  const error = errnoException(err, syscall, where) as SystemError & { address: string; port: number };
  error.address = address;
  error.port = port;
  return error;
}

/**
 * Checks that fd is a listening stream socket (TCP, or Unix), as received from systemd or a
 * server handing over: the address it listens on (undefined for a Unix socket).
 */
export function checkListeningSocket(fd: number, name: string): InetAddress | undefined {
  validateFd(fd, name);
  const err = binding.inspectSocket(fd, socketFacts);
  if (err === -os.errno.ENOTSOCK) throw invalidArgValue(name, `is fd ${fd}, which is not a socket; a listening TCP socket is needed`, fd);
  if (err < 0) throw errnoException(err, 'getsockopt', `fd ${fd}`);
  const [domain, type, listening] = socketFacts as unknown as [number, number, number];
  const known = domain === constants.AF_INET || domain === constants.AF_INET6 || domain === constants.AF_UNIX;
  if (!known || type !== constants.SOCK_STREAM)
    throw invalidArgValue(name, `is fd ${fd}, a socket that is neither TCP nor a Unix stream socket`, fd);
  if (!listening) throw invalidArgValue(name, `is fd ${fd}, a socket that is not listening (call listen(2) on it first)`, fd);
  return domain === constants.AF_UNIX ? undefined : localAddress(fd);
}
