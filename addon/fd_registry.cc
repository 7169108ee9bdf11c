// The fds that poll handles own, process-wide (see fd_registry.h).
#include "fd_registry.h"

#include <mutex>
#include <unordered_set>
#include <vector>

#include "posix_io.h"

namespace fdpass {

namespace {

// Deliberately process-wide, unlike everything else in the addon: the fd table is.
std::mutex registry_mutex;
std::unordered_set<int>& Registry() {
  static auto* fds = new std::unordered_set<int>();  // never destroyed: threads may outlive exit
  return *fds;
}

}  // namespace

bool RegisterOwnedFd(int fd) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  return Registry().insert(fd).second;
}

void ReleaseOwnedFd(int fd, bool close_it) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  if (close_it) CloseFd(fd);
  Registry().erase(fd);
}

bool IsOwnedFd(int fd) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  return Registry().count(fd) != 0;
}

// The checks hold the lock, the closes do not: a close can block (a TCP socket lingering
// over unsent data, a file on a network filesystem), and every thread's channels wait on it.
int CloseUnlessOwned(int fd) {
  if (IsOwnedFd(fd)) return kFdOwnedByChannel;
  return CloseFd(fd);
}

void CloseManyUnlessOwned(const int* fds, unsigned long nfds) {
  std::vector<int> closable;
  bool any_owned = false;
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    const auto& owned = Registry();
    for (unsigned long i = 0; i < nfds && !any_owned; i++) any_owned = owned.count(fds[i]) != 0;
    if (any_owned) {
      for (unsigned long i = 0; i < nfds; i++) {
        if (owned.count(fds[i]) == 0) closable.push_back(fds[i]);
      }
    }
  }
  // The usual case, none owned: runs of numbers in one close_range each.
  if (!any_owned)
    CloseFds(fds, nfds);
  else
    CloseFds(closable.data(), closable.size());
}

}  // namespace fdpass
