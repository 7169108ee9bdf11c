// IO::FDPass's handle passing on Windows, as thin calls: lib/send-recv-fd-windows.ts holds
// the protocol (the 12-byte record, partial reads, the peer check before any pull).
//   sender:   a private, non-inheritable copy of the handle (duplicateOwnHandle), whose value
//             and our pid go to the peer; the copy is closed if the record could not go.
//   receiver: the socket's peer process (peerProcessId), the claimed process opened
//             (openProcess), the peer checked again, then the pull with
//             DUPLICATE_CLOSE_SOURCE (pullHandle), which removes the copy there.
// Handle values cross into JS as BigInts (a HANDLE is 64 bits wide).
#include <iphlpapi.h>
#include <ws2tcpip.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "win_io.h"
#include "win_modules.h"

#ifndef SIO_AF_UNIX_GETPEERPID
#define SIO_AF_UNIX_GETPEERPID _WSAIOR(IOC_VENDOR, 256)
#endif

namespace fdpass::win {
namespace {

HANDLE ArgHandle(const Napi::CallbackInfo& info, size_t i) {
  bool lossless = false;
  uint64_t value = info[i].As<Napi::BigInt>().Uint64Value(&lossless);
  return reinterpret_cast<HANDLE>(static_cast<uintptr_t>(value));
}

Napi::Value HandleValue(Napi::Env env, HANDLE h) {
  return Napi::BigInt::New(env, static_cast<uint64_t>(reinterpret_cast<uintptr_t>(h)));
}

// duplicateOwnHandle(fd) -> the copy's value (BigInt) | -error
Napi::Value JsDuplicateOwnHandle(const Napi::CallbackInfo& info) {
  HANDLE h = HandleOfFd(ArgInt(info, 0));
  if (h == INVALID_HANDLE_VALUE)
    return Napi::Number::New(info.Env(), UvError(ERROR_INVALID_HANDLE));
  HANDLE self = GetCurrentProcess();
  HANDLE copy = nullptr;
  if (!DuplicateHandle(self, h, self, &copy, 0, FALSE, DUPLICATE_SAME_ACCESS))
    return Napi::Number::New(info.Env(), UvError(GetLastError()));
  return HandleValue(info.Env(), copy);
}

// closeHandle(value) -> 0 | -error: a copy that never went.
Napi::Value JsCloseHandle(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(),
                           CloseHandle(ArgHandle(info, 0)) ? 0 : UvError(GetLastError()));
}

// The owner of the loopback TCP connection whose local end is `peer` and remote end `self`,
// from the system's TCP table: pid, 0 where the table names none (Wine), or -error.
template <typename Table, typename Row, typename Address>
int TcpOwner(ULONG family, const Address& peer, const Address& self,
             bool (*matches)(const Row&, const Address&, const Address&)) {
  // The table may grow between the call that sizes it and the one that fills it; Wine says
  // ERROR_NOT_ENOUGH_MEMORY, not ERROR_INSUFFICIENT_BUFFER, when the buffer is too small.
  std::vector<unsigned char> buffer(64 * 1024);
  DWORD status = ERROR_INSUFFICIENT_BUFFER;
  for (int attempt = 0; attempt < 8; attempt++) {
    DWORD size = static_cast<DWORD>(buffer.size());
    status = GetExtendedTcpTable(buffer.data(), &size, FALSE, family,
                                 TCP_TABLE_OWNER_PID_CONNECTIONS, 0);
    if (status != ERROR_INSUFFICIENT_BUFFER && status != ERROR_NOT_ENOUGH_MEMORY) break;
    buffer.resize(std::max<size_t>(size, buffer.size()) * 2);
  }
  if (status != NO_ERROR) return UvError(status);
  auto* table = reinterpret_cast<const Table*>(buffer.data());
  for (DWORD i = 0; i < table->dwNumEntries; i++)
    if (matches(table->table[i], peer, self)) return static_cast<int>(table->table[i].dwOwningPid);
  return UvError(WSAENOTCONN);  // gone: the peer closed, or was never local
}

bool Matches4(const MIB_TCPROW_OWNER_PID& row, const sockaddr_in& peer, const sockaddr_in& self) {
  return row.dwLocalAddr == peer.sin_addr.s_addr &&
         static_cast<u_short>(row.dwLocalPort) == peer.sin_port &&
         row.dwRemoteAddr == self.sin_addr.s_addr &&
         static_cast<u_short>(row.dwRemotePort) == self.sin_port;
}

bool Matches6(const MIB_TCP6ROW_OWNER_PID& row, const sockaddr_in6& peer,
              const sockaddr_in6& self) {
  return std::memcmp(row.ucLocalAddr, &peer.sin6_addr, 16) == 0 &&
         static_cast<u_short>(row.dwLocalPort) == peer.sin6_port &&
         std::memcmp(row.ucRemoteAddr, &self.sin6_addr, 16) == 0 &&
         static_cast<u_short>(row.dwRemotePort) == self.sin6_port;
}

// peerProcessId(fd, stage: Int32Array(1)) -> the pid at the other end of a connected socket
// | 0 when the system names none (Wine's TCP table) | -error, with stage[0] the call that
// refused: 0 getsockname, 1 WSAIoctl (SIO_AF_UNIX_GETPEERPID), 2 getpeername (or its address
// is neither AF_UNIX nor loopback: EAFNOSUPPORT, no way to know who is there), 3
// GetExtendedTcpTable (or no row for the connection: ENOTCONN).
Napi::Value JsPeerProcessId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto s = reinterpret_cast<SOCKET>(HandleOfFd(ArgInt(info, 0)));
  auto stage = info[1].As<Napi::Int32Array>();
  stage[0] = 0;
  sockaddr_storage self{}, peer{};
  int self_length = sizeof self, peer_length = sizeof peer;
  if (getsockname(s, reinterpret_cast<sockaddr*>(&self), &self_length) != 0)
    return Napi::Number::New(env, UvError(WSAGetLastError()));
  if (self.ss_family == AF_UNIX) {
    stage[0] = 1;
    ULONG pid = 0;
    DWORD returned = 0;
    if (WSAIoctl(s, SIO_AF_UNIX_GETPEERPID, nullptr, 0, &pid, sizeof pid, &returned, nullptr,
                 nullptr) != 0)
      return Napi::Number::New(env, UvError(WSAGetLastError()));
    return Napi::Number::New(env, static_cast<double>(pid));
  }
  stage[0] = 2;
  if (getpeername(s, reinterpret_cast<sockaddr*>(&peer), &peer_length) != 0)
    return Napi::Number::New(env, UvError(WSAGetLastError()));
  if (peer.ss_family == AF_INET) {
    auto& peer4 = reinterpret_cast<const sockaddr_in&>(peer);
    if ((ntohl(peer4.sin_addr.s_addr) >> 24) != 127)
      return Napi::Number::New(env, UvError(WSAEAFNOSUPPORT));
    stage[0] = 3;
    return Napi::Number::New(
        env, TcpOwner<MIB_TCPTABLE_OWNER_PID, MIB_TCPROW_OWNER_PID>(
                 AF_INET, peer4, reinterpret_cast<const sockaddr_in&>(self), Matches4));
  }
  if (peer.ss_family == AF_INET6) {
    auto& peer6 = reinterpret_cast<const sockaddr_in6&>(peer);
    if (!IN6_IS_ADDR_LOOPBACK(&peer6.sin6_addr))
      return Napi::Number::New(env, UvError(WSAEAFNOSUPPORT));
    stage[0] = 3;
    return Napi::Number::New(
        env, TcpOwner<MIB_TCP6TABLE_OWNER_PID, MIB_TCP6ROW_OWNER_PID>(
                 AF_INET6, peer6, reinterpret_cast<const sockaddr_in6&>(self), Matches6));
  }
  return Napi::Number::New(env, UvError(WSAEAFNOSUPPORT));
}

