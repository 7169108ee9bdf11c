// TCP over IPv4 and IPv6: the calls a TCP listener needs (a socket, its options, bind, its
// own address) and addresses in one layout that JS reads without knowing sockaddr.
// Plain POSIX, no Node-API; every function returns a value >= 0 or -errno.
#pragma once

#include <stddef.h>
#include <stdint.h>

struct sockaddr_storage;

namespace fdpass {

// An address as JS reads it (lib/binding.ts): [family (4, 6, or 0 for any other), text length,
// port (little-endian, 2 bytes), the address as text (inet_ntop, no NUL)].
constexpr size_t kInetAddressFamily = 0;
constexpr size_t kInetAddressTextLength = 1;
constexpr size_t kInetAddressPort = 2;
constexpr size_t kInetAddressText = 4;
// INET6_ADDRSTRLEN (46, NUL included) after the header, rounded up.
constexpr size_t kInetAddressBytes = 52;

// socket(AF_INET or AF_INET6, SOCK_STREAM), close-on-exec and non-blocking; family is 4 or 6.
int InetSocket(int family);

// setsockopt(2) of an int option.
int SetSocketOption(int sock, int level, int name, int value);
// getsockopt(2) of a non-negative int option: its value, or -errno.
int GetSocketOption(int sock, int level, int name);

// bind(2) to the IPv4 or IPv6 address written as text (inet_pton's forms) and port.
// -EINVAL if the text is no address of that family.
int BindInet(int sock, int family, const char* text, size_t len, int port);

// The socket's own address (getsockname), in the layout above.
int LocalInetAddress(int sock, uint8_t out[kInetAddressBytes]);

// addr (as accept or getsockname wrote it) in the layout above.
void WriteInetAddress(const struct sockaddr_storage& addr, uint8_t out[kInetAddressBytes]);

}  // namespace fdpass
