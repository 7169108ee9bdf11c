// What an fd is: the facts lib/describe.ts names a kind from. Plain POSIX, no Node-API.
#pragma once

namespace fdpass {

// Raw facts; lib/ decides what they make (a TCP listener, a pipe, a file...).
struct FdFacts {
  unsigned file_type;  // st_mode & S_IFMT
  int status_flags;    // fcntl(F_GETFL): the access mode, O_NONBLOCK, O_APPEND, O_PATH...
  // For a socket; -1 otherwise, and for an fd that is no open socket (an O_PATH fd of a
  // socket file).
  int domain;    // AF_UNIX, AF_INET, AF_INET6...
  int type;      // SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET...
  int protocol;  // IPPROTO_TCP, IPPROTO_UDP...; -1 where the system has no SO_PROTOCOL
  bool listening;
};

// Which call failed, for the error's syscall.
enum class DescribeCall { kFstat = 0, kFcntl = 1, kGetsockopt = 2 };

// fstat(2) and fcntl(F_GETFL) of fd, and for a socket getsockopt(2) of SO_TYPE, SO_DOMAIN,
// SO_PROTOCOL and SO_ACCEPTCONN: 0, or -errno with *failed set.
int DescribeFd(int fd, FdFacts* out, DescribeCall* failed);

}  // namespace fdpass
