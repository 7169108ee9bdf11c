// libuv's error numbers by name, as Node on Windows numbers system errors (the Windows addon
// returns them negative).
import { getSystemErrorMap } from 'node:util';

/** libuv's code for an error name. */
export function uvCode(name: string): number {
  for (const [code, [errName]] of getSystemErrorMap()) if (errName === name) return code;
  throw new Error(`fdpass: no system error named ${name}`);
}
