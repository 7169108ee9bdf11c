// The Windows Channel's transport, thin: each call is one Windows operation and returns a
// value or a negative libuv error code (uv_translate_sys_error), which lib/ turns into errors.
// Policy (framing, queues, limits, the handshake's rules) lives in lib/win/. See
// docs/windows-channel-protocol.md.

// clang-format off
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
// clang-format on

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>

#include "win_io.h"
#include "win_modules.h"

// The few libuv calls a poll handle needs, as node.exe exports them. uv.h is not among
// Node-API's headers: the handle is kept opaque, in room larger than libuv's uv_poll_t.
extern "C" {
struct uv_loop_s;
struct uv_handle_s;
struct uv_poll_s;
typedef void (*uv_poll_cb)(uv_poll_s* handle, int status, int events);
typedef void (*uv_close_cb)(uv_handle_s* handle);
int uv_poll_init_socket(uv_loop_s* loop, uv_poll_s* handle, SOCKET socket);
int uv_poll_start(uv_poll_s* handle, int events, uv_poll_cb cb);
int uv_poll_stop(uv_poll_s* handle);
void uv_close(uv_handle_s* handle, uv_close_cb cb);
void uv_ref(uv_handle_s* handle);
void uv_unref(uv_handle_s* handle);
int uv_has_ref(const uv_handle_s* handle);
struct uv_fs_s;
typedef void (*uv_fs_cb)(uv_fs_s* req);
int uv_fs_close(uv_loop_s* loop, uv_fs_s* req, int file, uv_fs_cb cb);
void uv_fs_req_cleanup(uv_fs_s* req);
}

namespace fdpass::win {
namespace {

// libuv's fixed numbers (uv/errno.h on Windows) for the errors this file makes up itself.
constexpr int UV_EBADF = -4083;
constexpr int UV_EINVAL = -4071;
constexpr int UV_EPERM = -4048;
constexpr int UV_EMFILE = -4066;
constexpr int UV_ENOMEM = -4057;
constexpr int UV_ESRCH = -4040;
constexpr int UV_ECONNREFUSED = -4078;
constexpr int UV_READABLE = 1;
constexpr int UV_WRITABLE = 2;

// Handles the transport owns (channel sockets, listeners, process handles): a value pushed by
// a peer that names one of them is refused, never adopted or closed.
std::mutex owned_mutex;
std::set<uintptr_t> owned_handles;

void Own(uintptr_t value) {
  std::lock_guard<std::mutex> lock(owned_mutex);
  owned_handles.insert(value);
}

void Disown(uintptr_t value) {
  std::lock_guard<std::mutex> lock(owned_mutex);
  owned_handles.erase(value);
}

bool IsOwned(uintptr_t value) {
  std::lock_guard<std::mutex> lock(owned_mutex);
  return owned_handles.count(value) != 0;
}

int LastWsaError() { return UvError(static_cast<DWORD>(WSAGetLastError())); }
int LastError() { return UvError(GetLastError()); }

// Handle values are small (multiples of 4 well below 2^31): they travel to JS as numbers.
uintptr_t ValueArg(const Napi::CallbackInfo& info, size_t i) {
  return static_cast<uintptr_t>(info[i].As<Napi::Number>().Int64Value());
}

Napi::Number Num(Napi::Env env, int64_t value) {
  return Napi::Number::New(env, static_cast<double>(value));
}

SOCKET NewTcpSocket() {
  return WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0,
                    WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
}

int SetNonBlocking(SOCKET s) {
  u_long on = 1;
  return ioctlsocket(s, FIONBIO, &on) == 0 ? 0 : LastWsaError();
}

// A listener on 127.0.0.1, port chosen by the system, that no other socket may share.
int MakeListener(SOCKET* out, int* port) {
  SOCKET s = NewTcpSocket();
  if (s == INVALID_SOCKET) return LastWsaError();
  BOOL exclusive = TRUE;
  setsockopt(s, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, reinterpret_cast<const char*>(&exclusive),
             sizeof exclusive);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int len = sizeof addr;
  if (bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(s, 8) != 0 ||
      getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    int err = LastWsaError();
    closesocket(s);
    return err;
  }
  *out = s;
  *port = ntohs(addr.sin_port);
  return 0;
}

int ConnectLoopback(int port, SOCKET* out) {
  SOCKET s = NewTcpSocket();
  if (s == INVALID_SOCKET) return LastWsaError();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<u_short>(port));
  // Blocking: a loopback connect completes at once, or is refused at once.
  if (connect(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int err = LastWsaError();
    closesocket(s);
    return err;
  }
  BOOL on = TRUE;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&on), sizeof on);
  *out = s;
  return 0;
}

bool SameAddress(const sockaddr_in& a, const sockaddr_in& b) {
  return a.sin_addr.s_addr == b.sin_addr.s_addr && a.sin_port == b.sin_port;
}

