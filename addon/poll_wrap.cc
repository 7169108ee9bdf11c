// PollWrap: one uv_poll_t over one socket fd, and the only way fdpass calls into JS.
//
// Lifecycle (PollWrap::State): new -> open (open) -> closing (close) -> closed (uv close
// callback). The native state (PollHandle) lives from open until the uv close callback and
// is freed only there. From open until then the JS object is held strongly, so it cannot be
// collected while libuv may still call it. Either side can go first at environment teardown:
// whoever goes first detaches the other.
//
// Ownership: every fd a wake-up receives goes straight into the ledger, in native code, so
// that at every moment it is either there or handed out by JS. Whatever the ledger holds when
// the handle starts closing is closed with it, whether or not JS ever runs again.
#include "poll_wrap.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "fd_registry.h"
#include "inet_socket.h"
#include "unix_socket.h"

namespace fdpass {

struct PollHandle {
  uv_poll_t poll;
  int fd;
  // The socket as opened: a number closed and reused behind the handle's back is not its own.
  FileIdentity identity;
  bool owns_fd = true;  // false once the number no longer names the socket it opened
  bool closing = false;
  // /proc/self/fdinfo of the socket, opened the first time a busy wake-up asks what waits
  // (see DrainReadable), closed with the handle; -1 until then.
  int info_fd = -1;
  // The last wake-up found a queue worth batching: ask before the first read this time too.
  bool busy = false;
  // A SOCK_STREAM socket: its bytes can be read in any pieces (a RawStream's, in packet mode).
  bool stream = false;
  PollWrap* wrap = nullptr;  // null once detached: then nothing calls into JS
  napi_async_cleanup_hook_handle cleanup_hook = nullptr;
  // The ledger's fds when closing began: closed with the handle, so they are not orphaned
  // when a worker is terminated and no JS runs to close them.
  std::vector<int> held_fds;
};

namespace {

void OnUvPoll(uv_poll_t* poll, int status, int events) {
  auto* handle = reinterpret_cast<PollHandle*>(poll->data);
  if (handle->closing || handle->wrap == nullptr) return;
  handle->wrap->OnPoll(status, events);
}

void OnUvClose(uv_handle_t* uv_handle) {
  auto* handle = reinterpret_cast<PollHandle*>(uv_handle->data);
  // The poll is gone from the loop: only now may the fd be closed, and only if the number
  // still names the socket (else it is someone else's file now).
  ReleaseOwnedFd(handle->fd, handle->owns_fd && IsSameFile(handle->fd, handle->identity));
  if (handle->info_fd >= 0) CloseFd(handle->info_fd);
  CloseFds(handle->held_fds.data(), handle->held_fds.size());
  if (handle->cleanup_hook != nullptr) napi_remove_async_cleanup_hook(handle->cleanup_hook);
  if (handle->wrap != nullptr) handle->wrap->OnClosed();
  delete handle;  // free only in the close callback
}

void BeginClose(PollHandle* handle) {
  if (handle->closing) return;
  handle->closing = true;
  uv_poll_stop(&handle->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&handle->poll), OnUvClose);
}

// The environment (main thread or a worker) is going away: close without JS.
void OnEnvironmentCleanup(napi_async_cleanup_hook_handle, void* arg) {
  auto* handle = static_cast<PollHandle*>(arg);
  if (handle->wrap != nullptr) handle->wrap->Detach();
  BeginClose(handle);  // no-op if already closing; OnUvClose removes this hook
}

// Where one wake-up's received fds wait before they are appended to the ledger; per thread.
int* FdScratch() {
  thread_local std::vector<int> scratch(kMaxMessagesPerBatch * kMaxFdsPerMessage);
  return scratch.data();
}

// A budget's room: 0 when it is full, or when JS wrote nonsense (NaN, a negative count).
size_t RoomOf(double max, double held) {
  double room = max - held;
  if (!(room >= 1)) return 0;
  return room >= 0x1p53 ? size_t{1} << 53 : static_cast<size_t>(room);
}

size_t Spend(size_t room, size_t amount) { return amount >= room ? 0 : room - amount; }

bool IsInt32Array(const Napi::Value& value) {
  return value.IsTypedArray() && value.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array;
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
                         InstanceMethod<&PollWrap::SetBudget>("setBudget"),
                         InstanceMethod<&PollWrap::CloseLedgerFds>("closeLedgerFds"),
                     });
}

