// Who is at the other end of a Unix socket: SO_PEERCRED on Linux, getpeereid elsewhere.
import { binding } from './binding';
import { errnoException } from './errors';

/** The peer's credentials as of its connect() (or the socketpair() call). */
export interface PeerCredentials {
  /** The peer's process id; -1 where the system does not report it (some BSDs). */
  readonly pid: number;
  /** The peer's user id. */
  readonly uid: number;
  /** The peer's group id. */
  readonly gid: number;
}

const out = new Int32Array(3);

/** The credentials of sock's peer; throws a system error (syscall 'getsockopt') if there is none. */
export function readPeerCredentials(sock: number): PeerCredentials {
  const err = binding.peerCredentials(sock, out);
  if (err < 0) throw errnoException(err, 'getsockopt', 'no peer credentials');
  // uid and gid are unsigned (nobody is 65534, some systems use 4294967294).
  return Object.freeze({ pid: out[0]!, uid: out[1]! >>> 0, gid: out[2]! >>> 0 });
}
