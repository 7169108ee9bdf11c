// Stream sockets as Node fds on Windows: a connected pair (socketpair's stand-in, over
// loopback TCP: Wine has no AF_UNIX), a loopback listener, accept and connect for a second
// process, blocking mode, and recv. Every SOCKET is non-inheritable and handed to JS as a
// node.exe fd (uv_open_osfhandle); every function returns a value >= 0 or a libuv error.
#include <ws2tcpip.h>

#include <string>

#include "win_io.h"
#include "win_modules.h"

namespace fdpass::win {
namespace {

int LastSocketError() { return UvError(WSAGetLastError()); }

SOCKET NewStreamSocket() {
  return WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0,
                    WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
}

// The fd for s, which it owns from here on; s is closed if node.exe has no fd left.
int AdoptSocket(SOCKET s) {
  int fd = uv_open_osfhandle(reinterpret_cast<HANDLE>(s));
  if (fd < 0) {
    closesocket(s);
    return UvError(ERROR_TOO_MANY_OPEN_FILES);
  }
  return fd;
}

sockaddr_in Loopback(uint16_t port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  return address;
}

// A listener on 127.0.0.1 at port (0: any), its port in *port: the SOCKET or INVALID_SOCKET.
SOCKET Listen(uint16_t* port, int* err) {
  SOCKET s = NewStreamSocket();
  if (s == INVALID_SOCKET) return *err = LastSocketError(), INVALID_SOCKET;
  BOOL exclusive = TRUE;  // nobody else may bind the same port while we listen
  setsockopt(s, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, reinterpret_cast<char*>(&exclusive),
             sizeof exclusive);
  sockaddr_in address = Loopback(*port);
  int length = sizeof address;
  if (bind(s, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      listen(s, SOMAXCONN) != 0 ||
      getsockname(s, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    *err = LastSocketError();
    closesocket(s);
    return INVALID_SOCKET;
  }
  *port = ntohs(address.sin_port);
  return s;
}

SOCKET Connect(uint16_t port, int* err) {
  SOCKET s = NewStreamSocket();
  if (s == INVALID_SOCKET) return *err = LastSocketError(), INVALID_SOCKET;
  sockaddr_in address = Loopback(port);
  if (connect(s, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    *err = LastSocketError();
    closesocket(s);
    return INVALID_SOCKET;
  }
  return s;
}

SOCKET Accept(SOCKET listener, int* err) {
  SOCKET s = accept(listener, nullptr, nullptr);
  if (s == INVALID_SOCKET) return *err = LastSocketError(), INVALID_SOCKET;
  SetHandleInformation(reinterpret_cast<HANDLE>(s), HANDLE_FLAG_INHERIT, 0);
  return s;
}

bool SameAddress(const sockaddr_in& a, const sockaddr_in& b) {
  return a.sin_addr.s_addr == b.sin_addr.s_addr && a.sin_port == b.sin_port;
}

int SetNonBlocking(SOCKET s, bool non_blocking) {
  // Asked first: Wine's ioctlsocket on a file fails with an error libuv cannot name.
  int type = 0, length = sizeof type;
  if (getsockopt(s, SOL_SOCKET, SO_TYPE, reinterpret_cast<char*>(&type), &length) != 0)
    return LastSocketError();
  u_long mode = non_blocking ? 1 : 0;
  return ioctlsocket(s, FIONBIO, &mode) == 0 ? 0 : LastSocketError();
}

// socketpair(out: Int32Array(2)) -> 0 | -error. A connected loopback TCP pair, both
// non-blocking with TCP_NODELAY. The accepted end is checked to be our own client: another
// local process could connect to the listener first.
Napi::Value JsSocketPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto out = info[0].As<Napi::Int32Array>();
  int err = 0;
  uint16_t port = 0;
  SOCKET listener = Listen(&port, &err);
  if (listener == INVALID_SOCKET) return Napi::Number::New(env, err);
  SOCKET client = Connect(port, &err);
  SOCKET server = INVALID_SOCKET;
  if (client != INVALID_SOCKET) {
    sockaddr_in client_address{}, server_peer{};
    int length = sizeof client_address;
    getsockname(client, reinterpret_cast<sockaddr*>(&client_address), &length);
    for (;;) {
      server = Accept(listener, &err);
      if (server == INVALID_SOCKET) break;
      length = sizeof server_peer;
      if (getpeername(server, reinterpret_cast<sockaddr*>(&server_peer), &length) == 0 &&
          SameAddress(server_peer, client_address))
        break;
      closesocket(server);  // an intruder: not ours
    }
  }
  closesocket(listener);
  if (server == INVALID_SOCKET) {
    if (client != INVALID_SOCKET) closesocket(client);
    return Napi::Number::New(env, err);
  }
  SOCKET ends[2] = {client, server};
  for (SOCKET s : ends) {
    BOOL no_delay = TRUE;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<char*>(&no_delay), sizeof no_delay);
    SetNonBlocking(s, true);
  }
  int first = AdoptSocket(client);
  if (first < 0) {
    closesocket(server);
    return Napi::Number::New(env, first);
  }
  int second = AdoptSocket(server);
  if (second < 0) {
    CloseHandle(uv_get_osfhandle(first));  // node.exe's fd slot stays: see lib/fd.ts
    return Napi::Number::New(env, second);
  }
  out[0] = first;
  out[1] = second;
  return Napi::Number::New(env, 0);
}

// listenLoopback(port) -> the listener's fd | -error; localPort(fd) gives the port.
Napi::Value JsListenLoopback(const Napi::CallbackInfo& info) {
  int err = 0;
  uint16_t port = static_cast<uint16_t>(ArgInt(info, 0));
  SOCKET s = Listen(&port, &err);
  return Napi::Number::New(info.Env(), s == INVALID_SOCKET ? err : AdoptSocket(s));
}

// localPort(fd) -> the port a loopback socket is bound to | -error
Napi::Value JsLocalPort(const Napi::CallbackInfo& info) {
  auto s = reinterpret_cast<SOCKET>(HandleOfFd(ArgInt(info, 0)));
  sockaddr_in address{};
  int length = sizeof address;
  if (getsockname(s, reinterpret_cast<sockaddr*>(&address), &length) != 0)
    return Napi::Number::New(info.Env(), LastSocketError());
  return Napi::Number::New(info.Env(), ntohs(address.sin_port));
}

// accept(listenerFd) -> the connection's fd | -error; blocks on a blocking listener.
Napi::Value JsAccept(const Napi::CallbackInfo& info) {
  int err = 0;
  SOCKET s = Accept(reinterpret_cast<SOCKET>(HandleOfFd(ArgInt(info, 0))), &err);
  return Napi::Number::New(info.Env(), s == INVALID_SOCKET ? err : AdoptSocket(s));
}

// connectLoopback(port) -> a blocking connection's fd | -error
Napi::Value JsConnectLoopback(const Napi::CallbackInfo& info) {
  int err = 0;
  SOCKET s = Connect(static_cast<uint16_t>(ArgInt(info, 0)), &err);
  return Napi::Number::New(info.Env(), s == INVALID_SOCKET ? err : AdoptSocket(s));
}

// setNonBlocking(fd, nonBlocking) -> 0 | -error (ENOTSOCK for what is no socket)
Napi::Value JsSetNonBlocking(const Napi::CallbackInfo& info) {
  auto s = reinterpret_cast<SOCKET>(HandleOfFd(ArgInt(info, 0)));
  return Napi::Number::New(info.Env(), SetNonBlocking(s, info[1].As<Napi::Boolean>().Value()));
}

// recv(fd, buffer, offset, length) -> bytes | 0 at end of stream | -error (EAGAIN: nothing yet)
Napi::Value JsRecv(const Napi::CallbackInfo& info) {
  auto s = reinterpret_cast<SOCKET>(HandleOfFd(ArgInt(info, 0)));
  int length = ArgInt(info, 3);
  char* into = ArgRange(info, 1, ArgInt(info, 2), length);
  if (into == nullptr) return Napi::Number::New(info.Env(), UvError(WSAEINVAL));
  int received = recv(s, into, length, 0);
  return Napi::Number::New(info.Env(), received >= 0 ? received : LastSocketError());
}

constexpr long kSendAllWaitSeconds = 5;

// sendAll(fd, buffer) -> bytes sent (all of them) | -error. EAGAIN only when nothing went:
// after the first bytes it waits for room (at most kSendAllWaitSeconds each time), so a record
// goes in part only to a peer that stopped reading.
Napi::Value JsSendAll(const Napi::CallbackInfo& info) {
  auto s = reinterpret_cast<SOCKET>(HandleOfFd(ArgInt(info, 0)));
  auto buffer = info[1].As<Napi::Uint8Array>();
  const char* data = reinterpret_cast<const char*>(buffer.Data());
  int length = static_cast<int>(buffer.ByteLength());
  int sent = 0;
  while (sent < length) {
    int n = send(s, data + sent, length - sent, 0);
    if (n >= 0) {
      sent += n;
      continue;
    }
    if (WSAGetLastError() != WSAEWOULDBLOCK || sent == 0)
      return Napi::Number::New(info.Env(), LastSocketError());
    // A peer that stops reading must not hold the event loop: after kSendAllWaitSeconds
    // without room the record stays cut (the peer sees a short record) and this says ETIMEDOUT.
    fd_set writable;
    FD_ZERO(&writable);
    FD_SET(s, &writable);
    timeval wait = {kSendAllWaitSeconds, 0};
    int ready = select(0, nullptr, &writable, nullptr, &wait);
    if (ready == 0) return Napi::Number::New(info.Env(), UvError(WSAETIMEDOUT));
    if (ready == SOCKET_ERROR) return Napi::Number::New(info.Env(), LastSocketError());
  }
  return Napi::Number::New(info.Env(), sent);
}

// socketIdentity(fd) -> the socket's handle value and both its addresses, as text | -error:
// what tells a socket from a later one that got the same fd number (and maybe the same
// handle value) after it was closed.
Napi::Value JsSocketIdentity(const Napi::CallbackInfo& info) {
  auto s = reinterpret_cast<SOCKET>(HandleOfFd(ArgInt(info, 0)));
  sockaddr_storage self{}, peer{};
  int self_length = sizeof self, peer_length = sizeof peer;
  if (getsockname(s, reinterpret_cast<sockaddr*>(&self), &self_length) != 0 ||
      getpeername(s, reinterpret_cast<sockaddr*>(&peer), &peer_length) != 0)
    return Napi::Number::New(info.Env(), LastSocketError());
  std::string identity = std::to_string(static_cast<uint64_t>(s));
  const auto append = [&identity](const sockaddr_storage& address, int length) {
    static const char kHex[] = "0123456789abcdef";
    identity += ' ';
    const auto* bytes = reinterpret_cast<const unsigned char*>(&address);
    for (int i = 0; i < length; i++) {
      identity += kHex[bytes[i] >> 4];
      identity += kHex[bytes[i] & 15];
    }
  };
  append(self, self_length);
  append(peer, peer_length);
  return Napi::String::New(info.Env(), identity);
}

}  // namespace

void InitLoopbackSocket(Napi::Env env, Napi::Object exports) {
  exports["socketpair"] = Napi::Function::New(env, JsSocketPair);
  exports["listenLoopback"] = Napi::Function::New(env, JsListenLoopback);
  exports["localPort"] = Napi::Function::New(env, JsLocalPort);
  exports["accept"] = Napi::Function::New(env, JsAccept);
  exports["connectLoopback"] = Napi::Function::New(env, JsConnectLoopback);
  exports["setNonBlocking"] = Napi::Function::New(env, JsSetNonBlocking);
  exports["recv"] = Napi::Function::New(env, JsRecv);
  exports["sendAll"] = Napi::Function::New(env, JsSendAll);
  exports["socketIdentity"] = Napi::Function::New(env, JsSocketIdentity);
}

}  // namespace fdpass::win
