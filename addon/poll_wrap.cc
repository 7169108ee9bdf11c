// PollWrap: one uv_poll_t over one socket fd, and the only way fdpass calls into JS.
//
// Lifecycle: idle -> active (open) -> closing (close) -> closed (uv close callback).
// The native state (PollHandle) lives from open until the uv close callback and is
// freed only there. From open until then the JS object is held strongly, so it
// cannot be collected while libuv may still call it. Either side can go first at
// environment teardown: whoever goes first detaches the other.
#include "poll_wrap.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "posix_io.h"
#include "unix_socket.h"

namespace fdpass {

enum class State { kActive, kClosing };

struct PollHandle {
  uv_poll_t poll;
  int fd;
  bool owns_fd;
  State state;
  PollWrap* wrap;  // null once detached: then nothing calls into JS
  napi_env env;
  napi_async_cleanup_hook_handle cleanup_hook;
  // Received fds that JS held for nobody (a channel's inbox) when closing began, taken from
  // the ledger. Closed with the handle, so they are not orphaned when a worker is terminated
  // and no JS runs to close them.
  std::vector<int> held_fds;
};

namespace {

void OnUvPoll(uv_poll_t* poll, int status, int events) {
  auto* handle = reinterpret_cast<PollHandle*>(poll->data);
  if (handle->state != State::kActive || handle->wrap == nullptr) return;
  handle->wrap->OnPoll(status, events);
}

void OnUvClose(uv_handle_t* uv_handle) {
  auto* handle = reinterpret_cast<PollHandle*>(uv_handle->data);
  // The poll is gone from the loop: only now may the fd be closed.
  if (handle->owns_fd) close(handle->fd);
  CloseFds(handle->held_fds.data(), handle->held_fds.size());
  if (handle->cleanup_hook != nullptr) napi_remove_async_cleanup_hook(handle->cleanup_hook);
  if (handle->wrap != nullptr) handle->wrap->OnClosed();
  delete handle;  // free only in the close callback
}

void BeginClose(PollHandle* handle) {
  if (handle->state != State::kActive) return;
  handle->state = State::kClosing;
  uv_poll_stop(&handle->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&handle->poll), OnUvClose);
}

// The environment (main thread or a worker) is going away: close without JS.
void OnEnvironmentCleanup(napi_async_cleanup_hook_handle, void* arg) {
  auto* handle = static_cast<PollHandle*>(arg);
  if (handle->wrap != nullptr) handle->wrap->Detach();
  BeginClose(handle);  // no-op if already closing; OnUvClose removes this hook
}

}  // namespace

Napi::Function PollWrap::Define(Napi::Env env) {
  return DefineClass(env, "PollWrap",
                     {
                         InstanceMethod<&PollWrap::Open>("open"),
                         InstanceMethod<&PollWrap::Start>("start"),
                         InstanceMethod<&PollWrap::RefHandle>("ref"),
                         InstanceMethod<&PollWrap::UnrefHandle>("unref"),
                         InstanceMethod<&PollWrap::HasRefHandle>("hasRef"),
                         InstanceMethod<&PollWrap::Close>("close"),
                         InstanceMethod<&PollWrap::SetLedger>("setLedger"),
                     });
}

