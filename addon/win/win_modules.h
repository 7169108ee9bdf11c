// The Windows addon's parts: each source file exports its functions through one Init
// function, which fdpass_win.cc calls in turn. A new part adds a file and one line there.
#pragma once
#include <napi.h>

namespace fdpass::win {

void InitProcessInfo(Napi::Env env, Napi::Object exports);
void InitLoopbackSocket(Napi::Env env, Napi::Object exports);
void InitHandlePassing(Napi::Env env, Napi::Object exports);
// The Windows Channel's transport, as exports.winChannel (channel_transport.cc).
void InitChannelTransport(Napi::Env env, Napi::Object exports);

}  // namespace fdpass::win