// openProcess(pid) -> a handle to process pid with PROCESS_DUP_HANDLE (BigInt) | -error.
// Held while lib/ checks again that pid is still the socket's peer: a process we hold a
// handle to keeps its pid, so the pull cannot reach a process that took the pid over.
Napi::Value JsOpenProcess(const Napi::CallbackInfo& info) {
  HANDLE process = OpenProcess(PROCESS_DUP_HANDLE, FALSE, info[0].As<Napi::Number>().Uint32Value());
  if (!process) return Napi::Number::New(info.Env(), UvError(GetLastError()));
  return HandleValue(info.Env(), process);
}

// pullHandle(process, value, stage: Int32Array(1)) -> a node.exe fd for the handle | -error,
// with stage[0] the call that failed: 1 DuplicateHandle, 2 uv_open_osfhandle. process is
// openProcess's; the caller closes it.
Napi::Value JsPullHandle(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HANDLE source = ArgHandle(info, 0);
  HANDLE remote = ArgHandle(info, 1);
  auto stage = info[2].As<Napi::Int32Array>();
  stage[0] = 1;
  HANDLE mine = nullptr;
  if (!DuplicateHandle(source, remote, GetCurrentProcess(), &mine, 0, FALSE,
                       DUPLICATE_SAME_ACCESS | DUPLICATE_CLOSE_SOURCE))
    return Napi::Number::New(env, UvError(GetLastError()));
  stage[0] = 2;
  int fd = uv_open_osfhandle(mine);
  if (fd < 0) {
    CloseHandle(mine);
    return Napi::Number::New(env, UvError(ERROR_TOO_MANY_OPEN_FILES));
  }
  return Napi::Number::New(env, fd);
}

}  // namespace

void InitHandlePassing(Napi::Env env, Napi::Object exports) {
  exports["duplicateOwnHandle"] = Napi::Function::New(env, JsDuplicateOwnHandle);
  exports["closeHandle"] = Napi::Function::New(env, JsCloseHandle);
  exports["peerProcessId"] = Napi::Function::New(env, JsPeerProcessId);
  exports["openProcess"] = Napi::Function::New(env, JsOpenProcess);
  exports["pullHandle"] = Napi::Function::New(env, JsPullHandle);
}

}  // namespace fdpass::win
