// The fds that poll handles own, process-wide: fd numbers are shared by every thread, so a
// close in one thread must not take the socket of a channel in another.
#pragma once

namespace fdpass {

// Records fd as owned by a poll handle; false if one already owns it.
bool RegisterOwnedFd(int fd);

// The owner is done with fd: closes it (if close_it) and forgets it, in one step, so no
// other thread sees it closed yet registered, or registered to nobody yet open.
void ReleaseOwnedFd(int fd, bool close_it);

// Whether a poll handle owns fd.
bool IsOwnedFd(int fd);

// close(2) of fd unless a poll handle owns it: 0, -errno, or kFdOwnedByChannel.
int CloseUnlessOwned(int fd);

// Closes fds[0..nfds) except those a poll handle owns, which it leaves alone.
void CloseManyUnlessOwned(const int* fds, unsigned long nfds);

// CloseUnlessOwned's answer for an fd a poll handle owns. Below every -errno.
constexpr int kFdOwnedByChannel = -0x10001;

}  // namespace fdpass