// tcpPair(out: Float64Array(2)): two connected loopback sockets of this process, non-blocking.
// The accepted end is the one whose peer is our own connecting socket: another process that
// connects to the listener in the meantime is turned away (at most 16 of them).
Napi::Value TcpPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto out = info[0].As<Napi::Float64Array>();
  SOCKET listener;
  int port;
  int err = MakeListener(&listener, &port);
  if (err < 0) return Num(env, err);
  SOCKET client = INVALID_SOCKET;
  SOCKET server = INVALID_SOCKET;
  err = ConnectLoopback(port, &client);
  if (err == 0) {
    sockaddr_in mine{};
    int len = sizeof mine;
    getsockname(client, reinterpret_cast<sockaddr*>(&mine), &len);
    err = UV_ECONNREFUSED;
    for (int tries = 0; tries < 16; tries++) {
      sockaddr_in peer{};
      len = sizeof peer;
      SOCKET s = accept(listener, reinterpret_cast<sockaddr*>(&peer), &len);
      if (s == INVALID_SOCKET) {
        err = LastWsaError();
        break;
      }
      if (SameAddress(peer, mine)) {
        server = s;
        err = 0;
        break;
      }
      closesocket(s);
    }
  }
  closesocket(listener);
  if (err == 0) err = SetNonBlocking(client);
  if (err == 0) err = SetNonBlocking(server);
  if (err < 0) {
    if (client != INVALID_SOCKET) closesocket(client);
    if (server != INVALID_SOCKET) closesocket(server);
    return Num(env, err);
  }
  BOOL on = TRUE;
  setsockopt(server, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&on), sizeof on);
  Own(client);
  Own(server);
  out[0] = static_cast<double>(client);
  out[1] = static_cast<double>(server);
  return Num(env, 0);
}

// listen(out: Float64Array(2)) -> 0 with out = [listener, port], non-blocking; or -err.
Napi::Value Listen(const Napi::CallbackInfo& info) {
  auto out = info[0].As<Napi::Float64Array>();
  SOCKET s;
  int port;
  int err = MakeListener(&s, &port);
  if (err == 0) err = SetNonBlocking(s);
  if (err < 0) return Num(info.Env(), err);
  Own(s);
  out[0] = static_cast<double>(s);
  out[1] = port;
  return Num(info.Env(), 0);
}

// accept(listener) -> a connected non-blocking socket, or -err (UV_EAGAIN: none waiting).
Napi::Value Accept(const Napi::CallbackInfo& info) {
  SOCKET s = accept(static_cast<SOCKET>(ValueArg(info, 0)), nullptr, nullptr);
  if (s == INVALID_SOCKET) return Num(info.Env(), LastWsaError());
  int err = SetNonBlocking(s);
  if (err < 0) {
    closesocket(s);
    return Num(info.Env(), err);
  }
  BOOL on = TRUE;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&on), sizeof on);
  Own(s);
  return Num(info.Env(), static_cast<int64_t>(s));
}

// connect(port) -> a socket connected to 127.0.0.1:port, non-blocking, or -err.
Napi::Value Connect(const Napi::CallbackInfo& info) {
  SOCKET s;
  int err = ConnectLoopback(info[0].As<Napi::Number>().Int32Value(), &s);
  if (err == 0) err = SetNonBlocking(s);
  if (err < 0) return Num(info.Env(), err);
  Own(s);
  return Num(info.Env(), static_cast<int64_t>(s));
}

Napi::Value CloseSocket(const Napi::CallbackInfo& info) {
  uintptr_t s = ValueArg(info, 0);
  if (!IsOwned(s)) return Num(info.Env(), UV_EBADF);
  Disown(s);
  return Num(info.Env(), closesocket(static_cast<SOCKET>(s)) == 0 ? 0 : LastWsaError());
}

// send(sock, bytes, offset, length) -> bytes sent, or -err (UV_EAGAIN: the socket is full).
Napi::Value Send(const Napi::CallbackInfo& info) {
  SOCKET s = static_cast<SOCKET>(ValueArg(info, 0));
  int length = info[3].As<Napi::Number>().Int32Value();
  char* at = ArgRange(info, 1, info[2].As<Napi::Number>().Int64Value(), length);
  if (at == nullptr) return Num(info.Env(), UV_EINVAL);
  int n = send(s, at, length, 0);
  return Num(info.Env(), n == SOCKET_ERROR ? LastWsaError() : n);
}

// recv(sock, bytes, offset, length) -> bytes read, 0 at the peer's end, or -err (UV_EAGAIN).
Napi::Value Recv(const Napi::CallbackInfo& info) {
  SOCKET s = static_cast<SOCKET>(ValueArg(info, 0));
  int length = info[3].As<Napi::Number>().Int32Value();
  char* at = ArgRange(info, 1, info[2].As<Napi::Number>().Int64Value(), length);
  if (at == nullptr) return Num(info.Env(), UV_EINVAL);
  int n = recv(s, at, length, 0);
  return Num(info.Env(), n == SOCKET_ERROR ? LastWsaError() : n);
}

