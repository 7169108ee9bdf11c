// Facts about this process that tests and lib/ need: how many handles it holds (the Windows
// counterpart of counting /proc/<pid>/fd), and whether it runs under Wine.
#include <string>

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

// openHandles() -> [[value, type name], ...]: each handle value below 2^16 that is open in
// this process, with its object's type ('File', 'Process', 'Event'...; '' if the system does
// not say). For tests: what a handle count that went up has left open.
Napi::Value JsOpenHandles(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // NtQueryObject(ObjectTypeInformation = 2) answers a PUBLIC_OBJECT_TYPE_INFORMATION: a
  // UNICODE_STRING (length in bytes, then the buffer) at its start.
  using QueryObject = LONG(NTAPI*)(HANDLE, int, void*, ULONG, ULONG*);
  HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");
  auto query = ntdll ? reinterpret_cast<QueryObject>(
                           reinterpret_cast<void*>(GetProcAddress(ntdll, "NtQueryObject")))
                     : nullptr;
  struct TypeName {
    USHORT length;
    USHORT maximum_length;
    PWSTR buffer;
  };
  Napi::Array list = Napi::Array::New(env);
  alignas(8) unsigned char room[1024];
  DWORD flags;
  for (uintptr_t value = 4; value < (1u << 16); value += 4) {
    HANDLE h = reinterpret_cast<HANDLE>(value);
    if (!GetHandleInformation(h, &flags)) continue;
    std::u16string type;
    ULONG returned = 0;
    if (query != nullptr && query(h, 2, room, sizeof room, &returned) >= 0) {
      const auto* name = reinterpret_cast<const TypeName*>(room);
      type.assign(reinterpret_cast<const char16_t*>(name->buffer), name->length / 2);
    }
    Napi::Array entry = Napi::Array::New(env, 2);
    entry.Set(0u, Napi::Number::New(env, static_cast<double>(value)));
    entry.Set(1u, Napi::String::New(env, type));
    list.Set(list.Length(), entry);
  }
  return list;
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
  exports["openHandles"] = Napi::Function::New(env, JsOpenHandles);
}

}  // namespace fdpass::win