// new PollWrap(onEvent, data: Uint8Array, fds: Int32Array, records: Int32Array, slotBytes,
//              accepts?: boolean)
PollWrap::PollWrap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<PollWrap>(info), async_context_(info.Env(), "fdpass:PollWrap") {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[0].IsFunction() || !info[1].IsTypedArray() ||
      !info[2].IsTypedArray() || !info[3].IsTypedArray() || !info[4].IsNumber()) {
    Napi::TypeError::New(env, "PollWrap(onEvent, data, fds, records, slotBytes)")
        .ThrowAsJavaScriptException();
    return;
  }
  if (info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
      info[2].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array ||
      info[3].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    Napi::TypeError::New(env, "PollWrap buffers: Uint8Array, Int32Array, Int32Array")
        .ThrowAsJavaScriptException();
    return;
  }
  on_event_ = Napi::Persistent(info[0].As<Napi::Function>());
  data_ = Napi::Persistent(info[1].As<Napi::Object>());
  fds_ = Napi::Persistent(info[2].As<Napi::Object>());
  records_ = Napi::Persistent(info[3].As<Napi::Object>());
  int64_t slot_bytes = info[4].As<Napi::Number>().Int64Value();
  slot_bytes_ = slot_bytes < 1 ? 1 : static_cast<size_t>(slot_bytes);
  accepts_ = info.Length() > 5 && info[5].ToBoolean();
}

PollWrap::~PollWrap() {
  // Normally the handle closed long ago. At environment teardown the JS object
  // may be finalized first: detach, and let the close callback free the handle.
  if (handle_ != nullptr) {
    PollHandle* handle = handle_;
    Detach();
    BeginClose(handle);
  }
}

void PollWrap::Detach() {
  TakeLedger();  // JS may never run again: what its ledger holds is ours to close
  if (handle_ != nullptr) handle_->wrap = nullptr;
  handle_ = nullptr;
}

// open(fd, ownsFd) -> 0 | -errno
Napi::Value PollWrap::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (handle_ != nullptr) return Napi::Number::New(env, -EALREADY);
  int fd = info[0].As<Napi::Number>().Int32Value();
  bool owns_fd = info[1].ToBoolean();

  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return Napi::Number::New(env, -EINVAL);

  auto* handle = new PollHandle();
  handle->fd = fd;
  handle->owns_fd = owns_fd;
  handle->state = State::kActive;
  handle->env = env;
  int err = uv_poll_init(loop, &handle->poll, fd);  // also makes fd non-blocking
  if (err != 0) {
    delete handle;  // uv_poll_init failed before registering the handle
    return Napi::Number::New(env, err);
  }
  handle->poll.data = handle;
  if (napi_add_async_cleanup_hook(env, OnEnvironmentCleanup, handle, &handle->cleanup_hook) !=
      napi_ok) {
    handle->owns_fd = false;  // the caller still owns fd when open fails
    handle->cleanup_hook = nullptr;
    BeginClose(handle);
    return Napi::Number::New(env, -ENOMEM);
  }
  handle->wrap = this;
  handle_ = handle;
  // Held strongly until the close callback: libuv may call us at any time.
  Napi::ObjectWrap<PollWrap>::Ref();
  strongly_held_ = true;
  return Napi::Number::New(env, 0);
}

// start(readable, writable, batchLimit?) -> 0 | -errno; both false stops polling.
// batchLimit bounds the records one wake-up takes (0 or absent: as many as the buffers hold).
Napi::Value PollWrap::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (handle_ == nullptr || handle_->state != State::kActive)
    return Napi::Number::New(env, -EBADF);
  reading_ = info[0].ToBoolean();
  int64_t limit = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().Int64Value() : 0;
  batch_limit_ = limit > 0 ? static_cast<size_t>(limit) : 0;
  events_ = (reading_ ? UV_READABLE : 0) | (info[1].ToBoolean() ? UV_WRITABLE : 0);
  int err = events_ == 0 ? uv_poll_stop(&handle_->poll)
                         : uv_poll_start(&handle_->poll, events_, OnUvPoll);
  return Napi::Number::New(env, err);
}

Napi::Value PollWrap::RefHandle(const Napi::CallbackInfo& info) {
  if (handle_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(&handle_->poll));
  return info.This();
}

Napi::Value PollWrap::UnrefHandle(const Napi::CallbackInfo& info) {
  if (handle_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(&handle_->poll));
  return info.This();
}