// openProcess(pid) -> a handle allowed to duplicate handles into that process, or -err.
Napi::Value OpenPeerProcess(const Napi::CallbackInfo& info) {
  DWORD pid = info[0].As<Napi::Number>().Uint32Value();
  HANDLE h = nullptr;
  // This process from its pseudo-handle: OpenProcess by pid obeys the process's DACL, which a
  // hardened process may have emptied (then even it may not open itself).
  if (pid == GetCurrentProcessId()) {
    if (!DuplicateHandle(GetCurrentProcess(), GetCurrentProcess(), GetCurrentProcess(), &h,
                         PROCESS_DUP_HANDLE, FALSE, 0))
      h = nullptr;
  } else {
    h = OpenProcess(PROCESS_DUP_HANDLE, FALSE, pid);
  }
  if (h == nullptr) return Num(info.Env(), LastError());
  Own(reinterpret_cast<uintptr_t>(h));
  return Num(info.Env(), static_cast<int64_t>(reinterpret_cast<uintptr_t>(h)));
}

Napi::Value ClosePeerProcess(const Napi::CallbackInfo& info) {
  uintptr_t h = ValueArg(info, 0);
  if (!IsOwned(h)) return Num(info.Env(), UV_EBADF);
  Disown(h);
  return Num(info.Env(), CloseHandle(reinterpret_cast<HANDLE>(h)) ? 0 : LastError());
}

bool IsSocket(HANDLE h) {
  int type;
  int len = sizeof type;
  return getsockopt(reinterpret_cast<SOCKET>(h), SOL_SOCKET, SO_TYPE,
                    reinterpret_cast<char*>(&type), &len) == 0;
}

// pushFd(fd, process, pid, entry: Uint8Array(kEntryBytes), stage: Int32Array(1)) -> the
// entry's kind, with its body written at entry[4..]: KIND_HANDLE, the value of a duplicate
// made in the peer (8 bytes, little-endian); KIND_SOCKET, the WSAPROTOCOL_INFOW for the peer.
// Or -err, with stage[0] the call that refused: 0 DuplicateHandle (EBADF for an fd with no
// handle, as DuplicateHandle says of an invalid one), 1 WSADuplicateSocketW.
constexpr int kKindHandle = 1;
constexpr int kKindSocket = 2;
constexpr size_t kEntryBytes = 4 + sizeof(WSAPROTOCOL_INFOW);

Napi::Value PushFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = info[0].As<Napi::Number>().Int32Value();
  HANDLE process = reinterpret_cast<HANDLE>(ValueArg(info, 1));
  DWORD pid = info[2].As<Napi::Number>().Uint32Value();
  auto entry = info[3].As<Napi::Uint8Array>();
  auto stage = info[4].As<Napi::Int32Array>();
  stage[0] = 0;
  if (entry.ByteLength() < kEntryBytes) return Num(env, UV_EINVAL);
  HANDLE h = reinterpret_cast<HANDLE>(uv_get_osfhandle(fd));
  if (h == INVALID_HANDLE_VALUE || h == nullptr) return Num(env, UV_EBADF);
  if (IsSocket(h)) {
    stage[0] = 1;
    if (WSADuplicateSocketW(reinterpret_cast<SOCKET>(h), pid,
                            reinterpret_cast<WSAPROTOCOL_INFOW*>(entry.Data() + 4)) != 0)
      return Num(env, LastWsaError());
    return Num(env, kKindSocket);
  }
  HANDLE remote = nullptr;
  if (!DuplicateHandle(GetCurrentProcess(), h, process, &remote, 0, FALSE, DUPLICATE_SAME_ACCESS))
    return Num(env, LastError());
  uint64_t value = reinterpret_cast<uintptr_t>(remote);
  memcpy(entry.Data() + 4, &value, sizeof value);
  return Num(env, kKindHandle);
}

// unpush(process, value): closes a duplicate we made in the peer that it never got (the
// record carrying it was not sent whole, or a verification challenge). 0 or -err. It is
// taken out into this process (DUPLICATE_CLOSE_SOURCE) and the copy closed: Wine refuses a
// NULL target process (EBADF), and then leaves the source open in another process.
int UnpushValue(HANDLE process, HANDLE remote) {
  HANDLE local = nullptr;
  if (!DuplicateHandle(process, remote, GetCurrentProcess(), &local, 0, FALSE,
                       DUPLICATE_SAME_ACCESS | DUPLICATE_CLOSE_SOURCE))
    return LastError();
  CloseHandle(local);
  return 0;
}

Napi::Value Unpush(const Napi::CallbackInfo& info) {
  return Num(info.Env(), UnpushValue(reinterpret_cast<HANDLE>(ValueArg(info, 0)),
                                     reinterpret_cast<HANDLE>(ValueArg(info, 1))));
}

// How far adopt and discard look for a Node fd whose handle a pushed value names.
constexpr int kFdScanLimit = 2048;

