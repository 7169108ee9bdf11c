// What the Windows parts share: node.exe's libuv calls that map a HANDLE to one of node.exe's
// own C runtime fds and back (node.exe links its CRT statically, so the addon's _open_osfhandle
// would make an fd that Node's fs does not know), and errors as libuv's negative codes, which
// lib/ names with util.getSystemErrorMap() as it does on POSIX.
#pragma once
#include <napi.h>
#include <windows.h>
#include <winsock2.h>

extern "C" {
int uv_open_osfhandle(HANDLE os_fd);
HANDLE uv_get_osfhandle(int fd);
int uv_translate_sys_error(int sys_errno);
}

namespace fdpass::win {

// libuv's code for a Windows error (GetLastError() or WSAGetLastError()): negative.
inline int UvError(DWORD sys_error) { return uv_translate_sys_error(static_cast<int>(sys_error)); }

// The HANDLE behind a Node fd, or INVALID_HANDLE_VALUE (EBADF) if fd is not open.
inline HANDLE HandleOfFd(int fd) { return fd < 0 ? INVALID_HANDLE_VALUE : uv_get_osfhandle(fd); }

inline int32_t ArgInt(const Napi::CallbackInfo& info, size_t i) {
  return info[i].As<Napi::Number>().Int32Value();
}

// The bytes [offset, offset + length) of a Uint8Array argument, or nullptr when that range is
// not inside it (a negative or oversized offset or length from a careless caller).
inline char* ArgRange(const Napi::CallbackInfo& info, size_t buffer, int64_t offset,
                      int64_t length) {
  auto bytes = info[buffer].As<Napi::Uint8Array>();
  if (offset < 0 || length < 0 || offset + length > static_cast<int64_t>(bytes.ByteLength()))
    return nullptr;
  return reinterpret_cast<char*>(bytes.Data()) + offset;
}

}  // namespace fdpass::win
