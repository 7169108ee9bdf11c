// Addon entry: the flat syscall functions, constants and the PollWrap class.
// Context-aware: no globals, so it loads in every worker_threads worker.
// Every function returns numbers (-errno on failure); lib/ builds the errors.
#include <errno.h>
#include <fcntl.h>
#include <napi.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "describe.h"
#include "fd_registry.h"
#include "inet_socket.h"
#include "poll_wrap.h"
#include "posix_io.h"
#include "scheduling.h"
#include "socket_file.h"
#include "unix_socket.h"

namespace fdpass {
namespace {

// recvFd's answer when the message is not one bare fd: the message is in the receive report.
// Below every -errno.
constexpr int kNotBareFd = -0x10000;

// Memory lib/ registers once per thread, so that the hot calls pass no typed arrays (each
// one costs the call a lookup of its buffer). Held by a reference, so the pointers stay valid:
// the buffers are ArrayBuffers of their own, whose memory never moves.
struct ThreadBuffers {
  // Where recvFd puts a message that is not one bare fd, for lib/ to judge: an Int32Array of
  // [bytes, nfds, msg_flags, first data byte, fds...].
  Napi::Reference<Napi::Int32Array> receive_report;
  // sendFrame's frame header (kMessageHeaderBytes) and the fds that go with it.
  Napi::Reference<Napi::Uint8Array> send_header_ref;
  Napi::Reference<Napi::Int32Array> send_fds_ref;
  uint8_t* send_header = nullptr;
  int32_t* send_fds = nullptr;
  size_t send_fds_length = 0;
};
constexpr size_t kReportHeader = 4;

bool IsTypedArrayOf(const Napi::Value& value, napi_typedarray_type type, size_t min_length) {
  return value.IsTypedArray() && value.As<Napi::TypedArray>().TypedArrayType() == type &&
         value.As<Napi::TypedArray>().ElementLength() >= min_length;
}

int32_t ArgInt(const Napi::CallbackInfo& info, size_t i) {
  return info[i].As<Napi::Number>().Int32Value();
}

// socketpair(type, out: Int32Array(2)) -> 0 | -errno
Napi::Value JsSocketPair(const Napi::CallbackInfo& info) {
  auto out = info[1].As<Napi::Int32Array>();
  int fds[2];
  int err = SocketPair(ArgInt(info, 0), fds);
  if (err == 0) {
    out[0] = fds[0];
    out[1] = fds[1];
  }
  return Napi::Number::New(info.Env(), err);
}

// pipe(out: Int32Array(2)) -> 0 | -errno; out = [read end, write end]
Napi::Value JsPipe(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
      info[0].As<Napi::Int32Array>().ElementLength() < 2)
    return Napi::Number::New(env, -EINVAL);
  auto out = info[0].As<Napi::Int32Array>();
  int fds[2];
  int err = Pipe(fds);
  if (err == 0) {
    out[0] = fds[0];
    out[1] = fds[1];
  }
  return Napi::Number::New(env, err);
}

// read(fd, buffer: Uint8Array, offset, length) -> bytes | 0 (end of file) | -errno
Napi::Value JsRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[1].IsTypedArray() ||
      info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    return Napi::Number::New(env, -EINVAL);
  auto buffer = info[1].As<Napi::Uint8Array>();
  int64_t offset = info[2].As<Napi::Number>().Int64Value();
  int64_t length = info[3].As<Napi::Number>().Int64Value();
  int64_t size = static_cast<int64_t>(buffer.ElementLength());
  if (offset < 0 || offset > size || length < 0 || length > size - offset)
    return Napi::Number::New(env, -EINVAL);
  ssize_t n = ReadSome(ArgInt(info, 0), buffer.Data() + offset, static_cast<size_t>(length));
  return Napi::Number::New(env, static_cast<double>(n));
}

// socketType(fd) -> SOCK_* | -errno
Napi::Value JsSocketType(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), SocketType(ArgInt(info, 0)));
}

// setNonBlocking(fd, on) -> 0 | -errno
Napi::Value JsSetNonBlocking(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), SetNonBlocking(ArgInt(info, 0), info[1].ToBoolean()));
}

// setCloseOnExec(fd, on) -> 0 | -errno
Napi::Value JsSetCloseOnExec(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), SetCloseOnExec(ArgInt(info, 0), info[1].ToBoolean()));
}

