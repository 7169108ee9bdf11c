// What an fd is, named from the addon's raw facts (fstat, the status flags, a socket's
// options): the one place that decides, for describe() and for the conversions.
import { constants as fsConstants } from 'node:fs';
import { binding, constants } from './binding';
import { errnoException } from './errors';
import { toFd, type FdLike } from './fd';

/** An IP socket's family, as Node names it. */
export type IpFamily = 'IPv4' | 'IPv6';
/** A socket's family: an IP family, or 'unix'. */
export type SocketFamily = IpFamily | 'unix';

/** How the fd was opened: flags of the open file description, shared by every copy of the fd. */
export interface OpenFileFlags {
  /** Open for reading: O_RDONLY or O_RDWR (an O_PATH fd is neither readable nor writable). */
  readonly readable: boolean;
  /** Open for writing: O_WRONLY or O_RDWR. */
  readonly writable: boolean;
  /**
   * O_NONBLOCK is set. It belongs to the open file description, not the fd: every process
   * holding a copy sees the same flag, and a change by one is a change for all.
   */
  readonly nonBlocking: boolean;
}

export interface IpSocketDescription extends OpenFileFlags {
  /** 'tcp': a TCP connection (or one that has ended); 'tcp-listener': listening; 'udp'. */
  readonly kind: 'tcp' | 'tcp-listener' | 'udp';
  /** 'IPv4' or 'IPv6'. */
  readonly family: IpFamily;
}

export interface UnixSocketDescription extends OpenFileFlags {
  /**
   * 'unix': a stream socket, connected (or once connected); 'unix-listener': a listening
   * stream socket; 'unix-dgram' and 'unix-seqpacket': sockets a Channel can carry fds over.
   */
  readonly kind: 'unix' | 'unix-listener' | 'unix-dgram' | 'unix-seqpacket';
  /** Always 'unix'. */
  readonly family: 'unix';
}

/** Any other socket: another protocol (SCTP, ICMP...), family (netlink...) or type (raw). */
export interface OtherSocketDescription extends OpenFileFlags {
  /** Always 'socket': see `domain`, `type` and `protocol`. */
  readonly kind: 'socket';
  /** undefined for a family other than these three. */
  readonly family: SocketFamily | undefined;
  /** The raw numbers: AF_*, SOCK_*, IPPROTO_* (-1 where the system does not say). */
  readonly domain: number;
  /** SOCK_STREAM, SOCK_DGRAM, SOCK_RAW... */
  readonly type: number;
  /** The protocol number (IPPROTO_*), or -1 where the system does not say. */
  readonly protocol: number;
  /** Whether the socket listens (SO_ACCEPTCONN). */
  readonly listening: boolean;
}

export interface NonSocketDescription extends OpenFileFlags {
  /**
   * 'file': a regular file (a memfd too); 'pipe': a pipe end or FIFO; 'other': anything
   * else (Linux's eventfd, epoll, signalfd..., or an O_PATH fd of a symlink or socket file).
   */
  readonly kind: 'file' | 'directory' | 'pipe' | 'character-device' | 'block-device' | 'other';
}

/** What describe() finds; `kind` narrows it. */
export type FdDescription = IpSocketDescription | UnixSocketDescription | OtherSocketDescription | NonSocketDescription;

/** What an fd is, in one word: {@link FdDescription}'s `kind`. */
export type FdKind = FdDescription['kind'];

const { S_IFMT, S_IFREG, S_IFDIR, S_IFIFO, S_IFCHR, S_IFBLK, S_IFSOCK, O_WRONLY, O_RDWR, O_NONBLOCK } = fsConstants;
const { AF_UNIX, AF_INET, AF_INET6, SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET, O_ACCMODE, O_PATH, FD_FACTS_LENGTH } = constants;

// IANA's protocol numbers, the same on every system. MPTCP is TCP to its user (Linux).
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const IPPROTO_MPTCP = 262;
const UNKNOWN_PROTOCOL = -1;

const FAILED_CALLS = ['fstat', 'fcntl', 'getsockopt'] as const;
const facts = new Int32Array(FD_FACTS_LENGTH);

const fileKinds = new Map<number, NonSocketDescription['kind']>([
  [S_IFREG, 'file'],
  [S_IFDIR, 'directory'],
  [S_IFIFO, 'pipe'],
  [S_IFCHR, 'character-device'],
  [S_IFBLK, 'block-device'],
]);

