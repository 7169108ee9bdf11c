// The calling thread's scheduling policy: what lib/batch-scheduling.ts switches while a
// WorkerPool accepts. Plain POSIX, no Node-API.
#pragma once

namespace fdpass {

// sched_getscheduler(2) of the calling thread: SCHED_OTHER, SCHED_BATCH... or -errno.
int ThreadSchedulingPolicy();

// sched_setscheduler(2) of the calling thread to SCHED_OTHER or SCHED_BATCH (priority 0):
// 0 or -errno; -EINVAL for any other policy, -ENOSYS where there is no SCHED_BATCH.
int SetThreadSchedulingPolicy(int policy);

}  // namespace fdpass
