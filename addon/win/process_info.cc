// Facts about this process that tests and lib/ need: how many handles it holds (the Windows
// counterpart of counting /proc/<pid>/fd), and whether it runs under Wine.
#include "win_io.h"
#include "win_modules.h"

namespace fdpass::win {
namespace {

// processHandleCount() -> handles this process holds | -error. Wine 8's GetProcessHandleCount
// succeeds with 0 whatever is open: where it says 0, count the handle values below 2^16 that
// GetHandleInformation accepts (a handle count all the same, on Windows too).
Napi::Value JsProcessHandleCount(const Napi::CallbackInfo& info) {
  DWORD count = 0;
  if (!GetProcessHandleCount(GetCurrentProcess(), &count))
    return Napi::Number::New(info.Env(), UvError(GetLastError()));
  if (count == 0) {
    DWORD flags;
    for (uintptr_t value = 4; value < (1u << 16); value += 4)
      if (GetHandleInformation(reinterpret_cast<HANDLE>(value), &flags)) count++;
  }
  return Napi::Number::New(info.Env(), count);
}

// wineVersion() -> Wine's version, or null on Windows. ntdll exports wine_get_version only
// under Wine; what Wine cannot show is decided from this at run time.
Napi::Value JsWineVersion(const Napi::CallbackInfo& info) {
  using GetVersion = const char*(__cdecl*)();
  HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");
  auto get_version = ntdll ? reinterpret_cast<GetVersion>(
                                 reinterpret_cast<void*>(GetProcAddress(ntdll, "wine_get_version")))
                           : nullptr;
  if (!get_version) return info.Env().Null();
  return Napi::String::New(info.Env(), get_version());
}

}  // namespace

void InitProcessInfo(Napi::Env env, Napi::Object exports) {
  exports["processHandleCount"] = Napi::Function::New(env, JsProcessHandleCount);
  exports["wineVersion"] = Napi::Function::New(env, JsWineVersion);
}

}  // namespace fdpass::win
