// V8's heap, for memory samples that show what a process retains rather than its garbage.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/**
 * A full collection, a pause, and another: V8 frees ArrayBuffers' memory on a background
 * thread after a collection, so a sample taken right after one can still count garbage Buffers.
 */
export async function collectGarbage(): Promise<void> {
  gc();
  await new Promise((resolve) => setTimeout(resolve, 50));
  gc();
}

/** What JavaScript holds, in KiB: the live objects on V8's heap and the memory of Buffers. */
export function heldByJsKiB(): number {
  const { heapUsed, external } = process.memoryUsage();
  return Math.round((heapUsed + external) / 1024);
}