// dupCloseOnExec(fd) -> new fd | -errno
Napi::Value JsDuplicateFd(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), DuplicateFd(ArgInt(info, 0)));
}

// shutdownWrite(sock) -> 0 | -errno
Napi::Value JsShutdownWrite(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), ShutdownWrite(ArgInt(info, 0)));
}

// sendmsg(sock, data: Uint8Array, offset, length, fds: Int32Array | null, nfds) -> bytes | -errno,
// never blocking. Six arguments: node-addon-api keeps that many on the stack, a seventh (the flags,
// always MSG_DONTWAIT) cost each call a heap allocation.
Napi::Value JsSendMessage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // The bytes of any view: napi_get_buffer_info, not a Uint8Array's info, which first asks
  // the view for its type, one type at a time (a tenth of a write's native cost).
  void* data = nullptr;
  size_t data_bytes = 0;
  if (napi_get_buffer_info(env, info[1], &data, &data_bytes) != napi_ok)
    return Napi::Number::New(env, -EINVAL);
  // null: the fds registered with setSendScratch, which spares the call a look at a typed
  // array (2% of a RawStream write's CPU, perf).
  const int32_t* fds = nullptr;
  size_t fds_length = 0;
  if (info[4].IsNull()) {
    const ThreadBuffers* buffers = env.GetInstanceData<ThreadBuffers>();
    fds = buffers->send_fds;
    fds_length = buffers->send_fds_length;
  } else {
    auto array = info[4].As<Napi::Int32Array>();
    fds = array.Data();
    fds_length = array.ElementLength();
  }
  // Checked as 64-bit values: a negative int32 cast to size_t would wrap past the bounds.
  int64_t offset = info[2].As<Napi::Number>().Int64Value();
  int64_t length = info[3].As<Napi::Number>().Int64Value();
  int64_t nfds = info[5].As<Napi::Number>().Int64Value();
  int64_t size = static_cast<int64_t>(data_bytes);
  // Each bound on its own: offset + length could wrap past the check.
  if (offset < 0 || offset > size || length < 0 || length > size - offset || nfds < 0 ||
      nfds > static_cast<int64_t>(fds_length))
    return Napi::Number::New(env, -EINVAL);
  ssize_t n =
      SendMessage(ArgInt(info, 0), static_cast<uint8_t*>(data) + offset,
                  static_cast<size_t>(length), fds, static_cast<size_t>(nfds), DontWaitFlag());
  return Napi::Number::New(env, static_cast<double>(n));
}

// setSendScratch(header: Uint8Array(MESSAGE_HEADER_BYTES), fds: Int32Array) -> 0 | -EINVAL:
// where sendFrame finds its header and fds, for this thread (see ThreadBuffers).
Napi::Value JsSetSendScratch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!IsTypedArrayOf(info[0], napi_uint8_array, kMessageHeaderBytes) ||
      !IsTypedArrayOf(info[1], napi_int32_array, 0))
    return Napi::Number::New(env, -EINVAL);
  auto header = info[0].As<Napi::Uint8Array>();
  auto fds = info[1].As<Napi::Int32Array>();
  ThreadBuffers* buffers = env.GetInstanceData<ThreadBuffers>();
  buffers->send_header_ref = Napi::Persistent(header);
  buffers->send_fds_ref = Napi::Persistent(fds);
  buffers->send_header = header.Data();
  buffers->send_fds = fds.Data();
  buffers->send_fds_length = fds.ElementLength();
  return Napi::Number::New(env, 0);
}

// sendFrame(sock, payload: Uint8Array, nfds, flags) -> bytes | -errno: the registered header
// then payload as one message, the first nfds of the registered fds with it.
Napi::Value JsSendFrame(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ThreadBuffers* buffers = env.GetInstanceData<ThreadBuffers>();
  auto payload = info[1].As<Napi::Uint8Array>();
  int64_t nfds = info[2].As<Napi::Number>().Int64Value();
  if (buffers->send_header == nullptr || nfds < 0 ||
      nfds > static_cast<int64_t>(buffers->send_fds_length))
    return Napi::Number::New(env, -EINVAL);
  struct iovec parts[2] = {{buffers->send_header, kMessageHeaderBytes},
                           {payload.Data(), payload.ElementLength()}};
  ssize_t n = SendParts(ArgInt(info, 0), parts, 2, buffers->send_fds, static_cast<size_t>(nfds),
                        ArgInt(info, 3));
  return Napi::Number::New(env, static_cast<double>(n));
}

