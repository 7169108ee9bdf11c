// The fds that poll handles own, process-wide (see fd_registry.h).
#include "fd_registry.h"

#include <mutex>
#include <unordered_set>

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

int CloseUnlessOwned(int fd) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  if (Registry().count(fd) != 0) return kFdOwnedByChannel;
  return CloseFd(fd);
}

void CloseManyUnlessOwned(const int* fds, unsigned long nfds) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  const auto& owned = Registry();
  bool any_owned = false;
  for (unsigned long i = 0; i < nfds && !any_owned; i++) any_owned = owned.count(fds[i]) != 0;
  if (!any_owned) {
    CloseFds(fds, nfds);  // the usual case: runs of numbers in one close_range each
    return;
  }
  for (unsigned long i = 0; i < nfds; i++) {
    if (owned.count(fds[i]) == 0) CloseFd(fds[i]);
  }
}

}  // namespace fdpass