// 0 if value may be a handle the peer pushed into us; -err if it certainly is not: not a
// handle value, no open handle, one the transport owns, or the handle behind one of our fds.
int CheckPushedValue(uintptr_t value) {
  if (value == 0 || value % 4 != 0 || value >= 0x80000000u) return UV_EINVAL;
  HANDLE h = reinterpret_cast<HANDLE>(value);
  DWORD flags;
  if (!GetHandleInformation(h, &flags)) return UV_EBADF;
  if (IsOwned(value)) return UV_EPERM;
  for (int fd = 0; fd < kFdScanLimit; fd++) {
    if (uv_get_osfhandle(fd) == h) return UV_EPERM;
  }
  return 0;
}

// adoptHandle(value) -> a Node fd (uv_open_osfhandle, in node.exe's C runtime) that owns the
// pushed handle, or -err (the value is then left alone).
Napi::Value AdoptHandle(const Napi::CallbackInfo& info) {
  uintptr_t value = ValueArg(info, 0);
  int err = CheckPushedValue(value);
  if (err < 0) return Num(info.Env(), err);
  int fd = uv_open_osfhandle(reinterpret_cast<HANDLE>(value));
  return Num(info.Env(), fd < 0 ? UV_EMFILE : fd);
}

// discardHandle(value): closes a pushed handle nobody will take, after the same checks. 0 or -err.
Napi::Value DiscardHandle(const Napi::CallbackInfo& info) {
  uintptr_t value = ValueArg(info, 0);
  int err = CheckPushedValue(value);
  if (err < 0) return Num(info.Env(), err);
  return Num(info.Env(), CloseHandle(reinterpret_cast<HANDLE>(value)) ? 0 : LastError());
}

// adoptSocket(entry) -> a Node fd owning a new socket made from the WSAPROTOCOL_INFOW at
// entry[4..], or -err.
// A socket entry's WSAPROTOCOL_INFOW, as the peer wrote it, with its name ended inside it.
bool ReadSocketEntry(const Napi::CallbackInfo& info, WSAPROTOCOL_INFOW* protocol) {
  auto entry = info[0].As<Napi::Uint8Array>();
  if (entry.ByteLength() < kEntryBytes) return false;
  memcpy(protocol, entry.Data() + 4, sizeof *protocol);
  protocol->szProtocol[WSAPROTOCOL_LEN] = L'\0';
  return true;
}

// Wine's WSADuplicateSocketW duplicates the socket straight into the target process and
// writes that handle's value in dwServiceFlags3, marked by this value in dwServiceFlags4;
// its WSASocketW returns the value as it is. So, under Wine, an entry names a handle of ours:
// it gets the checks of a pushed handle value before anything uses it.
constexpr DWORD kWineDuplicateMark = 0xff00ff00;

// 0 if the entry may be adopted or discarded; -err if it names a handle that fails the
// checks (Wine's form). Windows' own form names none we can check.
int CheckSocketEntry(const WSAPROTOCOL_INFOW& protocol) {
  if (protocol.dwServiceFlags4 != kWineDuplicateMark) return 0;
  return CheckPushedValue(protocol.dwServiceFlags3);
}

// pushedSocketValue(entry) -> the value of the handle a socket entry made in the peer (Wine's
// form), which the sender can take back with unpush like a handle entry's; 0 for Windows' own
// form, which names nothing in the peer (the peer makes the socket from it, or never does).
Napi::Value PushedSocketValue(const Napi::CallbackInfo& info) {
  WSAPROTOCOL_INFOW protocol;
  if (!ReadSocketEntry(info, &protocol)) return Num(info.Env(), UV_EINVAL);
  if (protocol.dwServiceFlags4 != kWineDuplicateMark) return Num(info.Env(), 0);
  return Num(info.Env(), protocol.dwServiceFlags3);
}

