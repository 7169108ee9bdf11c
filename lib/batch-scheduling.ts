// While a WorkerPool accepts, the thread it accepts on runs under Linux's SCHED_BATCH. A
// master wakes for every few connections; under SCHED_OTHER each wake-up preempts a busy
// worker (a context switch there and back) and finds only the connection or two that came
// since the last. Under SCHED_BATCH its wake-ups wait for a CPU's turn instead: a worker
// keeps its CPU, and the master finds more connections waiting each time it runs. With a new
// connection per request on 2 vCPUs, npm run bench:http measured 1.21 and 1.35 times the
// requests a second (the master's CPU per connection fell from about 15 to 8 µs, the
// workers' from 53 to 41). The policy keeps the nice value and the CPU share; it costs the
// master's work a wait for a CPU's turn, up to a scheduler time slice, while the CPUs near it
// are busy.
// Processes and threads inherit the policy: spawnWithChannel and spawnWorker start theirs
// under SCHED_OTHER (see withoutBatchScheduling); others started meanwhile (libuv's
// threadpool too, if first used then) keep SCHED_BATCH after the pool's close(). The switch
// needs no privilege; where the system refuses it, or the thread runs under a policy someone
// chose (SCHED_IDLE, a real-time one), nothing changes.
import { binding, constants } from './binding';

const { SCHED_OTHER, SCHED_BATCH } = constants;

/** How many pools on this thread want SCHED_BATCH now. */
let holders = 0;
/** This thread runs under SCHED_BATCH because of them (and goes back to SCHED_OTHER after). */
let switched = false;

/**
 * Puts this thread under SCHED_BATCH while it runs under SCHED_OTHER; the function returned
 * gives it back (once every holder has).
 */
export function holdBatchScheduling(): () => void {
  holders++;
  if (holders === 1) switched = switchPolicy(SCHED_OTHER, SCHED_BATCH);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    holders--;
    if (holders > 0 || !switched) return;
    switched = false;
    switchPolicy(SCHED_BATCH, SCHED_OTHER);
  };
}

/** Runs start (which starts a process or a thread) with this thread under SCHED_OTHER, so that it does not inherit SCHED_BATCH. */
export function withoutBatchScheduling<T>(start: () => T): T {
  if (!switched || !switchPolicy(SCHED_BATCH, SCHED_OTHER)) return start();
  try {
    return start();
  } finally {
    switchPolicy(SCHED_OTHER, SCHED_BATCH);
  }
}

/** from -> to for this thread, if it runs under from: whether it switched. */
function switchPolicy(from: number | undefined, to: number | undefined): boolean {
  if (from === undefined || to === undefined || process.platform !== 'linux') return false;
  return binding.schedulingPolicy() === from && binding.setSchedulingPolicy(to) === 0;
}
