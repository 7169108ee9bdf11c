// What /proc tells about a process: its open fds and its memory.
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';

/**
 * The targets of a process's open fds, sorted, less any on /proc or /sys: Node's runtime
 * opens those for a moment on threads of its own (glibc reading overcommit_memory, say),
 * so a listing taken then would show an fd that nobody leaked.
 */
export function openFds(pid: number | 'self'): string[] {
  const dir = `/proc/${pid}/fd`;
  const targets: string[] = [];
  for (const name of readdirSync(dir)) {
    try {
      const target = readlinkSync(`${dir}/${name}`);
      if (!/^\/(proc|sys)\//.test(target)) targets.push(target);
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
