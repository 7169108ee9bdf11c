// PollWrap: one uv_poll_t over one socket fd, and the only way fdpass calls into JS.
#pragma once

#include <napi.h>
#include <uv.h>

#include "posix_io.h"

namespace fdpass {

// The memory JS and the addon share, described once in lib/binding.ts; these indices and
// sizes are exported to JS as constants, so both sides use the same numbers.
//
// The ledger (Int32Array, one per handle): every received fd that JS holds for nobody, oldest
// first, at [kLedgerFirstFd + head, kLedgerFirstFd + tail). The addon appends what it
// receives; JS advances head as it hands fds out; the addon closes the rest when the handle
// closes, even if no JS runs again (a worker being terminated).
constexpr size_t kLedgerHead = 0;
constexpr size_t kLedgerTail = 1;
// On a stream: the bytes still to come of the frame under way (0 at a message boundary). The
// addon lets them through even when the budget is full: only the frame's end makes room.
constexpr size_t kLedgerReadCap = 2;
constexpr size_t kLedgerFirstFd = 3;

// A wake-up's records (Int32Array, shared): [bytes or -errno, nfds, msg_flags] per message.
// Message i's bytes are at data[i * slotBytes]; its fds were appended to the ledger in order.
// A stream socket's reads in packet mode (a RawStream's) are bytes with no boundaries: they
// are packed instead, read i's bytes right after read i - 1's, from data[0], so that JS copies
// a wake-up's bytes at once.
constexpr size_t kRecordStride = 3;
constexpr size_t kRecordBytes = 0;
constexpr size_t kRecordFds = 1;
constexpr size_t kRecordFlags = 2;

// The budget (Float64Array, possibly shared by several handles): what may be held for nobody.
// JS keeps the held counts; the addon reads them at each wake-up and takes no more than the
// room left, give or take one message.
constexpr size_t kBudgetMaxFds = 0;
constexpr size_t kBudgetHeldFds = 1;
constexpr size_t kBudgetMaxBytes = 2;
constexpr size_t kBudgetHeldBytes = 3;
constexpr size_t kBudgetLength = 4;

// What a buffered message costs beyond its payload, so that empty messages count.
constexpr size_t kBufferedItemOverheadBytes = 256;
// The smallest stream message that can come without an fd: an empty frame's header.
constexpr size_t kMessageHeaderBytes = 8;

// What a wake-up reads.
enum class ReceiveMode { kStream = 0, kPackets = 1, kAccept = 2 };

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
  // new -> open -> closing -> closed; detached (the environment is going away) from open or
  // closing. The JS object is held strongly while open or closing.
  enum class State { kNew, kOpen, kClosing, kClosed };

  Napi::Value Open(const Napi::CallbackInfo& info);
  Napi::Value Start(const Napi::CallbackInfo& info);
  Napi::Value RefHandle(const Napi::CallbackInfo& info);
  Napi::Value UnrefHandle(const Napi::CallbackInfo& info);
  Napi::Value HasRefHandle(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value SetLedger(const Napi::CallbackInfo& info);
  Napi::Value SetBudget(const Napi::CallbackInfo& info);
  Napi::Value CloseLedgerFds(const Napi::CallbackInfo& info);

  bool IsOpen() const { return state_ == State::kOpen; }
  bool StillOwnsSocket();
  void TakeLedger();
  bool MakeLedgerRoom(size_t fds);
  void AppendToLedger(const int* fds, size_t count);
  int DrainReadable(bool* starved);
  void CallIntoJs(Napi::Function callback, const std::initializer_list<napi_value>& args);

  State state_ = State::kNew;
  PollHandle* handle_ = nullptr;  // set while open or closing
  int events_ = 0;                // what start() last asked libuv to watch
  ReceiveMode mode_ = ReceiveMode::kStream;
  size_t slot_bytes_ = 1;
  Napi::FunctionReference on_event_;
  Napi::FunctionReference on_close_;
  Napi::ObjectReference data_;       // Uint8Array: slot_bytes_ of received bytes per message
  Napi::ObjectReference records_;    // Int32Array: kRecordStride per message
  Napi::ObjectReference ledger_;     // Int32Array, see kLedgerHead
  int32_t* ledger_slots_ = nullptr;  // ledger_'s memory, alive while ledger_ holds it
  size_t ledger_length_ = 0;
  Napi::ObjectReference budget_;  // Float64Array, see kBudgetMaxFds
  double* budget_slots_ = nullptr;
  Napi::AsyncContext async_context_;
};

}  // namespace fdpass
