// The socket syscalls fdpass makes, and every platform difference among them.
#include "posix_io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <vector>

#if defined(__linux__)
#define FDPASS_HAVE_MMSG 1  // recvmmsg(2) and sendmmsg(2): a batch in one syscall
#endif

namespace fdpass {

namespace {

[[maybe_unused]] int SetCloexec(int fd) {
  int flags = fcntl(fd, F_GETFD);
  if (flags == -1) return -errno;
  if (fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == -1) return -errno;
  return 0;
}

#if !defined(MSG_NOSIGNAL)
// macOS: no MSG_NOSIGNAL; the socket option does the same per socket.
#define MSG_NOSIGNAL 0
#define FDPASS_NEEDS_SO_NOSIGPIPE 1
#endif

#if !defined(MSG_CMSG_CLOEXEC)
// macOS: no atomic close-on-exec on receive; set it right after recvmsg.
#define MSG_CMSG_CLOEXEC 0
#define FDPASS_NEEDS_CLOEXEC_AFTER_RECV 1
#endif

// Control buffer large enough for the kernel's per-message maximum, aligned for cmsghdr.
union ControlBuffer {
  struct cmsghdr align;
  char buf[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
};

// msg sends the nparts iovecs at parts (the caller's, alive until the send) as one message.
void PrepareSend(struct msghdr* msg, struct iovec* parts, size_t nparts, ControlBuffer* control,
                 const int* fds, size_t nfds) {
  memset(msg, 0, sizeof(*msg));
  msg->msg_iov = parts;
  msg->msg_iovlen = nparts;
  if (nfds == 0) return;
  memset(control, 0, CMSG_SPACE(sizeof(int) * nfds));
  msg->msg_control = control->buf;
  msg->msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
  struct cmsghdr* cmsg = CMSG_FIRSTHDR(msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
  memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
}

void PrepareReceive(struct msghdr* msg, struct iovec* iov, ControlBuffer* control, void* data,
                    size_t cap) {
  iov->iov_base = data;
  iov->iov_len = cap;
  memset(msg, 0, sizeof(*msg));
  msg->msg_iov = iov;
  msg->msg_iovlen = 1;
  msg->msg_control = control->buf;
  msg->msg_controllen = sizeof(control->buf);
}

// Copies the fds of a received message out (fds has room for kMaxFdsPerMessage). Walks
// every cmsg: a peer may split its fds over several SCM_RIGHTS headers. If the kernel cut
// the control data (MSG_CTRUNC), the message is unusable: close what did arrive.
void TakeFds(struct msghdr* msg, int* fds, ReceivedInfo* info) {
  size_t count = 0;
  for (struct cmsghdr* cmsg = CMSG_FIRSTHDR(msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    size_t here = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < here; i++) {
      int fd;
      // CMSG_DATA need not be aligned for int: copy, do not cast.
      memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
      if (count < kMaxFdsPerMessage) {
        fds[count++] = fd;
      } else {
        close(fd);  // the control buffer holds no more than this; never leak regardless
      }
    }
  }
#if defined(FDPASS_NEEDS_CLOEXEC_AFTER_RECV)
  for (size_t i = 0; i < count; i++) SetCloexec(fds[i]);
#endif
  info->msg_flags = msg->msg_flags;
  if (msg->msg_flags & MSG_CTRUNC) {
    CloseFds(fds, count);
    count = 0;
  }
  info->nfds = count;
}

#if defined(FDPASS_HAVE_MMSG)
// A header, an iovec and a control buffer per message of a batch, kept per thread: a batch
// call runs to completion before the next on the same thread.
struct BatchScratch {
  std::vector<ControlBuffer> controls;
  std::vector<struct mmsghdr> headers;
  std::vector<struct iovec> iovs;
};

BatchScratch& ScratchFor(size_t count) {
  thread_local BatchScratch scratch;
  if (scratch.headers.size() < count) {
    scratch.controls.resize(count);
    scratch.headers.resize(count);
    scratch.iovs.resize(count);
  }
  return scratch;
}
#endif

}  // namespace

int DontWaitFlag() { return MSG_DONTWAIT; }

// A pair made without the atomic flags: both ends made close-on-exec and non-blocking, or
// both closed.
[[maybe_unused]] int FinishPair(int out[2]) {
  for (int i = 0; i < 2; i++) {
    int err = SetCloexec(out[i]);
    if (err == 0) err = SetNonBlocking(out[i], true);
    if (err != 0) {
      close(out[0]);
      close(out[1]);
      return err;
    }
  }
  return 0;
}

int SocketPair(int type, int out[2]) {
#if defined(SOCK_CLOEXEC) && defined(SOCK_NONBLOCK)
  if (socketpair(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, out) == -1) return -errno;
#else
  if (socketpair(AF_UNIX, type, 0, out) == -1) return -errno;
  int err = FinishPair(out);
  if (err != 0) return err;
#endif
#if defined(FDPASS_NEEDS_SO_NOSIGPIPE)
  int on = 1;
  setsockopt(out[0], SOL_SOCKET, SO_NOSIGPIPE, &on, sizeof(on));
  setsockopt(out[1], SOL_SOCKET, SO_NOSIGPIPE, &on, sizeof(on));
#endif
  return 0;
}

int Pipe(int out[2]) {
#if defined(__linux__)
  return pipe2(out, O_CLOEXEC | O_NONBLOCK) == -1 ? -errno : 0;
#else
  if (pipe(out) == -1) return -errno;
  return FinishPair(out);
#endif
}

ssize_t ReadSome(int fd, void* buf, size_t len) {
  ssize_t n;
  do {
    n = read(fd, buf, len);
  } while (n == -1 && errno == EINTR);
  return n == -1 ? -errno : n;
}

int SocketType(int fd) {
  int type = 0;
  socklen_t len = sizeof(type);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == -1) return -errno;
  return type;
}

int SetNonBlocking(int fd, bool nonblocking) {
  int flags = fcntl(fd, F_GETFL);
  if (flags == -1) return -errno;
  int wanted = nonblocking ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
  if (wanted != flags && fcntl(fd, F_SETFL, wanted) == -1) return -errno;
  return 0;
}

int SetCloseOnExec(int fd, bool closeOnExec) {
  int flags = fcntl(fd, F_GETFD);
  if (flags == -1) return -errno;
  int wanted = closeOnExec ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  if (wanted != flags && fcntl(fd, F_SETFD, wanted) == -1) return -errno;
  return 0;
}

int DuplicateFd(int fd) {
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  return copy == -1 ? -errno : copy;
}

int GetFileIdentity(int fd, FileIdentity* out) {
  struct stat st;
  if (fstat(fd, &st) == -1) return -errno;
  out->dev = st.st_dev;
  out->ino = st.st_ino;
  return 0;
}

bool IsSameFile(int fd, const FileIdentity& identity) {
  FileIdentity now;
  return GetFileIdentity(fd, &now) == 0 && now.dev == identity.dev && now.ino == identity.ino;
}

int QueuedBytes(int sock) {
  int bytes = 0;
  if (ioctl(sock, FIONREAD, &bytes) == -1) return -errno;
  return bytes;
}

long QueuedFds(int sock, int* info) {
#if defined(__linux__)
  if (*info < 0) {
    char path[48];
    snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", sock);
    *info = open(path, O_RDONLY | O_CLOEXEC);
    if (*info < 0) return -1;
  }
  char text[512];
  ssize_t n;
  do {
    n = pread(*info, text, sizeof(text) - 1, 0);
  } while (n == -1 && errno == EINTR);
  if (n <= 0) return -1;
  text[n] = '\0';
  const char* line = strstr(text, "\nscm_fds:");
  if (line == nullptr) return -1;
  return strtol(line + strlen("\nscm_fds:"), nullptr, 10);
#else
  (void)sock;
  (void)info;
  return -1;
#endif
}

ssize_t SendMessage(int sock, const void* data, size_t len, const int* fds, size_t nfds,
                    int flags) {
  struct iovec part = {const_cast<void*>(data), len};
  return SendParts(sock, &part, 1, fds, nfds, flags);
}

ssize_t SendParts(int sock, struct iovec* parts, size_t nparts, const int* fds, size_t nfds,
                  int flags) {
  if (nfds > kMaxFdsPerMessage) return -EINVAL;
  ControlBuffer control;
  struct msghdr msg;
  PrepareSend(&msg, parts, nparts, &control, fds, nfds);
  ssize_t n;
  do {
    n = sendmsg(sock, &msg, flags | MSG_NOSIGNAL);
  } while (n == -1 && errno == EINTR);
  return n == -1 ? -errno : n;
}

ssize_t ReceiveMessage(int sock, void* data, size_t cap, int* fds, size_t fds_cap,
                       ReceivedInfo* info, int flags) {
  info->nfds = 0;
  info->msg_flags = 0;
  if (fds_cap < kMaxFdsPerMessage) return -EINVAL;

  struct iovec iov;
  ControlBuffer control;
  struct msghdr msg;
  PrepareReceive(&msg, &iov, &control, data, cap);
  ssize_t n;
  do {
    n = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
  } while (n == -1 && errno == EINTR);
  if (n == -1) return -errno;
  TakeFds(&msg, fds, info);
  return n;
}

size_t ReceiveMessages(int sock, MessageSlot* slots, size_t count) {
  if (count > kMaxMessagesPerBatch) count = kMaxMessagesPerBatch;
#if defined(FDPASS_HAVE_MMSG)
  BatchScratch& scratch = ScratchFor(count);
  auto& headers = scratch.headers;
  for (size_t i = 0; i < count; i++) {
    PrepareReceive(&headers[i].msg_hdr, &scratch.iovs[i], &scratch.controls[i], slots[i].data,
                   slots[i].cap);
    headers[i].msg_len = 0;
  }
  int n;
  do {
    n = recvmmsg(sock, headers.data(), static_cast<unsigned>(count),
                 MSG_DONTWAIT | MSG_CMSG_CLOEXEC, nullptr);
  } while (n == -1 && errno == EINTR);
  if (n == -1) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    slots[0].bytes = -errno;
    slots[0].info = ReceivedInfo{0, 0};
    return 1;
  }
  // An error after the first message is kept by the kernel for the next call.
  for (int i = 0; i < n; i++) {
    slots[i].bytes = headers[i].msg_len;
    TakeFds(&headers[i].msg_hdr, slots[i].fds, &slots[i].info);
  }
  return static_cast<size_t>(n);
#else
  size_t filled = 0;
  while (filled < count) {
    MessageSlot& slot = slots[filled];
    slot.bytes = ReceiveMessage(sock, slot.data, slot.cap, slot.fds, kMaxFdsPerMessage, &slot.info,
                                MSG_DONTWAIT);
    if (slot.bytes == -EAGAIN || slot.bytes == -EWOULDBLOCK) break;
    filled++;
    if (slot.bytes <= 0) break;  // an error or EOF: nothing useful follows
  }
  return filled;
#endif
}

ssize_t SendMessages(int sock, OutgoingMessage* messages, size_t count) {
  if (count > kMaxMessagesPerBatch) count = kMaxMessagesPerBatch;
  for (size_t i = 0; i < count; i++) {
    if (messages[i].nfds > kMaxFdsPerMessage) {
      if (i == 0) return -EINVAL;
      count = i;  // send those before it; the caller meets the bad one next time
    }
  }
#if defined(FDPASS_HAVE_MMSG)
  BatchScratch& scratch = ScratchFor(count);
  auto& headers = scratch.headers;
  for (size_t i = 0; i < count; i++) {
    const OutgoingMessage& m = messages[i];
    scratch.iovs[i] = iovec{const_cast<void*>(m.data), m.len};
    PrepareSend(&headers[i].msg_hdr, &scratch.iovs[i], 1, &scratch.controls[i], m.fds, m.nfds);
    headers[i].msg_len = 0;
  }
  int n;
  do {
    n = sendmmsg(sock, headers.data(), static_cast<unsigned>(count), MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n == -1 && errno == EINTR);
  if (n == -1) return -errno;
  for (int i = 0; i < n; i++) messages[i].sent = headers[i].msg_len;
  return n;
#else
  size_t done = 0;
  for (; done < count; done++) {
    OutgoingMessage& m = messages[done];
    ssize_t n = SendMessage(sock, m.data, m.len, m.fds, m.nfds, MSG_DONTWAIT);
    if (n < 0) return done > 0 ? static_cast<ssize_t>(done) : n;
    m.sent = static_cast<size_t>(n);
    if (m.sent < m.len) return static_cast<ssize_t>(done + 1);  // partial: the socket is full
  }
  return static_cast<ssize_t>(done);
#endif
}

void CloseFds(const int* fds, size_t nfds) {
  // close(2) on Linux releases the fd even when it returns EINTR: never retry.
  for (size_t i = 0; i < nfds;) {
    // The fds of one message are usually consecutive numbers (the kernel hands out the
    // lowest free ones): a run of them goes in one close_range(2), a syscall instead of many.
    size_t run = 1;
    while (i + run < nfds && fds[i + run] == fds[i + run - 1] + 1) run++;
#if defined(SYS_close_range)
    if (run > 1 && syscall(SYS_close_range, static_cast<unsigned>(fds[i]),
                           static_cast<unsigned>(fds[i + run - 1]), 0) == 0) {
      i += run;
      continue;
    }
#endif
    for (size_t end = i + run; i < end; i++) close(fds[i]);
  }
}

int CloseFd(int fd) { return close(fd) == 0 || errno == EINTR ? 0 : -errno; }

}  // namespace fdpass
