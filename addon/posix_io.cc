// The socket syscalls fdpass makes, and every platform difference among them.
#include "posix_io.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

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

}  // namespace

int DontWaitFlag() { return MSG_DONTWAIT; }

int SocketPair(int type, int out[2]) {
#if defined(SOCK_CLOEXEC) && defined(SOCK_NONBLOCK)
  if (socketpair(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, out) == -1) return -errno;
#else
  if (socketpair(AF_UNIX, type, 0, out) == -1) return -errno;
  for (int i = 0; i < 2; i++) {
    int err = SetCloexec(out[i]);
    if (err == 0) err = SetNonBlocking(out[i], true);
    if (err != 0) {
      close(out[0]);
      close(out[1]);
      return err;
    }
  }
#endif
#if defined(FDPASS_NEEDS_SO_NOSIGPIPE)
  int on = 1;
  setsockopt(out[0], SOL_SOCKET, SO_NOSIGPIPE, &on, sizeof(on));
  setsockopt(out[1], SOL_SOCKET, SO_NOSIGPIPE, &on, sizeof(on));
#endif
  return 0;
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

ssize_t SendMessage(int sock, const void* data, size_t len, const int* fds, size_t nfds,
                    int flags) {
  if (nfds > kMaxFdsPerMessage) return -EINVAL;
  struct iovec iov;
  iov.iov_base = const_cast<void*>(data);
  iov.iov_len = len;

  struct msghdr msg;
  memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;

  ControlBuffer control;
  if (nfds > 0) {
    memset(&control, 0, sizeof(control));
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
  }

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
  iov.iov_base = data;
  iov.iov_len = cap;

  ControlBuffer control;
  struct msghdr msg;
  memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = sizeof(control.buf);

  ssize_t n;
  do {
    n = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
  } while (n == -1 && errno == EINTR);
  if (n == -1) return -errno;

  // Walk every cmsg: a peer may split its fds over several SCM_RIGHTS headers.
  size_t count = 0;
  for (struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr;
       cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    size_t bytes = cmsg->cmsg_len - CMSG_LEN(0);
    size_t here = bytes / sizeof(int);
    for (size_t i = 0; i < here; i++) {
      int fd;
      // CMSG_DATA need not be aligned for int: copy, do not cast.
      memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
      if (count < fds_cap) {
        fds[count++] = fd;
      } else {
        close(fd);  // cannot happen with fds_cap >= kMaxFdsPerMessage; never leak regardless
      }
    }
  }

#if defined(FDPASS_NEEDS_CLOEXEC_AFTER_RECV)
  for (size_t i = 0; i < count; i++) SetCloexec(fds[i]);
#endif

  info->msg_flags = msg.msg_flags;
  if (msg.msg_flags & MSG_CTRUNC) {
    // Part of the fds were dropped by the kernel: the message is unusable, so
    // close what did arrive and let the caller report the cut.
    CloseFds(fds, count);
    count = 0;
  }
  info->nfds = count;
  return n;
}

void CloseFds(const int* fds, size_t nfds) {
  // close(2) on Linux releases the fd even when it returns EINTR: never retry.
  for (size_t i = 0; i < nfds; i++) close(fds[i]);
}

}  // namespace fdpass
