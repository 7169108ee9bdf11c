// The file syscalls behind a socket file, relative to open directories.
#include "socket_file.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace fdpass {

namespace {

// Linux's O_PATH opens a directory for *at() calls alone; elsewhere O_SEARCH where there is
// one, else read access (which a search-only directory refuses).
#if defined(O_PATH)
constexpr int kDirectoryAccess = O_PATH;
#elif defined(O_SEARCH)
constexpr int kDirectoryAccess = O_SEARCH;
#else
constexpr int kDirectoryAccess = O_RDONLY;
#endif

}  // namespace

int OpenDirectoryAt(int dir, const char* name, bool follow) {
  // With O_PATH, O_NOFOLLOW alone would open a symlink itself; O_DIRECTORY makes that ENOTDIR.
  int flags = kDirectoryAccess | O_DIRECTORY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW);
  int fd;
  do {
    fd = openat(dir, name, flags);
  } while (fd == -1 && errno == EINTR);
  return fd == -1 ? -errno : fd;
}

int MakeDirectoryAt(int dir, const char* name, unsigned mode) {
  return mkdirat(dir, name, static_cast<mode_t>(mode)) == -1 ? -errno : 0;
}

int OpenLockFileAt(int dir, const char* name) {
  int fd;
  do {
    fd = openat(dir, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
  } while (fd == -1 && errno == EINTR);
  return fd == -1 ? -errno : fd;
}

int TryLockExclusive(int fd) {
  int result;
  do {
    result = flock(fd, LOCK_EX | LOCK_NB);
  } while (result == -1 && errno == EINTR);
  return result == -1 ? -errno : 0;
}

int ChangeModeAt(int dir, const char* name, unsigned mode) {
  return fchmodat(dir, name, static_cast<mode_t>(mode), 0) == -1 ? -errno : 0;
}

int StatAt(int dir, const char* name, FileStatus* out) {
  struct stat st;
  if (fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == -1) return -errno;
  out->dev = static_cast<uint64_t>(st.st_dev);
  out->ino = static_cast<uint64_t>(st.st_ino);
  out->mode = static_cast<uint64_t>(st.st_mode);
  out->uid = static_cast<uint64_t>(st.st_uid);
  return 0;
}

int LinkAt(int from_dir, const char* from, int to_dir, const char* to) {
  return linkat(from_dir, from, to_dir, to, 0) == -1 ? -errno : 0;
}

int UnlinkAt(int dir, const char* name, bool directory) {
  return unlinkat(dir, name, directory ? AT_REMOVEDIR : 0) == -1 ? -errno : 0;
}

}  // namespace fdpass
