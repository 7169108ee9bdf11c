// The file syscalls behind a socket file in a directory others may write to, each relative
// to an open directory so that no name is looked up twice. Plain POSIX, no Node-API; every
// function returns a value >= 0 or -errno.
#pragma once

#include <stdint.h>

namespace fdpass {

// A directory, opened to name things in it (on Linux O_PATH: it needs only search
// permission and reads nothing), close-on-exec. dir is AT_FDCWD for a path. Unless
// follow, a symlink at name is an error (ELOOP or ENOTDIR), never followed.
int OpenDirectoryAt(int dir, const char* name, bool follow);

int MakeDirectoryAt(int dir, const char* name, unsigned mode);

// A lock file: opened read-write, created with mode 0600 if missing, close-on-exec, never
// through a symlink (ELOOP), and never blocking (whatever sits at name, a FIFO included).
int OpenLockFileAt(int dir, const char* name);

// flock(LOCK_EX | LOCK_NB): 0, or -EWOULDBLOCK while another open file holds the lock.
// Closing fd releases it.
int TryLockExclusive(int fd);

// fchmodat(2). It follows a symlink at name: call it only where nobody else can write.
int ChangeModeAt(int dir, const char* name, unsigned mode);

struct FileStatus {
  uint64_t dev;
  uint64_t ino;
  uint64_t mode;  // st_mode: type and permission bits
  uint64_t uid;
};

// fstatat(2) of name itself, a symlink included (AT_SYMLINK_NOFOLLOW).
int StatAt(int dir, const char* name, FileStatus* out);

// linkat(2) without following a symlink at from: -EEXIST if `to` exists, never replacing it.
int LinkAt(int from_dir, const char* from, int to_dir, const char* to);

// unlinkat(2); with directory, an empty directory (AT_REMOVEDIR).
int UnlinkAt(int dir, const char* name, bool directory);

}  // namespace fdpass
