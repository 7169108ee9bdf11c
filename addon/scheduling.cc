#include "scheduling.h"

#include <errno.h>
#include <sched.h>

namespace fdpass {

// Linux only: there pid 0 names the calling thread (elsewhere the whole process, and macOS
// has neither call).
#if defined(__linux__) && defined(SCHED_BATCH)

int ThreadSchedulingPolicy() {
  int policy = sched_getscheduler(0);
  return policy < 0 ? -errno : policy;
}

int SetThreadSchedulingPolicy(int policy) {
  // Only the two that need no privilege and keep the nice value: never a real-time policy.
  if (policy != SCHED_OTHER && policy != SCHED_BATCH) return -EINVAL;
  struct sched_param param = {};
  param.sched_priority = 0;
  return sched_setscheduler(0, policy, &param) < 0 ? -errno : 0;
}

#else

int ThreadSchedulingPolicy() { return -ENOSYS; }

int SetThreadSchedulingPolicy(int policy) {
  (void)policy;
  return -ENOSYS;
}

#endif

}  // namespace fdpass