Napi::Value AdoptSocket(const Napi::CallbackInfo& info) {
  WSAPROTOCOL_INFOW protocol;
  if (!ReadSocketEntry(info, &protocol)) return Num(info.Env(), UV_EINVAL);
  int err = CheckSocketEntry(protocol);
  if (err < 0) return Num(info.Env(), err);
  SOCKET s = WSASocketW(FROM_PROTOCOL_INFO, FROM_PROTOCOL_INFO, FROM_PROTOCOL_INFO, &protocol, 0,
                        WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  if (s == INVALID_SOCKET) return Num(info.Env(), LastWsaError());
  int fd = uv_open_osfhandle(reinterpret_cast<HANDLE>(s));
  if (fd < 0) {
    closesocket(s);
    return Num(info.Env(), UV_EMFILE);
  }
  return Num(info.Env(), fd);
}

// discardSocket(entry): releases what a socket entry left in this process for a socket nobody
// will take: 0 or -err (refused as a handle value is, then left alone). Wine's form: the
// duplicate is a plain handle (not in Wine's per-process socket list, so closesocket would
// refuse it): CloseHandle. Windows' form: the socket is made, then closed.
Napi::Value DiscardSocket(const Napi::CallbackInfo& info) {
  WSAPROTOCOL_INFOW protocol;
  if (!ReadSocketEntry(info, &protocol)) return Num(info.Env(), UV_EINVAL);
  int err = CheckSocketEntry(protocol);
  if (err < 0) return Num(info.Env(), err);
  if (protocol.dwServiceFlags4 == kWineDuplicateMark) {
    HANDLE h = reinterpret_cast<HANDLE>(static_cast<uintptr_t>(protocol.dwServiceFlags3));
    return Num(info.Env(), CloseHandle(h) ? 0 : LastError());
  }
  SOCKET s = WSASocketW(FROM_PROTOCOL_INFO, FROM_PROTOCOL_INFO, FROM_PROTOCOL_INFO, &protocol, 0,
                        WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
  if (s == INVALID_SOCKET) return Num(info.Env(), LastWsaError());
  return Num(info.Env(), closesocket(s) == 0 ? 0 : LastWsaError());
}

// pipe(out: Int32Array(2)) -> 0 with out = [read fd, write fd] (an anonymous pipe, as Node fds), or
// -err.
Napi::Value Pipe(const Napi::CallbackInfo& info) {
  auto out = info[0].As<Napi::Int32Array>();
  HANDLE r, w;
  if (!CreatePipe(&r, &w, nullptr, 0)) return Num(info.Env(), LastError());
  out[0] = uv_open_osfhandle(r);
  out[1] = uv_open_osfhandle(w);
  return Num(info.Env(), 0);
}

// Writes a connected IPv4 stream socket's local then remote address and port, as they are in
// a sockaddr_in (4 + 2 bytes each), at out[0..12): 0, or -err (ENOTSOCK, EPROTOTYPE, ENOTCONN,
// EAFNOSUPPORT).
static int WriteAddresses(SOCKET s, uint8_t* out) {
  int type;
  int len = sizeof type;
  if (getsockopt(s, SOL_SOCKET, SO_TYPE, reinterpret_cast<char*>(&type), &len) != 0)
    return UvError(
        WSAENOTSOCK);  // what answers no SO_TYPE is no socket (Wine's error for a file varies)
  if (type != SOCK_STREAM) return UvError(WSAEPROTOTYPE);
  sockaddr_storage local{}, remote{};
  len = sizeof local;
  if (getsockname(s, reinterpret_cast<sockaddr*>(&local), &len) != 0) return LastWsaError();
  len = sizeof remote;
  if (getpeername(s, reinterpret_cast<sockaddr*>(&remote), &len) != 0) return LastWsaError();
  if (local.ss_family != AF_INET || remote.ss_family != AF_INET) return UvError(WSAEAFNOSUPPORT);
  auto* l = reinterpret_cast<sockaddr_in*>(&local);
  auto* r = reinterpret_cast<sockaddr_in*>(&remote);
  memcpy(out, &l->sin_addr, 4);
  memcpy(out + 4, &l->sin_port, 2);
  memcpy(out + 6, &r->sin_addr, 4);
  memcpy(out + 10, &r->sin_port, 2);
  return 0;
}

// socketOfFd(fd, addresses: Uint8Array(12)) -> the SOCKET behind a Node fd, if it is a
// connected IPv4 stream socket, with its addresses written (WriteAddresses); or -err (EBADF, or
// WriteAddresses's). The fd keeps the socket: nothing is changed.
Napi::Value SocketOfFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto addresses = info[1].As<Napi::Uint8Array>();
  if (addresses.ByteLength() < 12) return Num(env, UV_EINVAL);
  HANDLE h = HandleOfFd(ArgInt(info, 0));
  if (h == INVALID_HANDLE_VALUE || h == nullptr) return Num(env, UV_EBADF);
  SOCKET s = reinterpret_cast<SOCKET>(h);
  int err = WriteAddresses(s, addresses.Data());
  return Num(env, err < 0 ? err : static_cast<int64_t>(s));
}

// socketAddresses(sock, addresses: Uint8Array(12)) -> 0 with a transport socket's addresses
// written (WriteAddresses), or -err.
Napi::Value SocketAddresses(const Napi::CallbackInfo& info) {
  auto addresses = info[1].As<Napi::Uint8Array>();
  if (addresses.ByteLength() < 12) return Num(info.Env(), UV_EINVAL);
  return Num(info.Env(), WriteAddresses(static_cast<SOCKET>(ValueArg(info, 0)), addresses.Data()));
}

// pushChallenge(process, content) -> the value, in that process, of a read-only handle to a
// new unnamed section holding content; or -err. Our own handle to the section is closed at
// once: the section lives as long as the pushed handle, which the caller removes with unpush.
// Read-only (FILE_MAP_READ), so a process that gets it by mistake can only read content.
Napi::Value PushChallenge(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  HANDLE process = reinterpret_cast<HANDLE>(ValueArg(info, 0));
  auto content = info[1].As<Napi::Uint8Array>();
  DWORD size = static_cast<DWORD>(content.ByteLength());
  if (size == 0) return Num(env, UV_EINVAL);
  HANDLE section =
      CreateFileMappingW(INVALID_HANDLE_VALUE, nullptr, PAGE_READWRITE, 0, size, nullptr);
  if (section == nullptr) return Num(env, LastError());
  void* view = MapViewOfFile(section, FILE_MAP_WRITE, 0, 0, size);
  if (view == nullptr) {
    int err = LastError();
    CloseHandle(section);
    return Num(env, err);
  }
  memcpy(view, content.Data(), size);
  UnmapViewOfFile(view);
  HANDLE remote = nullptr;
  BOOL pushed =
      DuplicateHandle(GetCurrentProcess(), section, process, &remote, FILE_MAP_READ, FALSE, 0);
  int err = pushed ? 0 : LastError();
  CloseHandle(section);
  if (!pushed) return Num(env, err);
  return Num(env, static_cast<int64_t>(reinterpret_cast<uintptr_t>(remote)));
}

// readChallenge(value, out) -> 0 with out filled from the start of the section a peer pushed
// into us as value; or -err (the value fails CheckPushedValue, or names no section, or one
// smaller than out). Read-only, and the value is left open: the peer that pushed it removes it.
Napi::Value ReadChallenge(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uintptr_t value = ValueArg(info, 0);
  auto out = info[1].As<Napi::Uint8Array>();
  int err = CheckPushedValue(value);
  if (err < 0) return Num(env, err);
  void* view =
      MapViewOfFile(reinterpret_cast<HANDLE>(value), FILE_MAP_READ, 0, 0, out.ByteLength());
  if (view == nullptr) return Num(env, LastError());
  memcpy(out.Data(), view, out.ByteLength());
  UnmapViewOfFile(view);
  return Num(env, 0);
}

// WinPollWrap: one uv_poll_t over one transport socket. open(sock, process?, fd?) -> 0 or
// -err; the wrap owns the socket (and the peer's process handle, if given; ownProcess(process)
// gives it one later) from then on and closes them after the poll handle has closed. With fd,
// the socket is the one behind that Node fd (new Channel(fd)), and the wrap closes the fd
// instead, with node.exe's own uv_fs_close, which frees node.exe's fd with its handle: at close(),
// or, when the environment (the main thread or a worker) goes away with the channel open, from a
// Node-API cleanup hook without JS. Without the hook Node aborts when it closes a worker's loop
// with the poll still in it. The uv_poll_t comes first, so that libuv's pointer to it is a pointer
// to the whole.
struct PollHandle {
  alignas(16) unsigned char poll_room[1024];  // libuv's uv_poll_t is a few hundred bytes
  class WinPollWrap* owner;                   // null once detached: then nothing calls JS
  SOCKET sock;
  int fd;  // -1: the wrap owns sock itself; else the Node fd that owns it
  uv_loop_s* loop;
  uintptr_t process;  // 0: none
  // What a new Channel(fd) verification under way holds (holdVerification): its handle to the
  // claimed process and the challenge it pushed there (0: none yet). JS undoes them when the
  // verification ends; the cleanup hook does, if the environment goes away first.
  uintptr_t verifying_process;
  uintptr_t verifying_challenge;
  bool closing;
  napi_async_cleanup_hook_handle cleanup_hook;
  uv_poll_s* poll() { return reinterpret_cast<uv_poll_s*>(poll_room); }
  uv_handle_s* handle() { return reinterpret_cast<uv_handle_s*>(poll_room); }
};

void OnUvClose(uv_handle_s* raw);

void BeginClose(PollHandle* handle) {
  if (handle->closing) return;
  handle->closing = true;
  uv_poll_stop(handle->poll());
  uv_close(handle->handle(), OnUvClose);
}

void OnEnvironmentCleanup(napi_async_cleanup_hook_handle, void* arg);

class WinPollWrap : public Napi::ObjectWrap<WinPollWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "WinPollWrap",
        {InstanceMethod<&WinPollWrap::Open>("open"), InstanceMethod<&WinPollWrap::Start>("start"),
         InstanceMethod<&WinPollWrap::RefHandle>("ref"),
         InstanceMethod<&WinPollWrap::UnrefHandle>("unref"),
         InstanceMethod<&WinPollWrap::HasRefHandle>("hasRef"),
         InstanceMethod<&WinPollWrap::OwnProcess>("ownProcess"),
         InstanceMethod<&WinPollWrap::HoldVerification>("holdVerification"),
         InstanceMethod<&WinPollWrap::ReleaseVerification>("releaseVerification"),
         InstanceMethod<&WinPollWrap::Close>("close")});
  }

  explicit WinPollWrap(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<WinPollWrap>(info), async_context_(info.Env(), "fdpass:WinPollWrap") {
    on_event_ = Napi::Persistent(info[0].As<Napi::Function>());
  }

  // At environment teardown the JS object may be finalized before the cleanup hook runs:
  // detach, and let the close callback free the handle.
  ~WinPollWrap() override {
    if (handle_ != nullptr) {
      PollHandle* handle = handle_;
      Detach();
      BeginClose(handle);
    }
  }

  // No JS will run again for this wrap: the handle closes on its own.
  void Detach() {
    if (handle_ != nullptr) handle_->owner = nullptr;
    handle_ = nullptr;
    closed_ = true;
  }

  void OnClosed() {
    handle_ = nullptr;
    closed_ = true;
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::FunctionReference on_close = std::move(on_close_);
    on_event_.Reset();
    Unref();
    if (!on_close.IsEmpty()) CallIntoJs(on_close.Value(), {});
  }

  void OnEvent(int status, int events) {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    CallIntoJs(on_event_.Value(),
               {Num(env, status), Napi::Boolean::New(env, (events & UV_READABLE) != 0),
                Napi::Boolean::New(env, (events & UV_WRITABLE) != 0)});
  }

  // MakeCallback, so promise reactions run before control returns to libuv, in raw Node-API:
  // node-addon-api turns a failed call into a thrown Error, which is fatal while a worker is
  // being terminated (node.exe aborted with 'Error::ThrowAsJavaScriptException napi_throw'
  // when a poll fired then). An exception JS threw goes to 'uncaughtException': nothing may
  // unwind through libuv.
  void CallIntoJs(Napi::Function callback, const std::initializer_list<napi_value>& args) {
    napi_env env = Env();
    napi_value result;
    if (napi_make_callback(env, async_context_, Env().Global(), callback, args.size(), args.begin(),
                           &result) == napi_ok)
      return;
    bool pending = false;
    if (napi_is_exception_pending(env, &pending) != napi_ok || !pending) return;
    napi_value error;
    if (napi_get_and_clear_last_exception(env, &error) == napi_ok) napi_fatal_exception(env, error);
  }

 private:
  Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (handle_ != nullptr || closed_) return Num(env, UV_EINVAL);
    uintptr_t sock = ValueArg(info, 0);
    uintptr_t process = info.Length() > 1 && info[1].IsNumber() ? ValueArg(info, 1) : 0;
    int fd = info.Length() > 2 && info[2].IsNumber() ? ArgInt(info, 2) : -1;
    bool sock_ok = fd >= 0 ? reinterpret_cast<uintptr_t>(HandleOfFd(fd)) == sock : IsOwned(sock);
    if (!sock_ok || (process != 0 && !IsOwned(process))) return Num(env, UV_EBADF);
    uv_loop_s* loop;
    napi_get_uv_event_loop(env, &loop);
    auto* handle = static_cast<PollHandle*>(calloc(1, sizeof(PollHandle)));
    if (handle == nullptr) return Num(env, UV_ENOMEM);
    int err = uv_poll_init_socket(loop, handle->poll(), static_cast<SOCKET>(sock));
    if (err < 0) {
      free(handle);
      return Num(env, err);
    }
    handle->sock = static_cast<SOCKET>(sock);
    handle->fd = fd;
    handle->loop = loop;
    if (napi_add_async_cleanup_hook(env, OnEnvironmentCleanup, handle, &handle->cleanup_hook) !=
        napi_ok) {
      // The caller still owns the socket and the process when open fails.
      handle->cleanup_hook = nullptr;
      handle->sock = INVALID_SOCKET;
      handle->fd = -1;
      BeginClose(handle);
      return Num(env, UV_ENOMEM);
    }
    handle->owner = this;
    handle->process = process;
    handle_ = handle;
    Ref();  // nothing is collected while the handle is open or closing
    return Num(env, 0);
  }

  // ownProcess(process) -> 0 or -err: the peer's process handle, known only once the peer
  // is verified, closed with the socket from here on.
  Napi::Value OwnProcess(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uintptr_t process = ValueArg(info, 0);
    if (handle_ == nullptr || handle_->closing || handle_->process != 0 || !IsOwned(process))
      return Num(env, UV_EBADF);
    handle_->process = process;
    return Num(env, 0);
  }

  // holdVerification(process, challenge) -> 0 or -err: a verification under way holds these
  // (its process handle, the challenge's value in that process, or 0); if the environment goes
  // away before releaseVerification(), the cleanup hook removes the challenge and closes the
  // handle, since no JS runs then. Each call replaces what the last one gave.
  Napi::Value HoldVerification(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uintptr_t process = ValueArg(info, 0);
    if (handle_ == nullptr || !IsOwned(process)) return Num(env, UV_EBADF);
    handle_->verifying_process = process;
    handle_->verifying_challenge = ValueArg(info, 1);
    return Num(env, 0);
  }

  // releaseVerification(): JS undoes what the verification held, from here on.
  Napi::Value ReleaseVerification(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) handle_->verifying_process = handle_->verifying_challenge = 0;
    return info.Env().Undefined();
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (handle_ == nullptr || handle_->closing) return Num(env, UV_EBADF);
    int events = (info[0].ToBoolean() ? UV_READABLE : 0) | (info[1].ToBoolean() ? UV_WRITABLE : 0);
    if (events == 0) return Num(env, uv_poll_stop(handle_->poll()));
    return Num(env, uv_poll_start(handle_->poll(), events, OnPoll));
  }

  Napi::Value RefHandle(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr && !handle_->closing) uv_ref(handle_->handle());
    return info.This();
  }

  Napi::Value UnrefHandle(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr && !handle_->closing) uv_unref(handle_->handle());
    return info.This();
  }

  Napi::Value HasRefHandle(const Napi::CallbackInfo& info) {
    bool refd = handle_ != nullptr && !handle_->closing && uv_has_ref(handle_->handle());
    return Napi::Boolean::New(info.Env(), refd);
  }

  // close(onClose) -> true if onClose will be called (once the socket is closed).
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (handle_ == nullptr || handle_->closing) return Napi::Boolean::New(info.Env(), false);
    on_close_ = Napi::Persistent(info[0].As<Napi::Function>());
    BeginClose(handle_);
    return Napi::Boolean::New(info.Env(), true);
  }

  static void OnPoll(uv_poll_s* poll, int status, int events) {
    auto* handle = reinterpret_cast<PollHandle*>(poll);
    if (handle->closing || handle->owner == nullptr) return;
    handle->owner->OnEvent(status, events);
  }

  PollHandle* handle_ = nullptr;
  bool closed_ = false;
  Napi::FunctionReference on_event_;
  Napi::FunctionReference on_close_;
  Napi::AsyncContext async_context_;
};

