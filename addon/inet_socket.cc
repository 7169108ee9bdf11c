// TCP over IPv4 and IPv6: socket, options, bind and addresses, and every platform difference
// among them (the sockaddr structs' fields, never their byte layout, are read here).
#include "inet_socket.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include <string>

#include "unix_socket.h"

namespace fdpass {

int InetSocket(int family) {
  if (family != 4 && family != 6) return -EAFNOSUPPORT;
  return NewSocket(family == 4 ? AF_INET : AF_INET6, SOCK_STREAM);
}

int SetSocketOption(int sock, int level, int name, int value) {
  return setsockopt(sock, level, name, &value, sizeof(value)) == -1 ? -errno : 0;
}

int GetSocketOption(int sock, int level, int name) {
  int value = 0;
  socklen_t len = sizeof(value);
  if (getsockopt(sock, level, name, &value, &len) == -1) return -errno;
  // A negative option value would read as an errno: none of the int options asked for has one.
  return value < 0 ? -EINVAL : value;
}

int BindInet(int sock, int family, const char* text, size_t len, int port) {
  if (port < 0 || port > 65535) return -EINVAL;
  std::string address(text, len);  // inet_pton wants a NUL-terminated string
  struct sockaddr_storage addr;
  memset(&addr, 0, sizeof(addr));
  socklen_t addr_len;
  if (family == 4) {
    auto* in = reinterpret_cast<struct sockaddr_in*>(&addr);
    in->sin_family = AF_INET;
    in->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, address.c_str(), &in->sin_addr) != 1) return -EINVAL;
    addr_len = sizeof(*in);
  } else if (family == 6) {
    auto* in6 = reinterpret_cast<struct sockaddr_in6*>(&addr);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, address.c_str(), &in6->sin6_addr) != 1) return -EINVAL;
    addr_len = sizeof(*in6);
  } else {
    return -EAFNOSUPPORT;
  }
  return bind(sock, reinterpret_cast<struct sockaddr*>(&addr), addr_len) == -1 ? -errno : 0;
}

int LocalInetAddress(int sock, uint8_t out[kInetAddressBytes]) {
  struct sockaddr_storage addr;
  socklen_t len = sizeof(addr);
  if (getsockname(sock, reinterpret_cast<struct sockaddr*>(&addr), &len) == -1) return -errno;
  WriteInetAddress(addr, out);
  return 0;
}

void WriteInetAddress(const struct sockaddr_storage& addr, uint8_t out[kInetAddressBytes]) {
  memset(out, 0, kInetAddressText);
  char* text = reinterpret_cast<char*>(out + kInetAddressText);
  const socklen_t room = kInetAddressBytes - kInetAddressText;
  uint16_t port = 0;
  bool written = false;
  if (addr.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const struct sockaddr_in*>(&addr);
    port = ntohs(in->sin_port);
    written = inet_ntop(AF_INET, &in->sin_addr, text, room) != nullptr;
    out[kInetAddressFamily] = 4;
  } else if (addr.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const struct sockaddr_in6*>(&addr);
    port = ntohs(in6->sin6_port);
    written = inet_ntop(AF_INET6, &in6->sin6_addr, text, room) != nullptr;
    out[kInetAddressFamily] = 6;
  }
  if (!written) out[kInetAddressFamily] = 0;
  out[kInetAddressTextLength] = written ? static_cast<uint8_t>(strlen(text)) : 0;
  out[kInetAddressPort] = static_cast<uint8_t>(port & 0xff);
  out[kInetAddressPort + 1] = static_cast<uint8_t>(port >> 8);
}

}  // namespace fdpass
