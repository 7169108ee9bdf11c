// What /proc tells about a process: its open fds, its memory, its children and the CPU time it used.
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';

/**
 * The targets of a process's open fds, sorted, less any on /proc or /sys: Node's runtime
 * opens those for a moment on threads of its own (glibc reading overcommit_memory, say),
 * so a listing taken then would show an fd that nobody leaked. Less tsx's cache files too
 * (/tmp/tsx-<uid>/), which tsx holds open for a moment after it has loaded a file.
 */
export function openFds(pid: number | 'self'): string[] {
  const dir = `/proc/${pid}/fd`;
  const targets: string[] = [];
  for (const name of readdirSync(dir)) {
    try {
      const target = readlinkSync(`${dir}/${name}`);
      if (!/^\/(proc|sys)\/|^\/tmp\/tsx-/.test(target)) targets.push(target);
    } catch {
      // closed between readdir and readlink: the readdir's own fd, typically
    }
  }
  return targets.sort();
}

/** Resident set size now and at its peak (VmRSS, VmHWM), in KiB. */
export function memory(pid: number | 'self'): { rssKiB: number; peakKiB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status);
    if (!match?.[1]) throw new Error(`no ${name} in /proc/${pid}/status`);
    return Number(match[1]);
  };
  return { rssKiB: field('VmRSS'), peakKiB: field('VmHWM') };
}

/** The pids of a process's children (of all its threads). */
export function children(pid: number): number[] {
  const pids: number[] = [];
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    const list = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
    if (list !== '') pids.push(...list.split(' ').map(Number));
  }
  return pids;
}

const clockTicksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

/** CPU time a process has used, user and system, in milliseconds. */
export function cpuMilliseconds(pid: number): number {
  // The fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / clockTicksPerSecond;
}
