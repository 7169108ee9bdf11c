// The calling thread's scheduling policy: what lib/batch-scheduling.ts switches while a
// WorkerPool accepts. Plain system calls, no Node-API.
#pragma once

namespace fdpass {

// sched_getscheduler(2) of the calling thread: SCHED_OTHER, SCHED_BATCH... or -errno;
// -ENOSYS but on Linux.
int ThreadSchedulingPolicy();

// sched_setscheduler(2) of the calling thread to SCHED_OTHER or SCHED_BATCH (priority 0):
// 0 or -errno; -EINVAL for any other policy, -ENOSYS but on Linux.
int SetThreadSchedulingPolicy(int policy);

}  // namespace fdpass