// Free only here: libuv is done with the handle. The socket and the process handle close
// after the poll handle.
void OnUvClose(uv_handle_s* raw) {
  auto* handle = reinterpret_cast<PollHandle*>(raw);
  if (handle->fd >= 0) {
    // Synchronous (no callback): node.exe's CRT closes the fd and the socket behind it.
    alignas(16) unsigned char req[1024];  // libuv's uv_fs_t is a few hundred bytes
    auto* fs = reinterpret_cast<uv_fs_s*>(req);
    uv_fs_close(handle->loop, fs, handle->fd, nullptr);
    uv_fs_req_cleanup(fs);
  } else if (handle->sock != INVALID_SOCKET) {
    Disown(handle->sock);
    closesocket(handle->sock);
  }
  if (handle->process != 0) {
    Disown(handle->process);
    CloseHandle(reinterpret_cast<HANDLE>(handle->process));
  }
  if (handle->cleanup_hook != nullptr) napi_remove_async_cleanup_hook(handle->cleanup_hook);
  WinPollWrap* owner = handle->owner;
  free(handle);
  if (owner != nullptr) owner->OnClosed();
}

// The environment is going away with the handle open: close it without JS.
void OnEnvironmentCleanup(napi_async_cleanup_hook_handle, void* arg) {
  auto* handle = static_cast<PollHandle*>(arg);
  if (handle->owner != nullptr) handle->owner->Detach();
  if (handle->verifying_process != 0) {
    HANDLE process = reinterpret_cast<HANDLE>(handle->verifying_process);
    if (handle->verifying_challenge != 0)
      UnpushValue(process, reinterpret_cast<HANDLE>(handle->verifying_challenge));
    Disown(handle->verifying_process);
    CloseHandle(process);
    handle->verifying_process = handle->verifying_challenge = 0;
  }
  BeginClose(handle);  // a no-op if already closing; OnUvClose removes this hook
}

}  // namespace

