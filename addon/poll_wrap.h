// PollWrap: one uv_poll_t over one socket fd, and the only way fdpass calls into JS.
#pragma once

#include <napi.h>
#include <uv.h>

namespace fdpass {

struct PollHandle;

class PollWrap : public Napi::ObjectWrap<PollWrap> {
 public:
  static Napi::Function Define(Napi::Env env);

  explicit PollWrap(const Napi::CallbackInfo& info);
  ~PollWrap() override;

  // Called by the native handle; see poll_wrap.cc for the lifecycle.
  void OnPoll(int status, int events);
  void OnClosed();
  void Detach();

 private:
  Napi::Value Open(const Napi::CallbackInfo& info);
  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value RefHandle(const Napi::CallbackInfo& info);
  Napi::Value UnrefHandle(const Napi::CallbackInfo& info);
  Napi::Value HasRefHandle(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value SetLedger(const Napi::CallbackInfo& info);

  void TakeLedger();
  int DrainReadable();
  int AcceptWaiting(int32_t* fds, int32_t* records, size_t count);
  void CallIntoJs(Napi::Function callback, const std::initializer_list<napi_value>& args);

  PollHandle* handle_ = nullptr;
  bool reading_ = false;
  int events_ = 0;  // what start() last asked libuv to watch
  Napi::FunctionReference on_event_;
  Napi::FunctionReference on_close_;
  Napi::ObjectReference data_;     // Uint8Array: slot_bytes_ of received bytes per message
  Napi::ObjectReference fds_;      // Int32Array: kMaxFdsPerMessage received fds per message
  Napi::ObjectReference records_;  // Int32Array: [bytes or -errno, nfds, msg_flags] per message
  Napi::ObjectReference ledger_;   // Int32Array: [head, tail, fds...], see SetLedger
  int32_t* ledger_slots_ = nullptr;  // ledger_'s memory, alive while ledger_ holds it
  size_t ledger_length_ = 0;
  size_t slot_bytes_ = 1;
  bool accepts_ = false;  // a listening socket: a wake-up accepts connections, not messages
  size_t batch_limit_ = 0;  // most records per wake-up; 0: as many as the buffers hold
  Napi::AsyncContext async_context_;
  bool strongly_held_ = false;
};

}  // namespace fdpass