Napi::Value PollWrap::HasRefHandle(const Napi::CallbackInfo& info) {
  bool has = handle_ != nullptr && uv_has_ref(reinterpret_cast<uv_handle_t*>(&handle_->poll));
  return Napi::Boolean::New(info.Env(), has);
}

// close(onClose) -> true if onClose will be called; false if there was nothing to close.
Napi::Value PollWrap::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (handle_ == nullptr || handle_->state != State::kActive) return Napi::Boolean::New(env, false);
  if (info[0].IsFunction()) on_close_ = Napi::Persistent(info[0].As<Napi::Function>());
  TakeLedger();
  BeginClose(handle_);
  return Napi::Boolean::New(env, true);
}

// setLedger(slots: Int32Array): where JS records the fds its inbox holds for nobody, as
// [head, tail, fds...] with the fds at slots[2 + head .. 2 + tail). JS writes it without a
// call; it is read once, when the handle starts closing (JS call or teardown).
Napi::Value PollWrap::SetLedger(const Napi::CallbackInfo& info) {
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    Napi::TypeError::New(info.Env(), "setLedger(slots: Int32Array)").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto slots = info[0].As<Napi::Int32Array>();
  ledger_ = Napi::Persistent(slots.As<Napi::Object>());
  ledger_slots_ = slots.Data();
  ledger_length_ = slots.ElementLength();
  return info.Env().Undefined();
}

// The handle is closing: the ledger's fds become the handle's, to close with it.
void PollWrap::TakeLedger() {
  if (ledger_slots_ == nullptr || ledger_length_ < 2 || handle_ == nullptr) return;
  size_t capacity = ledger_length_ - 2;
  size_t head = std::min(static_cast<size_t>(std::max(ledger_slots_[0], 0)), capacity);
  size_t tail = std::min(static_cast<size_t>(std::max(ledger_slots_[1], 0)), capacity);
  for (size_t i = head; i < tail; i++) handle_->held_fds.push_back(ledger_slots_[2 + i]);
  ledger_slots_[0] = 0;  // taken once: nothing is closed twice
  ledger_slots_[1] = 0;
}

// One batch per wake-up, bounded as libuv bounds its reads: fair to other handles on the
// loop. Message i lands at data[i * slot_bytes_] and fds[i * kMaxFdsPerMessage].
int PollWrap::DrainReadable() {
  auto data = data_.Value().As<Napi::Uint8Array>();
  auto fds = fds_.Value().As<Napi::Int32Array>();
  auto records = records_.Value().As<Napi::Int32Array>();
  size_t count = std::min({(records.ElementLength() - 1) / 3,  // the last slot: see OnPoll
                           data.ElementLength() / slot_bytes_,
                           fds.ElementLength() / kMaxFdsPerMessage, kMaxMessagesPerBatch});
  if (batch_limit_ > 0) count = std::min(count, batch_limit_);
  if (accepts_) return AcceptWaiting(fds.Data(), records.Data(), count);
  MessageSlot slots[kMaxMessagesPerBatch];
  for (size_t i = 0; i < count; i++) {
    slots[i].data = data.Data() + i * slot_bytes_;
    slots[i].cap = slot_bytes_;
    slots[i].fds = fds.Data() + i * kMaxFdsPerMessage;
  }
  size_t filled = ReceiveMessages(handle_->fd, slots, count);
  int32_t* rec = records.Data();
  for (size_t i = 0; i < filled; i++) {
    rec[i * 3] = static_cast<int32_t>(slots[i].bytes);
    rec[i * 3 + 1] = static_cast<int32_t>(slots[i].info.nfds);
    rec[i * 3 + 2] = slots[i].info.msg_flags;
  }
  return static_cast<int>(filled);
}