// sendmmsg(sock, data: Uint8Array, records: Int32Array, fds: Int32Array, count) -> sent | -errno
// records: [dataOffset, dataLength, fdsOffset, nfds, bytesSent (out)] per message.
Napi::Value JsSendMessages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto data = info[1].As<Napi::Uint8Array>();
  auto records = info[2].As<Napi::Int32Array>();
  auto fds = info[3].As<Napi::Int32Array>();
  size_t count = std::min(static_cast<size_t>(ArgInt(info, 4)), kMaxMessagesPerBatch);
  if (count * 5 > records.ElementLength()) return Napi::Number::New(env, -EINVAL);
  OutgoingMessage messages[kMaxMessagesPerBatch];
  for (size_t i = 0; i < count; i++) {
    const int32_t* r = records.Data() + i * 5;
    if (r[0] < 0 || r[1] < 0 || r[2] < 0 || r[3] < 0 ||
        static_cast<size_t>(r[0]) + static_cast<size_t>(r[1]) > data.ElementLength() ||
        static_cast<size_t>(r[2]) + static_cast<size_t>(r[3]) > fds.ElementLength())
      return Napi::Number::New(env, -EINVAL);
    messages[i] = OutgoingMessage{data.Data() + r[0], static_cast<size_t>(r[1]), fds.Data() + r[2],
                                  static_cast<size_t>(r[3]), 0};
  }
  ssize_t sent = SendMessages(ArgInt(info, 0), messages, count);
  int32_t* out = records.Data();
  for (ssize_t i = 0; i < sent; i++) out[i * 5 + 4] = static_cast<int32_t>(messages[i].sent);
  return Napi::Number::New(env, static_cast<double>(sent));
}

// sendFd(sock, fd, flags) -> 1 | -errno: IO::FDPass's message, one zero byte carrying fd.
Napi::Value JsSendFd(const Napi::CallbackInfo& info) {
  const char zero = 0;
  int fd = ArgInt(info, 1);
  ssize_t n = SendMessage(ArgInt(info, 0), &zero, 1, &fd, 1, ArgInt(info, 2));
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

// setReceiveReport(slots: Int32Array) -> 0 | -EINVAL: see ThreadBuffers.
Napi::Value JsSetReceiveReport(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!IsTypedArrayOf(info[0], napi_int32_array, kReportHeader + kMaxFdsPerMessage))
    return Napi::Number::New(env, -EINVAL);
  env.GetInstanceData<ThreadBuffers>()->receive_report =
      Napi::Persistent(info[0].As<Napi::Int32Array>());
  return Napi::Number::New(env, 0);
}

// recvFd(sock, flags) -> the fd of a bare-fd message (one zero byte, one fd), -errno, or
// kNotBareFd with the message in the receive report and its fds open, for lib/ to close
// (none if the kernel cut the control data: ReceiveMessage closed what arrived).
Napi::Value JsReceiveFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  char byte = 0;
  int fds[kMaxFdsPerMessage];
  ReceivedInfo received;
  ssize_t n =
      ReceiveMessage(ArgInt(info, 0), &byte, 1, fds, kMaxFdsPerMessage, &received, ArgInt(info, 1));
  if (n < 0) return Napi::Number::New(env, static_cast<double>(n));
  if (n == 1 && received.nfds == 1 && byte == 0 && !(received.msg_flags & MSG_CTRUNC))
    return Napi::Number::New(env, fds[0]);
  ThreadBuffers* buffers = env.GetInstanceData<ThreadBuffers>();
  if (buffers->receive_report.IsEmpty()) {
    CloseFds(fds, received.nfds);  // nowhere to report them: never leak
    return Napi::Number::New(env, -EINVAL);
  }
  int32_t* out = buffers->receive_report.Value().Data();
  out[0] = static_cast<int32_t>(n);
  out[1] = static_cast<int32_t>(received.nfds);
  out[2] = received.msg_flags;
  out[3] = static_cast<unsigned char>(byte);
  std::memcpy(out + kReportHeader, fds, sizeof(int) * received.nfds);
  return Napi::Number::New(env, kNotBareFd);
}