void InitChannelTransport(Napi::Env env, Napi::Object exports) {
  Napi::Object win = Napi::Object::New(env);
  auto fn = [&](const char* name, Napi::Value (*f)(const Napi::CallbackInfo&)) {
    win.Set(name, Napi::Function::New(env, f, name));
  };
  fn("tcpPair", TcpPair);
  fn("listen", Listen);
  fn("accept", Accept);
  fn("connect", Connect);
  fn("closeSocket", CloseSocket);
  fn("send", Send);
  fn("recv", Recv);
  fn("openProcess", OpenPeerProcess);
  fn("closeProcess", ClosePeerProcess);
  fn("pushFd", PushFd);
  fn("unpush", Unpush);
  fn("adoptHandle", AdoptHandle);
  fn("discardHandle", DiscardHandle);
  fn("adoptSocket", AdoptSocket);
  fn("pushedSocketValue", PushedSocketValue);
  fn("discardSocket", DiscardSocket);
  fn("pipe", Pipe);
  fn("socketOfFd", SocketOfFd);
  fn("socketAddresses", SocketAddresses);
  fn("pushChallenge", PushChallenge);
  fn("readChallenge", ReadChallenge);
  win.Set("WinPollWrap", WinPollWrap::Define(env));
  win.Set("KIND_HANDLE", Num(env, kKindHandle));
  win.Set("KIND_SOCKET", Num(env, kKindSocket));
  win.Set("ENTRY_BYTES", Num(env, static_cast<int64_t>(kEntryBytes)));
  win.Set("HANDLE_ENTRY_BYTES", Num(env, 4 + 8));
  exports.Set("winChannel", win);
}

}  // namespace fdpass::win
