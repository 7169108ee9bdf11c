// What an fd is: fstat, the status flags, and a socket's options.
#include "describe.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "unix_socket.h"

namespace fdpass {

int DescribeFd(int fd, FdFacts* out, DescribeCall* failed) {
  struct stat st;
  if (fstat(fd, &st) == -1) {
    *failed = DescribeCall::kFstat;
    return -errno;
  }
  int flags = fcntl(fd, F_GETFL);
  if (flags == -1) {
    *failed = DescribeCall::kFcntl;
    return -errno;
  }
  out->file_type = st.st_mode & S_IFMT;
  out->status_flags = flags;
  out->domain = -1;
  out->type = -1;
  out->protocol = -1;
  out->listening = false;
  if (!S_ISSOCK(st.st_mode)) return 0;

  SocketFacts socket;
  int err = InspectSocket(fd, &socket);
  // A socket file's inode without a socket behind the fd (Linux's O_PATH): no options to ask.
  if (err == -ENOTSOCK) return 0;
  if (err != 0) {
    *failed = DescribeCall::kGetsockopt;
    return err;
  }
  out->domain = socket.domain;
  out->type = socket.type;
  out->listening = socket.listening;
#if defined(SO_PROTOCOL)
  int protocol = 0;
  socklen_t len = sizeof(protocol);
  if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &protocol, &len) == 0) out->protocol = protocol;
#endif
  return 0;
}

}  // namespace fdpass