// close(fd) -> 0 | -errno | FD_OWNED_BY_CHANNEL. Not fs.closeSync: inside a worker, Node
// warns when fs closes an fd that fs did not open, and every fd fdpass closes came from the
// kernel. A channel's own socket is refused: closing it under the poll handle aborts libuv.
Napi::Value JsClose(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), CloseUnlessOwned(ArgInt(info, 0)));
}

// isOwnedFd(fd) -> whether a channel's poll handle owns fd, in any thread.
Napi::Value JsIsOwnedFd(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), IsOwnedFd(ArgInt(info, 0)));
}

// closeMany(fds: Int32Array, count) -> 0: the first count fds, a run of consecutive numbers
// in one syscall; an fd a channel owns is left to its channel.
Napi::Value JsCloseMany(const Napi::CallbackInfo& info) {
  auto fds = info[0].As<Napi::Int32Array>();
  int64_t count = std::max<int64_t>(0, info[1].As<Napi::Number>().Int64Value());
  CloseManyUnlessOwned(fds.Data(), std::min(static_cast<size_t>(count), fds.ElementLength()));
  return Napi::Number::New(info.Env(), 0);
}

// inspectSocket(fd, out: Int32Array(4)) -> 0 | -errno; out = [domain, type, listening, connected]
Napi::Value JsInspectSocket(const Napi::CallbackInfo& info) {
  auto out = info[1].As<Napi::Int32Array>();
  SocketFacts facts;
  int err = InspectSocket(ArgInt(info, 0), &facts);
  if (err == 0 && out.ElementLength() >= 4) {
    out[0] = facts.domain;
    out[1] = facts.type;
    out[2] = facts.listening ? 1 : 0;
    out[3] = facts.connected ? 1 : 0;
  }
  return Napi::Number::New(info.Env(), err);
}

// describeFd(fd, out: Int32Array(FD_FACTS_LENGTH)) -> 0 | -errno; out = [file type, status
// flags, domain, type, protocol, listening (0/1)], or on failure out[0] = the DescribeCall
// that failed.
constexpr size_t kFdFactsLength = 6;

Napi::Value JsDescribeFd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[1].IsTypedArray() ||
      info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
      info[1].As<Napi::Int32Array>().ElementLength() < kFdFactsLength)
    return Napi::Number::New(env, -EINVAL);
  int32_t* out = info[1].As<Napi::Int32Array>().Data();
  FdFacts facts;
  DescribeCall failed = DescribeCall::kFstat;
  int err = DescribeFd(ArgInt(info, 0), &facts, &failed);
  if (err != 0) {
    out[0] = static_cast<int32_t>(failed);
    return Napi::Number::New(env, err);
  }
  out[0] = static_cast<int32_t>(facts.file_type);
  out[1] = facts.status_flags;
  out[2] = facts.domain;
  out[3] = facts.type;
  out[4] = facts.protocol;
  out[5] = facts.listening ? 1 : 0;
  return Napi::Number::New(env, 0);
}

// A socket name from JS: its bytes, and whether it is abstract.
struct SocketName {
  const char* bytes;
  size_t len;
};

SocketName ArgName(const Napi::CallbackInfo& info, size_t i) {
  auto name = info[i].As<Napi::Uint8Array>();
  return SocketName{reinterpret_cast<const char*>(name.Data()), name.ElementLength()};
}

// unixSocket(type) -> fd | -errno
Napi::Value JsUnixSocket(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), UnixSocket(ArgInt(info, 0)));
}

// bindUnix(sock, name: Uint8Array, abstract, mode) -> 0 | -errno
Napi::Value JsBindUnix(const Napi::CallbackInfo& info) {
  SocketName name = ArgName(info, 1);
  int err = BindUnix(ArgInt(info, 0), name.bytes, name.len, info[2].ToBoolean(),
                     static_cast<unsigned>(ArgInt(info, 3)));
  return Napi::Number::New(info.Env(), err);
}

// listen(sock, backlog) -> 0 | -errno
Napi::Value JsListen(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), Listen(ArgInt(info, 0), ArgInt(info, 1)));
}

// connectUnix(sock, name: Uint8Array, abstract) -> 0 | -errno (-EAGAIN: try again later)
Napi::Value JsConnectUnix(const Napi::CallbackInfo& info) {
  SocketName name = ArgName(info, 1);
  int err = ConnectUnix(ArgInt(info, 0), name.bytes, name.len, info[2].ToBoolean());
  return Napi::Number::New(info.Env(), err);
}

