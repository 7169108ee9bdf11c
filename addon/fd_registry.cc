// The fds that poll handles own, process-wide (see fd_registry.h).
//
// Changes (a channel opening or closing) take a mutex; the question every close of a received
// fd asks, "is this a channel's?", is one atomic load for the numbers a process usually has.
#include "fd_registry.h"

#include <atomic>
#include <cstdint>
#include <mutex>
#include <unordered_set>
#include <vector>

#include "posix_io.h"

namespace fdpass {

namespace {

// Deliberately process-wide, unlike everything else in the addon: the fd table is.
std::mutex registry_mutex;

// fds below kBitmapFds, one bit each; larger ones in a set. Written under the mutex only.
constexpr int kBitmapFds = 1 << 16;
std::atomic<uint64_t> owned_bits[kBitmapFds / 64];

std::unordered_set<int>& LargeFds() {
  static auto* fds = new std::unordered_set<int>();  // never destroyed: threads may outlive exit
  return *fds;
}

uint64_t BitOf(int fd) { return uint64_t{1} << (fd % 64); }

// Whether fd is recorded; the caller holds the mutex, or accepts a check that a concurrent
// open or close in another thread may overtake (as any close of a number another thread uses).
bool IsRecorded(int fd) {
  if (fd >= 0 && fd < kBitmapFds)
    return (owned_bits[fd / 64].load(std::memory_order_acquire) & BitOf(fd)) != 0;
  std::lock_guard<std::mutex> lock(registry_mutex);
  return LargeFds().count(fd) != 0;
}

}  // namespace

bool RegisterOwnedFd(int fd) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  if (fd >= 0 && fd < kBitmapFds) {
    uint64_t before = owned_bits[fd / 64].fetch_or(BitOf(fd), std::memory_order_acq_rel);
    return (before & BitOf(fd)) == 0;
  }
  return LargeFds().insert(fd).second;
}

void ReleaseOwnedFd(int fd, bool close_it) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  if (close_it) CloseFd(fd);  // a channel's own Unix socket: its close never blocks
  if (fd >= 0 && fd < kBitmapFds) {
    owned_bits[fd / 64].fetch_and(~BitOf(fd), std::memory_order_acq_rel);
  } else {
    LargeFds().erase(fd);
  }
}

bool IsOwnedFd(int fd) { return IsRecorded(fd); }

// No lock is held across a close: a close can block (a TCP socket lingering over unsent
// data, a file on a network filesystem), and every thread's channels would wait on it.
int CloseUnlessOwned(int fd) {
  if (IsRecorded(fd)) return kFdOwnedByChannel;
  return CloseFd(fd);
}

void CloseManyUnlessOwned(const int* fds, unsigned long nfds) {
  bool any_owned = false;
  for (unsigned long i = 0; i < nfds && !any_owned; i++) any_owned = IsRecorded(fds[i]);
  if (!any_owned) {
    CloseFds(fds, nfds);  // the usual case: runs of numbers in one close_range each
    return;
  }
  std::vector<int> closable;
  for (unsigned long i = 0; i < nfds; i++) {
    if (!IsRecorded(fds[i])) closable.push_back(fds[i]);
  }
  CloseFds(closable.data(), closable.size());
}

}  // namespace fdpass