/**
 * What an fd is: a TCP connection or listener, a UDP socket, a Unix socket of each type, a
 * file, a pipe... with its address family and open flags. It reads the fd's state (fstat,
 * fcntl, getsockopt) and changes nothing.
 *
 * Throws a system error (code 'EBADF', syscall 'fstat') for an fd that is not open, and
 * `ERR_INVALID_ARG_TYPE` for something that is not an fd (see FdLike). Not on Windows yet.
 *
 * @example
 * const description = describe(message.fd);
 * if (description.kind === 'tcp') console.log(description.family); // 'IPv4' | 'IPv6'
 */
export function describe(fd: FdLike): FdDescription {
  return describeFd(toFd(fd, 'fd'));
}

/** describe() of a number already validated. */
export function describeFd(fd: number): FdDescription {
  const err = binding.describeFd(fd, facts);
  if (err < 0) throw errnoException(err, FAILED_CALLS[facts[0]!] ?? 'fstat', `fd ${fd}`);
  const [fileType, statusFlags, domain, type, protocol, listening] = facts as unknown as [number, number, number, number, number, number];
  const pathOnly = O_PATH !== 0 && (statusFlags & O_PATH) !== 0;
  const access = statusFlags & O_ACCMODE;
  const flags: OpenFileFlags = {
    readable: !pathOnly && access !== O_WRONLY,
    writable: !pathOnly && (access === O_WRONLY || access === O_RDWR),
    nonBlocking: (statusFlags & O_NONBLOCK) !== 0,
  };
  if ((fileType & S_IFMT) !== S_IFSOCK) return { kind: fileKinds.get(fileType) ?? 'other', ...flags };
  if (domain === -1) return { kind: 'other', ...flags };
  return { ...describeSocket(domain, type, protocol, listening !== 0), ...flags };
}

type SocketKind =
  | Omit<IpSocketDescription, keyof OpenFileFlags>
  | Omit<UnixSocketDescription, keyof OpenFileFlags>
  | Omit<OtherSocketDescription, keyof OpenFileFlags>;

function describeSocket(domain: number, type: number, protocol: number, listening: boolean): SocketKind {
  const family = familyOf(domain);
  if (family === 'IPv4' || family === 'IPv6') {
    const tcp = protocol === IPPROTO_TCP || protocol === IPPROTO_MPTCP || protocol === UNKNOWN_PROTOCOL;
    const udp = protocol === IPPROTO_UDP || protocol === UNKNOWN_PROTOCOL;
    if (type === SOCK_STREAM && tcp) return { kind: listening ? 'tcp-listener' : 'tcp', family };
    if (type === SOCK_DGRAM && udp) return { kind: 'udp', family };
  } else if (family === 'unix') {
    if (type === SOCK_STREAM) return { kind: listening ? 'unix-listener' : 'unix', family };
    if (type === SOCK_DGRAM) return { kind: 'unix-dgram', family };
    if (type === SOCK_SEQPACKET && !listening) return { kind: 'unix-seqpacket', family };
  }
  return { kind: 'socket', family, domain, type, protocol, listening };
}

function familyOf(domain: number): SocketFamily | undefined {
  if (domain === AF_INET) return 'IPv4';
  if (domain === AF_INET6) return 'IPv6';
  if (domain === AF_UNIX) return 'unix';
  return undefined;
}

/** How an error message names what an fd is: "a listening TCP socket (IPv6)", "a file opened read-only". */
export function kindPhrase(description: FdDescription): string {
  switch (description.kind) {
    case 'tcp':
      return `a TCP connection (${description.family})`;
    case 'tcp-listener':
      return `a listening TCP socket (${description.family})`;
    case 'udp':
      return `a UDP socket (${description.family})`;
    case 'unix':
      return 'a Unix stream socket';
    case 'unix-listener':
      return 'a listening Unix stream socket';
    case 'unix-dgram':
      return 'a Unix datagram socket';
    case 'unix-seqpacket':
      return 'a Unix seqpacket socket';
    case 'socket':
      return `a socket of address family ${description.domain}, type ${description.type}, protocol ${description.protocol}`;
    case 'file':
      return `a file opened ${openedFor(description)}`;
    case 'pipe':
      return `a pipe end opened ${openedFor(description)}`;
    case 'directory':
      return 'a directory';
    case 'character-device':
      return 'a character device';
    case 'block-device':
      return 'a block device';
    case 'other':
      return 'neither a socket, a file, a pipe, a directory nor a device';
  }
}

function openedFor({ readable, writable }: OpenFileFlags): string {
  if (readable) return writable ? 'read-write' : 'read-only';
  return writable ? 'write-only' : 'for neither reading nor writing (O_PATH)';
}
