// The benches' C programs, compiled in the run that measures them.
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

/** Where the benches put what they build and report. */
export const out = path.join(__dirname, 'out');

/** Compiles bench/<name>.c with the system's cc (-O2) into bench/out/<name>; returns the program's path. */
export function compileC(name: string): string {
  mkdirSync(out, { recursive: true });
  const program = path.join(out, name);
  execFileSync('cc', ['-O2', '-Wall', '-o', program, path.join(__dirname, `${name}.c`)], { stdio: 'inherit' });
  return program;
}
