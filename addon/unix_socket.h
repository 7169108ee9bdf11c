// Unix socket addresses: bind, listen, accept, connect, and the peer's credentials.
// Plain POSIX, no Node-API; every function returns a value >= 0 or -errno.
#pragma once

#include <stddef.h>
#include <sys/types.h>

struct sockaddr_storage;

namespace fdpass {

// Bytes a name may take in sockaddr_un.sun_path: for a file path, without its NUL;
// for a Linux abstract name, without its leading NUL.
size_t MaxSocketPathBytes();

// Whether this system has Linux's abstract socket namespace.
bool HaveAbstractNames();

// socket(domain, type), close-on-exec and non-blocking (inet_socket.cc makes TCP sockets with it).
int NewSocket(int domain, int type);

// socket(AF_UNIX, type), close-on-exec and non-blocking.
int UnixSocket(int type);

// bind(2) to name[0..len). A file is created with permission bits `mode` from the start:
// the socket's mode is set before bind creates the file, so it is never wider (the umask
// may still narrow it, as for any file).
int BindUnix(int sock, const char* name, size_t len, bool abstract, unsigned mode);

int Listen(int sock, int backlog);

// shutdown(2) of the sending side (no more writes; the peer reads EOF): 0 or -errno.
int ShutdownWrite(int sock);

// accept(2) of one waiting connection, close-on-exec and non-blocking: the new fd. With peer,
// the kernel writes the client's address there in the same call.
int Accept(int listener, struct sockaddr_storage* peer);

// connect(2) without blocking: 0 once connected; -EAGAIN when the listener's backlog is
// full (a Unix socket connects at once or not at all; try again later).
int ConnectUnix(int sock, const char* name, size_t len, bool abstract);

// What a socket fd is, for checking that it can carry a channel.
struct SocketFacts {
  int domain;      // AF_UNIX, AF_INET...
  int type;        // SOCK_STREAM, SOCK_SEQPACKET, SOCK_DGRAM
  bool listening;  // a listening socket (accepts connections, carries no messages)
  bool connected;  // has a peer
};

// Fills out for a socket fd; -ENOTSOCK (or -EBADF) if fd is not an open socket.
int InspectSocket(int fd, SocketFacts* out);

struct PeerCredentials {
  int pid;  // -1 where the system does not say
  unsigned uid;
  unsigned gid;
};

// Who is at the other end of a connected Unix socket, as of its connect() or socketpair().
int GetPeerCredentials(int sock, PeerCredentials* out);

}  // namespace fdpass
