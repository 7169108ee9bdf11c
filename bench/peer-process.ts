// A benchmark's other process: waiting for what it prints, and for its exit.
import type { ChildProcess } from 'node:child_process';

export interface Peer {
  child: ChildProcess;
  /** Resolves when the peer prints `line`. */
  printed(line: string): Promise<void>;
  /** Resolves with the rest of the first line the peer prints that starts with `prefix`. */
  reported(prefix: string): Promise<string>;
}

interface Waiter {
  /** What the waiter waits for in the lines printed so far, or undefined. */
  find(lines: string[]): string | undefined;
  resolve(found: string): void;
  reject(error: Error): void;
}

export function watchLines(child: ChildProcess): Peer {
  let seen = '';
  let waiters: Waiter[] = [];
  const settle = (): void => {
    const lines = seen.split('\n');
    waiters = waiters.filter((waiter) => {
      const found = waiter.find(lines);
      if (found !== undefined) waiter.resolve(found);
      return found === undefined;
    });
  };
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    seen += chunk;
    settle();
  });
  child.once('exit', (code) => {
    if (code === 0) return;
    for (const waiter of waiters.splice(0)) waiter.reject(new Error(`peer exited with ${code}`));
  });
  const waitFor = (find: Waiter['find']): Promise<string> =>
    new Promise((resolve, reject) => {
      if (child.exitCode !== null && child.exitCode !== 0) return reject(new Error(`peer exited with ${child.exitCode}`));
      waiters.push({ find, resolve, reject });
      settle();
    });
  return {
    child,
    printed: async (line) => {
      await waitFor((lines) => (lines.includes(line) ? '' : undefined));
    },
    // Only complete lines: the last one of the split may still be being written.
    reported: (prefix) =>
      waitFor((lines) =>
        lines
          .slice(0, -1)
          .find((line) => line.startsWith(prefix))
          ?.slice(prefix.length),
      ),
  };
}

export async function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  await new Promise((resolve) => child.once('exit', resolve));
}
