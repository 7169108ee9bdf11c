// The Windows addon's entry: Winsock once per process, then each part's functions.
// Context-aware like the POSIX addon: no per-thread globals.
#include "win_io.h"
#include "win_modules.h"

namespace fdpass::win {
namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // Reference-counted by Winsock: one per environment (a worker thread loads its own copy of
  // the exports), released never, as node.exe's own libuv does.
  WSADATA wsa;
  WSAStartup(MAKEWORD(2, 2), &wsa);
  InitProcessInfo(env, exports);
  InitLoopbackSocket(env, exports);
  InitHandlePassing(env, exports);
  InitChannelTransport(env, exports);
  return exports;
}

}  // namespace
}  // namespace fdpass::win

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  return fdpass::win::Init(env, exports);
}

NODE_API_MODULE(fdpass, InitAddon)