// A file name from JS (a Uint8Array), NUL-terminated for the *at() calls; false if it holds
// a NUL of its own, which would cut it short.
bool ArgFileName(const Napi::CallbackInfo& info, size_t i, std::string* out) {
  SocketName name = ArgName(info, i);
  if (std::memchr(name.bytes, '\0', name.len) != nullptr) return false;
  out->assign(name.bytes, name.len);
  return true;
}

// openDirectoryAt(dir, name: Uint8Array, follow) -> fd | -errno
Napi::Value JsOpenDirectoryAt(const Napi::CallbackInfo& info) {
  std::string name;
  if (!ArgFileName(info, 1, &name)) return Napi::Number::New(info.Env(), -EINVAL);
  int fd = OpenDirectoryAt(ArgInt(info, 0), name.c_str(), info[2].ToBoolean());
  return Napi::Number::New(info.Env(), fd);
}

// makeDirectoryAt(dir, name: Uint8Array, mode) -> 0 | -errno
Napi::Value JsMakeDirectoryAt(const Napi::CallbackInfo& info) {
  std::string name;
  if (!ArgFileName(info, 1, &name)) return Napi::Number::New(info.Env(), -EINVAL);
  int err = MakeDirectoryAt(ArgInt(info, 0), name.c_str(), static_cast<unsigned>(ArgInt(info, 2)));
  return Napi::Number::New(info.Env(), err);
}

// openLockFileAt(dir, name: Uint8Array) -> fd | -errno
Napi::Value JsOpenLockFileAt(const Napi::CallbackInfo& info) {
  std::string name;
  if (!ArgFileName(info, 1, &name)) return Napi::Number::New(info.Env(), -EINVAL);
  return Napi::Number::New(info.Env(), OpenLockFileAt(ArgInt(info, 0), name.c_str()));
}

// tryLockExclusive(fd) -> 0 | -EWOULDBLOCK | -errno
Napi::Value JsTryLockExclusive(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), TryLockExclusive(ArgInt(info, 0)));
}

// changeModeAt(dir, name: Uint8Array, mode) -> 0 | -errno
Napi::Value JsChangeModeAt(const Napi::CallbackInfo& info) {
  std::string name;
  if (!ArgFileName(info, 1, &name)) return Napi::Number::New(info.Env(), -EINVAL);
  int err = ChangeModeAt(ArgInt(info, 0), name.c_str(), static_cast<unsigned>(ArgInt(info, 2)));
  return Napi::Number::New(info.Env(), err);
}

// statAt(dir, name: Uint8Array, out: BigUint64Array(4)) -> 0 | -errno; out = [dev, ino, mode, uid]
Napi::Value JsStatAt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name;
  if (!ArgFileName(info, 1, &name)) return Napi::Number::New(env, -EINVAL);
  if (!info[2].IsTypedArray() ||
      info[2].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array ||
      info[2].As<Napi::BigUint64Array>().ElementLength() < 4)
    return Napi::Number::New(env, -EINVAL);
  FileStatus file;
  int err = StatAt(ArgInt(info, 0), name.c_str(), &file);
  if (err == 0) {
    uint64_t* out = info[2].As<Napi::BigUint64Array>().Data();
    out[0] = file.dev;
    out[1] = file.ino;
    out[2] = file.mode;
    out[3] = file.uid;
  }
  return Napi::Number::New(env, err);
}

// linkAt(fromDir, from: Uint8Array, toDir, to: Uint8Array) -> 0 | -errno (-EEXIST: never replaced)
Napi::Value JsLinkAt(const Napi::CallbackInfo& info) {
  std::string from;
  std::string to;
  if (!ArgFileName(info, 1, &from) || !ArgFileName(info, 3, &to))
    return Napi::Number::New(info.Env(), -EINVAL);
  int err = LinkAt(ArgInt(info, 0), from.c_str(), ArgInt(info, 2), to.c_str());
  return Napi::Number::New(info.Env(), err);
}

// unlinkAt(dir, name: Uint8Array, directory) -> 0 | -errno
Napi::Value JsUnlinkAt(const Napi::CallbackInfo& info) {
  std::string name;
  if (!ArgFileName(info, 1, &name)) return Napi::Number::New(info.Env(), -EINVAL);
  int err = UnlinkAt(ArgInt(info, 0), name.c_str(), info[2].ToBoolean());
  return Napi::Number::New(info.Env(), err);
}

