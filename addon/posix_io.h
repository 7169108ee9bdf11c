// The socket syscalls fdpass makes, in plain POSIX: no Node-API here.
// Every function returns a value >= 0 on success or -errno on failure.
#pragma once

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

namespace fdpass {

// Linux refuses more than this many fds in one SCM_RIGHTS message (EINVAL).
constexpr size_t kMaxFdsPerMessage = 253;

// The most messages one batch call moves (the rest wait for the next call).
constexpr size_t kMaxMessagesPerBatch = 64;

// Flags the caller may pass through to send/recv.
int DontWaitFlag();

// socketpair(AF_UNIX, type) with both ends close-on-exec and non-blocking.
int SocketPair(int type, int out[2]);

// pipe(2) with both ends close-on-exec and non-blocking: out[0] reads, out[1] writes.
int Pipe(int out[2]);

// read(2) of what is there, without blocking: the bytes read, 0 at end of file, or -errno
// (-EAGAIN: nothing yet).
ssize_t ReadSome(int fd, void* buf, size_t len);

// SO_TYPE of fd: SOCK_STREAM, SOCK_SEQPACKET, SOCK_DGRAM; -ENOTSOCK if fd is not a socket.
int SocketType(int fd);

int SetNonBlocking(int fd, bool nonblocking);
// Sets or clears FD_CLOEXEC: 0 or -errno.
int SetCloseOnExec(int fd, bool closeOnExec);

// A new fd for fd's open file, close-on-exec: the new fd or -errno.
int DuplicateFd(int fd);

// Which open file an fd refers to: fd numbers are reused, a (device, inode) pair is not
// while the file is open.
struct FileIdentity {
  dev_t dev;
  ino_t ino;
};

int GetFileIdentity(int fd, FileIdentity* out);

// Whether fd still refers to the file `identity` names (false once fd is closed or reused).
bool IsSameFile(int fd, const FileIdentity& identity);

// Bytes waiting in a stream socket's receive queue (FIONREAD), or -errno.
int QueuedBytes(int sock);

// fds waiting in a Unix socket's receive queue, as Linux shows them ("scm_fds" in
// /proc/self/fdinfo, Linux 5.16 and later); -1 where the system does not say. Asked after
// QueuedBytes, it counts at least the fds of the bytes QueuedBytes counted: the kernel counts
// a message's fds before it queues the message. *info is the fdinfo file, opened on first use
// and kept (a pread is a fifth of an open, read and close); the caller closes it.
long QueuedFds(int sock, int* info);

// sendmsg(2) of len bytes with nfds fds in SCM_RIGHTS; always without SIGPIPE.
// Returns the number of bytes sent.
ssize_t SendMessage(int sock, const void* data, size_t len, const int* fds, size_t nfds, int flags);

// The same for the nparts buffers at parts, sent one after the other as one message (a
// frame's header and its payload, without copying them together first).
ssize_t SendParts(int sock, struct iovec* parts, size_t nparts, const int* fds, size_t nfds,
                  int flags);

struct ReceivedInfo {
  size_t nfds;    // fds copied out to the caller's array
  int msg_flags;  // MSG_CTRUNC, MSG_TRUNC... as the kernel set them
};

// recvmsg(2) into data[0..cap) and fds[0..fds_cap), received fds close-on-exec.
// fds_cap must be at least kMaxFdsPerMessage. If the kernel cut the control data
// (MSG_CTRUNC), every fd that did arrive is closed and info->nfds is 0: the caller
// reports the cut, nothing leaks. Returns the number of data bytes received.
ssize_t ReceiveMessage(int sock, void* data, size_t cap, int* fds, size_t fds_cap,
                       ReceivedInfo* info, int flags);

// One message's place in a batch receive: the caller's buffers in, the outcome out.
struct MessageSlot {
  void* data;
  size_t cap;
  int* fds;       // room for kMaxFdsPerMessage
  ssize_t bytes;  // bytes received, or -errno
  ReceivedInfo info;
};

// Receives up to count messages that are already waiting, without blocking: one
// recvmmsg(2) where the system has it, else recvmsg(2) until EAGAIN. Each slot is filled
// as ReceiveMessage fills its arguments. Returns the number of slots filled, 0 if nothing
// was waiting. A slot with an error or a 0-byte read (EOF on a stream) may be followed by
// more of the same; the caller stops at the first.
size_t ReceiveMessages(int sock, MessageSlot* slots, size_t count);

// One message of a batch send.
struct OutgoingMessage {
  const void* data;
  size_t len;
  const int* fds;
  size_t nfds;
  size_t sent;  // out: bytes the kernel took
};

// Sends messages in order without blocking: one sendmmsg(2) where the system has it, else
// sendmsg(2) until one fails. Returns how many messages the kernel took, or -errno if it
// took none; see each one's `sent`. On a stream socket a message the kernel takes only in
// part is the last one taken: sendmmsg(2) stops there since Linux 4.9 ("sock: fix sendmmsg
// for partial sendmsg"; Node 20 needs 4.18), as the loop does elsewhere.
ssize_t SendMessages(int sock, OutgoingMessage* messages, size_t count);

void CloseFds(const int* fds, size_t nfds);

// close(2) of one fd: 0 or -errno (EINTR counts as closed: Linux releases the fd regardless).
int CloseFd(int fd);

}  // namespace fdpass
