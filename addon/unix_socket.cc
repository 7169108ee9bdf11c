// Unix socket addresses and peer credentials, and every platform difference among them.
#include "unix_socket.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "posix_io.h"

#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__)
#include <sys/ucred.h>
#endif

// socket() and accept4() that set close-on-exec and non-blocking in the same call.
#if defined(SOCK_CLOEXEC) && defined(SOCK_NONBLOCK)
#define FDPASS_HAVE_ATOMIC_SOCKET_FLAGS 1
#endif

namespace fdpass {

namespace {

// The address of name: a file path (NUL-terminated) or, on Linux, an abstract name
// (a leading NUL, no terminator; its length is part of the address).
int MakeAddress(const char* name, size_t len, bool abstract, struct sockaddr_un* addr,
                socklen_t* addr_len) {
  if (abstract && !HaveAbstractNames()) return -EAFNOSUPPORT;
  if (len == 0 || len > MaxSocketPathBytes()) return len == 0 ? -EINVAL : -ENAMETOOLONG;
  if (!abstract && memchr(name, '\0', len) != nullptr) return -EINVAL;
  memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  size_t start = abstract ? 1 : 0;
  memcpy(addr->sun_path + start, name, len);
  *addr_len = static_cast<socklen_t>(offsetof(struct sockaddr_un, sun_path) + start + len +
                                     (abstract ? 0 : 1));
  return 0;
}

// A socket just made by socket() or accept(): close-on-exec and non-blocking where the call
// could not make it so, and never raising SIGPIPE where only a socket option prevents that.
// Returns fd, or closes it and returns -errno.
int FinishNewSocket(int fd) {
#if !defined(FDPASS_HAVE_ATOMIC_SOCKET_FLAGS)
  if (fcntl(fd, F_SETFD, FD_CLOEXEC) == -1 || SetNonBlocking(fd, true) != 0) {
    int err = -errno;
    close(fd);
    return err;
  }
#endif
#if defined(SO_NOSIGPIPE)
  int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &on, sizeof(on));
#endif
  return fd;
}

}  // namespace

size_t MaxSocketPathBytes() {
  return sizeof(((struct sockaddr_un*)nullptr)->sun_path) - 1;  // the NUL, leading or trailing
}

bool HaveAbstractNames() {
#if defined(__linux__)
  return true;
#else
  return false;
#endif
}

int NewSocket(int domain, int type) {
#if defined(FDPASS_HAVE_ATOMIC_SOCKET_FLAGS)
  int sock = socket(domain, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
#else
  int sock = socket(domain, type, 0);
#endif
  return sock == -1 ? -errno : FinishNewSocket(sock);
}

int UnixSocket(int type) { return NewSocket(AF_UNIX, type); }

int BindUnix(int sock, const char* name, size_t len, bool abstract, unsigned mode) {
  struct sockaddr_un addr;
  socklen_t addr_len;
  int err = MakeAddress(name, len, abstract, &addr, &addr_len);
  if (err != 0) return err;
  if (abstract)
    return bind(sock, reinterpret_cast<struct sockaddr*>(&addr), addr_len) == -1 ? -errno : 0;
#if defined(__linux__)
  // Linux creates the file with the socket inode's mode, less the umask: set it first,
  // so there is no moment when the file exists with a wider mode.
  if (fchmod(sock, mode & 07777) == -1) return -errno;
  return bind(sock, reinterpret_cast<struct sockaddr*>(&addr), addr_len) == -1 ? -errno : 0;
#else
  // Elsewhere bind uses the umask alone. umask is per process: another thread creating a
  // file in these few instructions gets this mask too, which only ever narrows its mode.
  mode_t previous = umask(~mode & 0777);
  int result = bind(sock, reinterpret_cast<struct sockaddr*>(&addr), addr_len) == -1 ? -errno : 0;
  umask(previous);
  return result;
#endif
}

int Listen(int sock, int backlog) { return listen(sock, backlog) == -1 ? -errno : 0; }

int ShutdownWrite(int sock) { return shutdown(sock, SHUT_WR) == -1 ? -errno : 0; }

int Accept(int listener, struct sockaddr_storage* peer) {
  auto* addr = reinterpret_cast<struct sockaddr*>(peer);
  int fd;
  do {
    socklen_t len = peer == nullptr ? 0 : sizeof(*peer);
#if defined(FDPASS_HAVE_ATOMIC_SOCKET_FLAGS)
    fd = accept4(listener, addr, peer == nullptr ? nullptr : &len, SOCK_CLOEXEC | SOCK_NONBLOCK);
#else
    fd = accept(listener, addr, peer == nullptr ? nullptr : &len);
#endif
  } while (fd == -1 && errno == EINTR);
  return fd == -1 ? -errno : FinishNewSocket(fd);
}

int ConnectUnix(int sock, const char* name, size_t len, bool abstract) {
  struct sockaddr_un addr;
  socklen_t addr_len;
  int err = MakeAddress(name, len, abstract, &addr, &addr_len);
  if (err != 0) return err;
  int result;
  do {
    result = connect(sock, reinterpret_cast<struct sockaddr*>(&addr), addr_len);
  } while (result == -1 && errno == EINTR);
  if (result == 0 || errno == EISCONN) return 0;
  // Some systems start a Unix connect in the background: the caller tries again later.
  if (errno == EINPROGRESS || errno == EALREADY) return -EAGAIN;
  return -errno;
}

int InspectSocket(int fd, SocketFacts* out) {
  int type = SocketType(fd);
  if (type < 0) return type;
  out->type = type;
  struct sockaddr_storage addr;
  socklen_t len = sizeof(addr);
#if defined(SO_DOMAIN)
  int domain = 0;
  socklen_t domain_len = sizeof(domain);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &domain_len) == -1) return -errno;
  out->domain = domain;
#else
  // No SO_DOMAIN (macOS): the family of the socket's own address says it.
  if (getsockname(fd, reinterpret_cast<struct sockaddr*>(&addr), &len) == -1) return -errno;
  out->domain = addr.ss_family;
#endif
  int accepting = 0;
  socklen_t accepting_len = sizeof(accepting);
  out->listening =
      getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &accepting_len) == 0 && accepting != 0;
  len = sizeof(addr);
  out->connected = getpeername(fd, reinterpret_cast<struct sockaddr*>(&addr), &len) == 0;
  return 0;
}

int GetPeerCredentials(int sock, PeerCredentials* out) {
#if defined(SO_PEERCRED) && defined(__linux__)
  struct ucred cred;
  socklen_t len = sizeof(cred);
  if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1) return -errno;
  out->pid = cred.pid;
  out->uid = cred.uid;
  out->gid = cred.gid;
  return 0;
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__)
  uid_t uid;
  gid_t gid;
  if (getpeereid(sock, &uid, &gid) == -1) return -errno;
  out->uid = uid;
  out->gid = gid;
  out->pid = -1;
#if defined(LOCAL_PEERPID)
  pid_t pid;
  socklen_t len = sizeof(pid);
  if (getsockopt(sock, SOL_LOCAL, LOCAL_PEERPID, &pid, &len) == 0) out->pid = pid;
#endif
  return 0;
#else
  (void)sock;
  (void)out;
  return -ENOSYS;
#endif
}

}  // namespace fdpass