// inetSocket(family: 4 | 6) -> fd | -errno: a TCP socket, close-on-exec and non-blocking
Napi::Value JsInetSocket(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), InetSocket(ArgInt(info, 0)));
}

// setSocketOption(sock, level, name, value) -> 0 | -errno
Napi::Value JsSetSocketOption(const Napi::CallbackInfo& info) {
  int err = SetSocketOption(ArgInt(info, 0), ArgInt(info, 1), ArgInt(info, 2), ArgInt(info, 3));
  return Napi::Number::New(info.Env(), err);
}

// schedulingPolicy() -> SCHED_* of the calling thread | -errno
Napi::Value JsSchedulingPolicy(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), ThreadSchedulingPolicy());
}

// setSchedulingPolicy(policy) -> 0 | -errno: SCHED_OTHER or SCHED_BATCH for the calling thread
Napi::Value JsSetSchedulingPolicy(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), SetThreadSchedulingPolicy(ArgInt(info, 0)));
}

// getSocketOption(sock, level, name) -> value | -errno
Napi::Value JsGetSocketOption(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(),
                           GetSocketOption(ArgInt(info, 0), ArgInt(info, 1), ArgInt(info, 2)));
}

// bindInet(sock, family: 4 | 6, address: Uint8Array (text), port) -> 0 | -errno
Napi::Value JsBindInet(const Napi::CallbackInfo& info) {
  SocketName text = ArgName(info, 2);
  int err = BindInet(ArgInt(info, 0), ArgInt(info, 1), text.bytes, text.len, ArgInt(info, 3));
  return Napi::Number::New(info.Env(), err);
}

// localAddress(sock, out: Uint8Array(INET_ADDRESS_BYTES)) -> 0 | -errno; see inet_socket.h
Napi::Value JsLocalAddress(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[1].IsTypedArray() ||
      info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
      info[1].As<Napi::Uint8Array>().ElementLength() < kInetAddressBytes)
    return Napi::Number::New(env, -EINVAL);
  return Napi::Number::New(
      env, LocalInetAddress(ArgInt(info, 0), info[1].As<Napi::Uint8Array>().Data()));
}

