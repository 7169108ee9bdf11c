// IO::FDPass 1.3's send and recv on Windows, byte for byte: a record of the sender's process
// id (4 bytes, little-endian) and the value of a private copy of its handle (8 bytes), over
// any connected stream socket. The receiver pulls the copy out of the sender
// (DuplicateHandle with DUPLICATE_CLOSE_SOURCE), but only from the socket's own peer: a
// record naming another process is refused before that process is opened.
import { windowsBinding } from './binding';
import { UV_EOF, errnoException, fdpassError, type FdpassError, type SystemError } from './errors';

const RECORD_BYTES = 12;
const UV_EAGAIN = -4088;
const UV_ENOTCONN = -4053;
const UV_ENOMEM = -4057;
// Wine builds its TCP table from /proc/net/tcp, which can miss rows, or fail, while other
// sockets come and go: a row that is not found is looked for again, a few times.
const PEER_LOOKUPS = 5;
const PULL_STAGES = ['OpenProcess', 'DuplicateHandle', 'uv_open_osfhandle'] as const;
const PEER_STAGES = ['getsockname', 'WSAIoctl', 'getpeername', 'GetExtendedTcpTable'] as const;

// Wine's TCP table names the process behind a connecting socket but not behind an accepted
// one (pid 0), and Wine has no AF_UNIX: there, and only there, a peer the table names no
// process for is taken as local and unnamed. On Windows such a peer is refused.
const underWine = process.platform === 'win32' && windowsBinding.wineVersion() !== null;

// Records begun on a non-blocking socket: the bytes that came, kept per socket fd until the
// rest arrives; dropped at the end of the stream and at any error. A socket closed with part
// of a record pending leaves it here, under a number Node may give the next socket: so each
// is kept with the socket's identity (its handle and addresses), and is not the part of a
// record of a socket with another identity (it is dropped then). Over loopback TCP the
// addresses are both ends' ports, which a later connection does not repeat while the old one
// is in TIME_WAIT. An AF_UNIX socket (Windows itself; Wine has none) names at most the
// listener's path: a later connection to that path that got the same fd number and the same
// handle value would be taken for the old socket. Nothing tells Windows sockets apart for
// certain, and nothing here hears an fd close.
const partialRecords = new Map<number, { identity: string | number; record: Uint8Array }>();

function takePartialRecord(socketFd: number): Uint8Array | undefined {
  const partial = partialRecords.get(socketFd);
  if (partial === undefined) return undefined;
  partialRecords.delete(socketFd);
  const identity = windowsBinding.socketIdentity(socketFd);
  return typeof identity === 'string' && identity === partial.identity ? partial.record : undefined;
}

type Failure = SystemError | FdpassError;

/** Sends fd's handle over socketFd: null once sent, or why not (the copy is closed then). */
export function sendHandle(socketFd: number, fd: number): Failure | null {
  const copy = windowsBinding.duplicateOwnHandle(fd);
  if (typeof copy === 'number') return errnoException(copy, 'DuplicateHandle');
  const record = new Uint8Array(RECORD_BYTES);
  const view = new DataView(record.buffer);
  view.setUint32(0, process.pid, true);
  view.setBigUint64(4, copy, true);
  const sent = windowsBinding.sendAll(socketFd, record);
  if (sent < 0) {
    windowsBinding.closeHandle(copy); // the peer has no record of it: nobody else would
    return errnoException(sent, 'send');
  }
  return null;
}

/**
 * Receives one handle from socketFd as a new fd, or why not. afterOpen is for tests only: it
 * runs between opening the sender and checking its pid again.
 */
export function recvHandle(socketFd: number, afterOpen?: () => void): number | Failure {
  const record = takePartialRecord(socketFd) ?? new Uint8Array(RECORD_BYTES + 1);
  // record[RECORD_BYTES] counts the bytes that came so far.
  while (record[RECORD_BYTES]! < RECORD_BYTES) {
    const filled = record[RECORD_BYTES]!;
    const got = windowsBinding.recv(socketFd, record, filled, RECORD_BYTES - filled);
    if (got > 0) {
      record[RECORD_BYTES] = filled + got;
    } else if (got === 0) {
      return filled === 0
        ? errnoException(UV_EOF, 'recv', 'the peer closed the socket')
        : fdpassError('ERR_FDPASS_BAD_MESSAGE', `recv: the peer closed the socket after ${filled} of a record's ${RECORD_BYTES} bytes`);
    } else {
      if (got === UV_EAGAIN && filled > 0) partialRecords.set(socketFd, { identity: windowsBinding.socketIdentity(socketFd), record });
      return errnoException(got, 'recv');
    }
  }
  const view = new DataView(record.buffer);
  const pid = view.getUint32(0, true);
  const handle = view.getBigUint64(4, true);
  const refused = checkPeer(socketFd, pid);
  if (refused) return refused;
  // The pid was the peer's when the table was read; the process may have exited since and
  // its pid gone to another. Once we hold the process open its pid cannot be reused, so the
  // peer is checked again while we hold it, and only then is the handle pulled.
  const sender = windowsBinding.openProcess(pid);
  if (typeof sender === 'number') return errnoException(sender, 'OpenProcess');
  try {
    afterOpen?.();
    const changed = checkPeer(socketFd, pid);
    if (changed) return changed;
    const stage = new Int32Array(1);
    const fd = windowsBinding.pullHandle(sender, handle, stage);
    return fd >= 0 ? fd : errnoException(fd, PULL_STAGES[stage[0]!] ?? 'DuplicateHandle');
  } finally {
    windowsBinding.closeHandle(sender);
  }
}

// The record's process must be the socket's peer: otherwise a peer could make us take (and
// close, DUPLICATE_CLOSE_SOURCE) a handle of any process we may open.
function checkPeer(socketFd: number, pid: number): Failure | null {
  const stage = new Int32Array(1);
  let peer = windowsBinding.peerProcessId(socketFd, stage);
  for (let i = 1; i < PEER_LOOKUPS && (peer === UV_ENOTCONN || peer === UV_ENOMEM); i++)
    peer = windowsBinding.peerProcessId(socketFd, stage);
  if (peer < 0) {
    return errnoException(
      peer,
      PEER_STAGES[stage[0]!] ?? 'getpeername',
      `cannot tell which process is at the other end (AF_UNIX or loopback TCP only); the record's process ${pid} was not opened`,
    );
  }
  if (peer === 0 && !underWine) {
    return fdpassError(
      'ERR_FDPASS_PEER_UNVERIFIED',
      `recv: the system names no process behind the socket; the record's process ${pid} was not opened`,
    );
  }
  if (peer !== 0 && peer !== pid) {
    return fdpassError(
      'ERR_FDPASS_PEER_MISMATCH',
      `recv: the record names process ${pid}, but the socket's peer is process ${peer}; nothing was taken from either`,
    );
  }
  return null;
}