// new PollWrap(onEvent, data: Uint8Array, records: Int32Array, slotBytes, mode)
PollWrap::PollWrap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<PollWrap>(info), async_context_(info.Env(), "fdpass:PollWrap") {
  Napi::Env env = info.Env();
  if (info.Length() < 5 || !info[0].IsFunction() || !info[1].IsTypedArray() ||
      info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array ||
      !IsInt32Array(info[2]) || !info[3].IsNumber() || !info[4].IsNumber()) {
    Napi::TypeError::New(
        env, "PollWrap(onEvent, data: Uint8Array, records: Int32Array, slotBytes, mode)")
        .ThrowAsJavaScriptException();
    return;
  }
  int64_t mode = info[4].As<Napi::Number>().Int64Value();
  if (mode < 0 || mode > static_cast<int64_t>(ReceiveMode::kAccept)) {
    Napi::RangeError::New(env, "PollWrap: unknown receive mode").ThrowAsJavaScriptException();
    return;
  }
  on_event_ = Napi::Persistent(info[0].As<Napi::Function>());
  data_ = Napi::Persistent(info[1].As<Napi::Object>());
  records_ = Napi::Persistent(info[2].As<Napi::Object>());
  int64_t slot_bytes = info[3].As<Napi::Number>().Int64Value();
  slot_bytes_ = slot_bytes < 1 ? 1 : static_cast<size_t>(slot_bytes);
  mode_ = static_cast<ReceiveMode>(mode);
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
  state_ = State::kClosed;
}

// open(fd, fromLedger?: Int32Array) -> 0 | -errno | kFdOwnedByChannel. The handle owns fd
// from here on. With fromLedger (another handle's ledger whose oldest fd is fd: an accepted
// connection), fd leaves that ledger in the same step, so it has one owner at every moment.
Napi::Value PollWrap::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (state_ != State::kNew) return Napi::Number::New(env, -EALREADY);
  if (!info[0].IsNumber()) return Napi::Number::New(env, -EINVAL);
  int fd = info[0].As<Napi::Number>().Int32Value();
  int32_t* from = nullptr;
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    if (!IsInt32Array(info[1])) return Napi::Number::New(env, -EINVAL);
    auto ledger = info[1].As<Napi::Int32Array>();
    from = ledger.Data();
    if (ledger.ElementLength() <= kLedgerFirstFd || from[kLedgerHead] < 0 ||
        from[kLedgerHead] >= from[kLedgerTail] ||
        static_cast<size_t>(from[kLedgerHead]) + kLedgerFirstFd >= ledger.ElementLength() ||
        from[kLedgerFirstFd + from[kLedgerHead]] != fd)
      return Napi::Number::New(env, -EINVAL);
  }

  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok) return Napi::Number::New(env, -EINVAL);
  auto* handle = new PollHandle();
  handle->fd = fd;
  handle->stream = SocketType(fd) == SOCK_STREAM;
  int err = GetFileIdentity(fd, &handle->identity);
  if (err == 0 && !RegisterOwnedFd(fd)) err = kFdOwnedByChannel;
  if (err != 0) {
    delete handle;
    return Napi::Number::New(env, err);
  }
  err = uv_poll_init(loop, &handle->poll, fd);  // also makes fd non-blocking
  if (err != 0) {
    ReleaseOwnedFd(fd, false);  // the caller still owns fd when open fails
    delete handle;              // uv_poll_init failed before registering the handle
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
  if (from != nullptr) from[kLedgerHead]++;
  handle->wrap = this;
  handle_ = handle;
  state_ = State::kOpen;
  // Held strongly until the close callback: libuv may call us at any time.
  Napi::ObjectWrap<PollWrap>::Ref();
  return Napi::Number::New(env, 0);
}

// Whether the fd still names the socket opened. libuv aborts the process when it watches a
// closed fd, so every start checks first; a reused number is never the handle's to close.
bool PollWrap::StillOwnsSocket() {
  if (handle_->owns_fd && !IsSameFile(handle_->fd, handle_->identity)) handle_->owns_fd = false;
  return handle_->owns_fd;
}