// peerCredentials(sock, out: Int32Array(3)) -> 0 | -errno; out = [pid, uid, gid]
Napi::Value JsPeerCredentials(const Napi::CallbackInfo& info) {
  auto out = info[1].As<Napi::Int32Array>();
  PeerCredentials cred;
  int err = GetPeerCredentials(ArgInt(info, 0), &cred);
  if (err == 0 && out.ElementLength() >= 3) {
    out[0] = cred.pid;
    out[1] = static_cast<int32_t>(cred.uid);  // JS reads these back as unsigned
    out[2] = static_cast<int32_t>(cred.gid);
  }
  return Napi::Number::New(info.Env(), err);
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new ThreadBuffers());  // deleted with the environment
  exports["socketpair"] = Napi::Function::New<JsSocketPair>(env, "socketpair");
  exports["socketType"] = Napi::Function::New<JsSocketType>(env, "socketType");
  exports["pipe"] = Napi::Function::New<JsPipe>(env, "pipe");
  exports["read"] = Napi::Function::New<JsRead>(env, "read");
  exports["inspectSocket"] = Napi::Function::New<JsInspectSocket>(env, "inspectSocket");
  exports["describeFd"] = Napi::Function::New<JsDescribeFd>(env, "describeFd");
  exports["setNonBlocking"] = Napi::Function::New<JsSetNonBlocking>(env, "setNonBlocking");
  exports["setCloseOnExec"] = Napi::Function::New<JsSetCloseOnExec>(env, "setCloseOnExec");
  exports["dupCloseOnExec"] = Napi::Function::New<JsDuplicateFd>(env, "dupCloseOnExec");
  exports["shutdownWrite"] = Napi::Function::New<JsShutdownWrite>(env, "shutdownWrite");
  exports["sendmsg"] = Napi::Function::New<JsSendMessage>(env, "sendmsg");
  exports["setSendScratch"] = Napi::Function::New<JsSetSendScratch>(env, "setSendScratch");
  exports["sendFrame"] = Napi::Function::New<JsSendFrame>(env, "sendFrame");
  exports["sendFd"] = Napi::Function::New<JsSendFd>(env, "sendFd");
  exports["recvFd"] = Napi::Function::New<JsReceiveFd>(env, "recvFd");
  exports["setReceiveReport"] = Napi::Function::New<JsSetReceiveReport>(env, "setReceiveReport");
  exports["sendmmsg"] = Napi::Function::New<JsSendMessages>(env, "sendmmsg");
  exports["close"] = Napi::Function::New<JsClose>(env, "close");
  exports["closeMany"] = Napi::Function::New<JsCloseMany>(env, "closeMany");
  exports["isOwnedFd"] = Napi::Function::New<JsIsOwnedFd>(env, "isOwnedFd");
  exports["unixSocket"] = Napi::Function::New<JsUnixSocket>(env, "unixSocket");
  exports["bindUnix"] = Napi::Function::New<JsBindUnix>(env, "bindUnix");
  exports["listen"] = Napi::Function::New<JsListen>(env, "listen");
  exports["connectUnix"] = Napi::Function::New<JsConnectUnix>(env, "connectUnix");
  exports["peerCredentials"] = Napi::Function::New<JsPeerCredentials>(env, "peerCredentials");
  exports["inetSocket"] = Napi::Function::New<JsInetSocket>(env, "inetSocket");
  exports["setSocketOption"] = Napi::Function::New<JsSetSocketOption>(env, "setSocketOption");
  exports["getSocketOption"] = Napi::Function::New<JsGetSocketOption>(env, "getSocketOption");
  exports["schedulingPolicy"] = Napi::Function::New<JsSchedulingPolicy>(env, "schedulingPolicy");
  exports["setSchedulingPolicy"] =
      Napi::Function::New<JsSetSchedulingPolicy>(env, "setSchedulingPolicy");
  exports["bindInet"] = Napi::Function::New<JsBindInet>(env, "bindInet");
  exports["localAddress"] = Napi::Function::New<JsLocalAddress>(env, "localAddress");
  exports["openDirectoryAt"] = Napi::Function::New<JsOpenDirectoryAt>(env, "openDirectoryAt");
  exports["makeDirectoryAt"] = Napi::Function::New<JsMakeDirectoryAt>(env, "makeDirectoryAt");
  exports["openLockFileAt"] = Napi::Function::New<JsOpenLockFileAt>(env, "openLockFileAt");
  exports["tryLockExclusive"] = Napi::Function::New<JsTryLockExclusive>(env, "tryLockExclusive");
  exports["changeModeAt"] = Napi::Function::New<JsChangeModeAt>(env, "changeModeAt");
  exports["statAt"] = Napi::Function::New<JsStatAt>(env, "statAt");
  exports["linkAt"] = Napi::Function::New<JsLinkAt>(env, "linkAt");
  exports["unlinkAt"] = Napi::Function::New<JsUnlinkAt>(env, "unlinkAt");
  exports["PollWrap"] = PollWrap::Define(env);

  Napi::Object constants = Napi::Object::New(env);
  constants["SOCK_STREAM"] = Napi::Number::New(env, SOCK_STREAM);
  constants["SOCK_DGRAM"] = Napi::Number::New(env, SOCK_DGRAM);
  constants["SOCK_SEQPACKET"] = Napi::Number::New(env, SOCK_SEQPACKET);
  constants["MSG_DONTWAIT"] = Napi::Number::New(env, DontWaitFlag());
  constants["SCHED_OTHER"] = Napi::Number::New(env, SCHED_OTHER);
#if defined(SCHED_BATCH)
  constants["SCHED_BATCH"] = Napi::Number::New(env, SCHED_BATCH);
#endif
  constants["MSG_CTRUNC"] = Napi::Number::New(env, MSG_CTRUNC);
  constants["MSG_TRUNC"] = Napi::Number::New(env, MSG_TRUNC);
  constants["MAX_FDS_PER_MESSAGE"] = Napi::Number::New(env, kMaxFdsPerMessage);
  constants["MAX_MESSAGES_PER_BATCH"] = Napi::Number::New(env, kMaxMessagesPerBatch);
  constants["NOT_BARE_FD"] = Napi::Number::New(env, kNotBareFd);
  constants["FD_OWNED_BY_CHANNEL"] = Napi::Number::New(env, kFdOwnedByChannel);
  constants["AF_UNIX"] = Napi::Number::New(env, AF_UNIX);
  // AF_INET6 differs between systems (10 on Linux, 30 on macOS), so lib/ takes both from here.
  constants["AF_INET"] = Napi::Number::New(env, AF_INET);
  constants["AF_INET6"] = Napi::Number::New(env, AF_INET6);
  constants["FD_FACTS_LENGTH"] = Napi::Number::New(env, static_cast<double>(kFdFactsLength));
  // fs.constants has neither: the access-mode mask, and Linux's path-only open (0 elsewhere).
  constants["O_ACCMODE"] = Napi::Number::New(env, O_ACCMODE);
