// The Windows Channel's transport (docs/windows-channel-protocol.md): loopback TCP sockets,
// the peer's verified process id, handles pushed into the peer and adopted as Node fds, and
// one poll handle per channel socket. Registered on the Windows module's exports as
// `winChannel` by InitWindowsChannel.
#pragma once

#include <napi.h>

namespace fdpass {

void InitWindowsChannel(Napi::Env env, Napi::Object exports);

}  // namespace fdpass