// A listener's wake-up: connection i's fd at fds[i * kMaxFdsPerMessage], with the record
// [0, 1, 0]; a failed accept ends the batch with [-errno, 0, 0]. The same layout as
// messages, so an unclaimed batch is closed the same way.
int PollWrap::AcceptWaiting(int32_t* fds, int32_t* records, size_t count) {
  size_t filled = 0;
  while (filled < count) {
    int fd = Accept(handle_->fd);
    if (fd == -EAGAIN || fd == -EWOULDBLOCK) break;
    int32_t* rec = records + filled * 3;
    rec[0] = fd < 0 ? fd : 0;
    rec[1] = fd < 0 ? 0 : 1;
    rec[2] = 0;
    if (fd >= 0) fds[filled * kMaxFdsPerMessage] = fd;
    filled++;
    if (fd < 0) break;
  }
  return static_cast<int>(filled);
}

void PollWrap::OnPoll(int status, int events) {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  if (status == UV_EBADF && events_ != 0 && fcntl(handle_->fd, F_GETFD) != -1) {
    // libuv reports POLLERR as UV_EBADF and stops watching, but the fd is open: the error is
    // the socket's (ECONNRESET when the peer closed with our data unread). Watch again and
    // go on: recvmsg returns what is still queued, then the error itself, and sendmsg fails.
    if (uv_poll_start(&handle_->poll, events_, OnUvPoll) == 0) {
      status = 0;
      events = events_;
    }
  }
  int records = 0;
  if (status == 0 && reading_ && (events & UV_READABLE)) records = DrainReadable();
  bool writable = status == 0 && (events & UV_WRITABLE);
  if (status == 0 && records == 0 && !writable) return;  // spurious wake-up

  // The records array's last slot says the batch is unclaimed until JS zeroes it. If JS
  // never ran (a worker being terminated), the batch's fds would have no owner: close them.
  auto records_array = records_.Value().As<Napi::Int32Array>();
  int32_t* unclaimed = records_array.Data() + records_array.ElementLength() - 1;
  *unclaimed = records;
  CallIntoJs(on_event_.Value(), {Napi::Number::New(env, status), Napi::Number::New(env, records),
                                  Napi::Boolean::New(env, writable)});
  if (*unclaimed != 0) {
    const int32_t* rec = records_array.Data();
    int32_t* fds = fds_.Value().As<Napi::Int32Array>().Data();
    for (int i = 0; i < records; i++) {
      CloseFds(fds + i * kMaxFdsPerMessage, static_cast<size_t>(rec[i * 3 + 1]));
    }
    *unclaimed = 0;
  }
}

// MakeCallback, so promise reactions run before control returns to libuv. Raw Node-API
// here: node-addon-api turns a failed call into an Error object, which is itself fatal
// while a worker is being terminated (its JS can no longer run).
void PollWrap::CallIntoJs(Napi::Function callback, const std::initializer_list<napi_value>& args) {
  napi_env env = Env();
  napi_value result;
  if (napi_make_callback(env, async_context_, Value(), callback, args.size(), args.begin(), &result) ==
      napi_ok)
    return;
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) != napi_ok || !pending) return;
  napi_value error;
  if (napi_get_and_clear_last_exception(env, &error) != napi_ok) return;
  // Nothing may unwind through libuv: hand the error to process 'uncaughtException'.
  napi_fatal_exception(env, error);
}

void PollWrap::OnClosed() {
  handle_ = nullptr;
  // No more calls into JS: drop the strong references, or the callback's closure (which
  // holds the Channel, which holds this object) would keep both alive for good.
  on_event_.Reset();
  data_.Reset();
  fds_.Reset();
  records_.Reset();
  ledger_.Reset();
  ledger_slots_ = nullptr;
  ledger_length_ = 0;
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  if (!on_close_.IsEmpty()) {
    Napi::Function callback = on_close_.Value();
    on_close_.Reset();
    CallIntoJs(callback, {});
  }
  if (strongly_held_) {
    strongly_held_ = false;
    Napi::ObjectWrap<PollWrap>::Unref();  // now the JS object may be collected
  }
}

}  // namespace fdpass