#if defined(O_PATH)
  constants["O_PATH"] = Napi::Number::New(env, O_PATH);
#else
  constants["O_PATH"] = Napi::Number::New(env, 0);
#endif
  // The options a TCP listener sets (its connections inherit TCP_NODELAY from it).
  constants["SOL_SOCKET"] = Napi::Number::New(env, SOL_SOCKET);
  constants["SO_REUSEADDR"] = Napi::Number::New(env, SO_REUSEADDR);
  constants["IPPROTO_IPV6"] = Napi::Number::New(env, IPPROTO_IPV6);
  constants["IPV6_V6ONLY"] = Napi::Number::New(env, IPV6_V6ONLY);
  constants["IPPROTO_TCP"] = Napi::Number::New(env, IPPROTO_TCP);
  constants["TCP_NODELAY"] = Napi::Number::New(env, TCP_NODELAY);
  constants["INET_ADDRESS_BYTES"] = Napi::Number::New(env, kInetAddressBytes);
  // The memory JS and the addon share: see poll_wrap.h and lib/binding.ts.
  constants["LEDGER_HEAD"] = Napi::Number::New(env, kLedgerHead);
  constants["LEDGER_TAIL"] = Napi::Number::New(env, kLedgerTail);
  constants["LEDGER_READ_CAP"] = Napi::Number::New(env, kLedgerReadCap);
  constants["LEDGER_FIRST_FD"] = Napi::Number::New(env, kLedgerFirstFd);
  constants["RECORD_STRIDE"] = Napi::Number::New(env, kRecordStride);
  constants["RECORD_BYTES"] = Napi::Number::New(env, kRecordBytes);
  constants["RECORD_FDS"] = Napi::Number::New(env, kRecordFds);
  constants["RECORD_FLAGS"] = Napi::Number::New(env, kRecordFlags);
  constants["BUDGET_MAX_FDS"] = Napi::Number::New(env, kBudgetMaxFds);
  constants["BUDGET_HELD_FDS"] = Napi::Number::New(env, kBudgetHeldFds);
  constants["BUDGET_MAX_BYTES"] = Napi::Number::New(env, kBudgetMaxBytes);
  constants["BUDGET_HELD_BYTES"] = Napi::Number::New(env, kBudgetHeldBytes);
  constants["BUDGET_LENGTH"] = Napi::Number::New(env, kBudgetLength);
  constants["BUFFERED_ITEM_OVERHEAD_BYTES"] = Napi::Number::New(env, kBufferedItemOverheadBytes);
  constants["MESSAGE_HEADER_BYTES"] = Napi::Number::New(env, kMessageHeaderBytes);
  constants["RECEIVE_STREAM"] = Napi::Number::New(env, static_cast<int>(ReceiveMode::kStream));
  constants["RECEIVE_PACKETS"] = Napi::Number::New(env, static_cast<int>(ReceiveMode::kPackets));
  constants["RECEIVE_ACCEPT"] = Napi::Number::New(env, static_cast<int>(ReceiveMode::kAccept));
  // Not in Node's os.constants.errno: the kernel's cap on a user's fds in flight.
  constants["ETOOMANYREFS"] = Napi::Number::New(env, ETOOMANYREFS);
  constants["MAX_SOCKET_PATH_BYTES"] =
      Napi::Number::New(env, static_cast<double>(MaxSocketPathBytes()));
  constants["HAVE_ABSTRACT_NAMES"] = Napi::Boolean::New(env, HaveAbstractNames());
  constants["AT_FDCWD"] = Napi::Number::New(env, AT_FDCWD);
  exports["constants"] = constants;
  return exports;
}

}  // namespace
}  // namespace fdpass

// The macro pastes its argument into a name: it needs an unqualified function.
static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  return fdpass::Init(env, exports);
}

NODE_API_MODULE(fdpass, InitAddon)