// start(readable, writable) -> 0 | -errno; both false stops polling. -EBADF if the fd was
// closed (or its number reused) behind the handle's back.
Napi::Value PollWrap::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!IsOpen() || !StillOwnsSocket()) return Napi::Number::New(env, -EBADF);
  events_ = (info[0].ToBoolean() ? UV_READABLE : 0) | (info[1].ToBoolean() ? UV_WRITABLE : 0);
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
  if (!IsOpen()) return Napi::Boolean::New(env, false);
  if (info[0].IsFunction()) on_close_ = Napi::Persistent(info[0].As<Napi::Function>());
  TakeLedger();
  state_ = State::kClosing;
  BeginClose(handle_);
  return Napi::Boolean::New(env, true);
}

// setLedger(slots: Int32Array): see kLedgerHead. JS replaces it when it grows; JS writes head
// without a call, and the addon appends at tail.
Napi::Value PollWrap::SetLedger(const Napi::CallbackInfo& info) {
  if (!IsInt32Array(info[0]) || info[0].As<Napi::Int32Array>().ElementLength() <= kLedgerFirstFd) {
    Napi::TypeError::New(info.Env(), "setLedger(slots: Int32Array)").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto slots = info[0].As<Napi::Int32Array>();
  ledger_ = Napi::Persistent(slots.As<Napi::Object>());
  ledger_slots_ = slots.Data();
  ledger_length_ = slots.ElementLength();
  return info.Env().Undefined();
}

// setBudget(budget: Float64Array): see kBudgetMaxFds.
Napi::Value PollWrap::SetBudget(const Napi::CallbackInfo& info) {
  if (!info[0].IsTypedArray() ||
      info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array ||
      info[0].As<Napi::Float64Array>().ElementLength() < kBudgetLength) {
    Napi::TypeError::New(info.Env(), "setBudget(budget: Float64Array)")
        .ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  auto budget = info[0].As<Napi::Float64Array>();
  budget_ = Napi::Persistent(budget.As<Napi::Object>());
  budget_slots_ = budget.Data();
  return info.Env().Undefined();
}

// closeLedgerFds(offset, count) -> 0 | -EINVAL: closes the ledger's fds at [head + offset,
// head + offset + count) and takes them out, in one step (they are never closed twice).
Napi::Value PollWrap::CloseLedgerFds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (ledger_slots_ == nullptr || !info[0].IsNumber() || !info[1].IsNumber())
    return Napi::Number::New(env, -EINVAL);
  int64_t offset = info[0].As<Napi::Number>().Int64Value();
  int64_t count = info[1].As<Napi::Number>().Int64Value();
  int64_t head = ledger_slots_[kLedgerHead];
  int64_t tail = ledger_slots_[kLedgerTail];
  // Each bound on its own: a sum of JS numbers could wrap past the check.
  if (head < 0 || tail < head || static_cast<size_t>(tail) > ledger_length_ - kLedgerFirstFd ||
      offset < 0 || offset > tail - head || count < 0 || count > tail - head - offset)
    return Napi::Number::New(env, -EINVAL);
  int32_t* start = ledger_slots_ + kLedgerFirstFd + head + offset;
  CloseFds(start, static_cast<size_t>(count));
  memmove(start, start + count,
          sizeof(int32_t) * static_cast<size_t>(tail - head - offset - count));
  ledger_slots_[kLedgerTail] = static_cast<int32_t>(tail - count);
  return Napi::Number::New(env, 0);
}

// The handle is closing: the ledger's fds become the handle's, to close with it.
void PollWrap::TakeLedger() {
  if (ledger_slots_ == nullptr || handle_ == nullptr) return;
  size_t capacity = ledger_length_ - kLedgerFirstFd;
  size_t head = std::min(static_cast<size_t>(std::max(ledger_slots_[kLedgerHead], 0)), capacity);
  size_t tail = std::min(static_cast<size_t>(std::max(ledger_slots_[kLedgerTail], 0)), capacity);
  for (size_t i = head; i < tail; i++)
    handle_->held_fds.push_back(ledger_slots_[kLedgerFirstFd + i]);
  ledger_slots_[kLedgerHead] = 0;  // taken once: nothing is closed twice
  ledger_slots_[kLedgerTail] = 0;
}

// Room at the ledger's tail for `fds` more, moving what it holds to the front if need be.
bool PollWrap::MakeLedgerRoom(size_t fds) {
  size_t capacity = ledger_length_ - kLedgerFirstFd;
  size_t head = static_cast<size_t>(ledger_slots_[kLedgerHead]);
  size_t tail = static_cast<size_t>(ledger_slots_[kLedgerTail]);
  if (head > tail || tail > capacity) return false;  // JS wrote nonsense: receive nothing
  if (capacity - tail >= fds) return true;
  if (head == 0) return false;
  int32_t* first = ledger_slots_ + kLedgerFirstFd;
  memmove(first, first + head, sizeof(int32_t) * (tail - head));
  ledger_slots_[kLedgerHead] = 0;
  ledger_slots_[kLedgerTail] = static_cast<int32_t>(tail - head);
  return capacity - (tail - head) >= fds;
}

void PollWrap::AppendToLedger(const int* fds, size_t count) {
  int32_t tail = ledger_slots_[kLedgerTail];
  memcpy(ledger_slots_ + kLedgerFirstFd + tail, fds, sizeof(int) * count);
  ledger_slots_[kLedgerTail] = tail + static_cast<int32_t>(count);
}

// One wake-up's reading, bounded twice: as libuv bounds its reads (a batch at most, fair to
// the other handles on the loop), and by the budget. The budget's room is counted after each
// message, and a batch asks the kernel for no more messages than could fit if each carried
// the most fds a message can: so a wake-up exceeds the budget by one message at most. Sets
// *starved when it read nothing for want of room, so that JS stops watching.
int PollWrap::DrainReadable(bool* starved) {
  *starved = false;
  if (ledger_slots_ == nullptr || budget_slots_ == nullptr) return 0;  // JS sets both first
  auto data = data_.Value().As<Napi::Uint8Array>();
  auto records = records_.Value().As<Napi::Int32Array>();
  size_t slots = std::min({records.ElementLength() / kRecordStride,
                           data.ElementLength() / slot_bytes_, kMaxMessagesPerBatch});
  size_t room_fds = RoomOf(budget_slots_[kBudgetMaxFds], budget_slots_[kBudgetHeldFds]);
  size_t room_bytes = RoomOf(budget_slots_[kBudgetMaxBytes], budget_slots_[kBudgetHeldBytes]);
  size_t fds_per_message = mode_ == ReceiveMode::kAccept ? 1 : kMaxFdsPerMessage;
  // On a stream, the rest of the frame under way (its bytes become its payload one for one).
  size_t frame_rest = mode_ == ReceiveMode::kStream
                          ? static_cast<size_t>(std::max(ledger_slots_[kLedgerReadCap], 0))
                          : 0;
  bool full = room_fds == 0 || (mode_ != ReceiveMode::kAccept && room_bytes == 0);
  // The most stream bytes this wake-up reads. Beyond the frame under way, no more than the
  // byte budget could hold if every 8 bytes were an empty frame costing its overhead: so
  // decoding what was read never overshoots by more than a message.
  size_t stream_bytes = 0;
  if (full) {
    // A stream frame that has begun is let through, one read capped at its end: its bytes
    // and fds count against the budget, and only its completion can make room.
    if (frame_rest == 0) {
      *starved = true;
      return 0;
    }
    stream_bytes = frame_rest;
    slots = 1;
  } else if (mode_ == ReceiveMode::kStream) {
    size_t expandable =
        room_bytes / (kMessageHeaderBytes + kBufferedItemOverheadBytes) * kMessageHeaderBytes;
    stream_bytes = std::max({frame_rest, expandable, size_t{1}});
  }

  int32_t* rec = records.Data();
  int* scratch = FdScratch();
  size_t filled = 0;
  // A byte stream's reads in packet mode (a RawStream's) are packed: see kRecordStride.
  size_t packed_bytes = 0;
  bool asked_kernel = false;
  while (filled < slots) {
    if (!MakeLedgerRoom(fds_per_message)) {
      *starved = filled == 0;  // JS grows the ledger
      break;
    }
    size_t free_fds =
        ledger_length_ - kLedgerFirstFd - static_cast<size_t>(ledger_slots_[kLedgerTail]);
    size_t want = std::min(slots - filled, free_fds / fds_per_message);
    if (!full) {
      want = std::min(want, std::max<size_t>(1, room_fds / fds_per_message));
      if (mode_ == ReceiveMode::kPackets) {
        size_t most_per_packet = slot_bytes_ + kBufferedItemOverheadBytes;
        want = std::min(want, std::max<size_t>(1, room_bytes / most_per_packet));
      }
    }
    // A stream whose budget allows fewer reads than there are slots (each message might carry
    // 253 fds): ask the kernel what waits, once per wake-up, after a first read (so that a
    // lone message costs no more), or before it if the last wake-up found a queue. If every
    // fd waiting fits the room and one message more, read just the bytes that were waiting,
    // as many messages as they hold, in one batch: they carry no more fds than that. Else go
    // on one read at a time. Asked only while there is room, so the batch is the one message
    // over, not a second.
    // Packets on a stream socket (a RawStream: bytes with no frames) batch the same way,
    // within the byte budget: otherwise each read of a message that may carry 253 fds is a
    // recvmmsg of its own when the fd budget is below that.
    bool bytes_in_pieces =
        mode_ == ReceiveMode::kStream || (mode_ == ReceiveMode::kPackets && handle_->stream);
    if (mode_ == ReceiveMode::kPackets && bytes_in_pieces) stream_bytes = room_bytes;
    size_t batch_bytes = stream_bytes;
    size_t slot_cap = slot_bytes_;
    bool batched = false;
    if (bytes_in_pieces && !full && (filled > 0 || handle_->busy) && want < slots - filled &&
        !asked_kernel) {
      asked_kernel = true;
      int queued = QueuedBytes(handle_->fd);
      handle_->busy = queued > 1;
      // Nothing more after a read: stop, rather than a read that would only say EAGAIN. (Before
      // any read, nothing queued may yet be readable: the peer's EOF, or an error.)
      if (queued == 0 && filled > 0) break;
      long queued_fds = queued > 1 ? QueuedFds(handle_->fd, &handle_->info_fd) : -1;
      // Packets on a stream keep their budget exactly: a batch only when all that waits fits
      // (their one read over is the single reads' below, as before).
      size_t batch_fds = mode_ == ReceiveMode::kStream ? room_fds + kMaxFdsPerMessage : room_fds;
      if (queued_fds >= 0 && static_cast<size_t>(queued_fds) <= std::min(batch_fds, free_fds)) {
        // Each read stops after the first message with fds it meets, so such messages take a
        // read each: give each read an even share of the bytes that waited, or the bytes of
        // a message with fds on average (were each to carry one), whichever is more, so that
        // a read holds a whole message where the slot allows; reading no more than them. A
        // read never goes past its slot.
        batch_bytes = std::min(stream_bytes, static_cast<size_t>(queued));
        want = std::min(slots - filled, batch_bytes);
        size_t waiting_fds = static_cast<size_t>(queued_fds);
        size_t per_message = waiting_fds > 0
                                 ? (static_cast<size_t>(queued) + waiting_fds - 1) / waiting_fds
                                 : batch_bytes;
        slot_cap = std::clamp(std::max(batch_bytes / want, per_message), size_t{1}, slot_bytes_);
        batched = true;
      }
    }
    size_t got = 0;
    bool stop = false;
    if (mode_ == ReceiveMode::kAccept) {
      // A slot with room for an address gets the client's, which accept(2) reports for free.
      bool with_address = slot_bytes_ >= kInetAddressBytes;
      struct sockaddr_storage peer;
      for (; got < want; got++) {
        int fd = Accept(handle_->fd, with_address ? &peer : nullptr);
        if (fd == -EAGAIN || fd == -EWOULDBLOCK) break;
        int32_t* r = rec + (filled + got) * kRecordStride;
        if (fd >= 0 && with_address)
          WriteInetAddress(peer, data.Data() + (filled + got) * slot_bytes_);
        r[kRecordBytes] = fd < 0 ? fd : with_address ? static_cast<int32_t>(kInetAddressBytes) : 0;
        r[kRecordFds] = fd < 0 ? 0 : 1;
        r[kRecordFlags] = 0;
        if (fd < 0) {
          got++;
          stop = true;
          break;
        }
        AppendToLedger(&fd, 1);
        room_fds = Spend(room_fds, 1);
      }
    } else {
      MessageSlot batch[kMaxMessagesPerBatch];
      size_t planned = 0;
      for (size_t j = 0; j < want; j++) {
        size_t cap = slot_cap;
        if (mode_ == ReceiveMode::kStream || batched) {
          cap = std::min(cap, batch_bytes - planned);
          if (cap == 0) {
            want = j;
            break;
          }
          planned += cap;
        }
        batch[j].data = data.Data() + (filled + j) * slot_bytes_;
        batch[j].cap = cap;
        batch[j].fds = scratch + j * kMaxFdsPerMessage;
      }
      if (want == 0) break;
      got = ReceiveMessages(handle_->fd, batch, want);
      for (size_t j = 0; j < got; j++) {
        if (bytes_in_pieces && mode_ == ReceiveMode::kPackets && batch[j].bytes > 0) {
          // Down, never over a slot not yet moved: each read starts no earlier than its bytes go.
          memmove(data.Data() + packed_bytes, batch[j].data, static_cast<size_t>(batch[j].bytes));
          packed_bytes += static_cast<size_t>(batch[j].bytes);
        }
        int32_t* r = rec + (filled + j) * kRecordStride;
        r[kRecordBytes] = static_cast<int32_t>(batch[j].bytes);
        r[kRecordFds] = static_cast<int32_t>(batch[j].info.nfds);
        r[kRecordFlags] = batch[j].info.msg_flags;
        AppendToLedger(batch[j].fds, batch[j].info.nfds);
        room_fds = Spend(room_fds, batch[j].info.nfds);
        if (batch[j].bytes <= 0) {
          stop = true;  // an error or EOF: nothing useful follows
        } else if (mode_ == ReceiveMode::kStream) {
          stream_bytes = Spend(stream_bytes, static_cast<size_t>(batch[j].bytes));
        } else {
          room_bytes =
              Spend(room_bytes, static_cast<size_t>(batch[j].bytes) + kBufferedItemOverheadBytes);
        }
      }
    }
    filled += got;
    if (stop || got < want || full) break;
    if (room_fds == 0 || (mode_ == ReceiveMode::kPackets && room_bytes == 0)) break;
    if (mode_ == ReceiveMode::kStream && stream_bytes == 0) break;
  }
  return static_cast<int>(filled);
}

void PollWrap::OnPoll(int status, int events) {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  if (status == UV_EBADF && events_ != 0 && StillOwnsSocket()) {
    // libuv reports POLLERR as UV_EBADF and stops watching, but the fd is open: the error is
    // the socket's (ECONNRESET when the peer closed with our data unread). Watch again and
    // go on: recvmsg returns what is still queued, then the error itself, and sendmsg fails.
    if (uv_poll_start(&handle_->poll, events_, OnUvPoll) == 0) {
      status = 0;
      events = events_;
    }
  }
  int records = 0;
  bool starved = false;
  if (status == 0 && (events_ & UV_READABLE) && (events & UV_READABLE)) {
    records = DrainReadable(&starved);
  }
  bool writable = status == 0 && (events & UV_WRITABLE);
  // A spurious wake-up. But a readable socket with no room to read is not: libuv would wake
  // again at once, forever; JS is told (0 records), so that it stops watching until there is room.
  if (status == 0 && records == 0 && !writable && !starved) return;
  CallIntoJs(on_event_.Value(), {Napi::Number::New(env, status), Napi::Number::New(env, records),
                                 Napi::Boolean::New(env, writable)});
}

// MakeCallback, so promise reactions run before control returns to libuv. Raw Node-API
// here: node-addon-api turns a failed call into an Error object, which is itself fatal
// while a worker is being terminated (its JS can no longer run).
void PollWrap::CallIntoJs(Napi::Function callback, const std::initializer_list<napi_value>& args) {
  napi_env env = Env();
  napi_value result;
  if (napi_make_callback(env, async_context_, Value(), callback, args.size(), args.begin(),
                         &result) == napi_ok)
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
  state_ = State::kClosed;
  // No more calls into JS: drop the strong references, or the callback's closure (which
  // holds the Channel, which holds this object) would keep both alive for good.
  on_event_.Reset();
  data_.Reset();
  records_.Reset();
  ledger_.Reset();
  ledger_slots_ = nullptr;
  ledger_length_ = 0;
  budget_.Reset();
  budget_slots_ = nullptr;
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  if (!on_close_.IsEmpty()) {
    Napi::Function callback = on_close_.Value();
    on_close_.Reset();
    CallIntoJs(callback, {});
  }
  Napi::ObjectWrap<PollWrap>::Unref();  // now the JS object may be collected
}

}  // namespace fdpass
