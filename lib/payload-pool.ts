// Where received payloads are copied to. Node carves Buffers under 4 KiB out of an 8 KiB pool
// (Buffer.allocUnsafe); a larger one gets an ArrayBuffer of its own, which costs microseconds
// (an allocation outside V8's heap, and its sweeping later): more than receiving a 4 KiB
// message. So payloads up to 16 KiB are carved out of 64 KiB slabs, one set per thread, the
// way Node carves smaller ones out of its pool; as there, a payload kept keeps its slab.

const SLAB_BYTES = 64 * 1024;
const LARGEST_IN_SLAB = 16 * 1024;
/** Node's own pool takes what is smaller than this. */
const NODE_POOLS_BELOW = Buffer.poolSize >>> 1;

let slab: Buffer | null = null;
let used = 0;

/** An uninitialized Buffer of `length` bytes, for a payload to be copied into. */
export function allocPayload(length: number): Buffer {
  if (length < NODE_POOLS_BELOW || length > LARGEST_IN_SLAB) return Buffer.allocUnsafe(length);
  if (slab === null || used + length > SLAB_BYTES) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
    used = 0;
  }
  const payload = slab.subarray(used, used + length);
  used += (length + 7) & ~7; // 8-byte aligned, as Node's pool aligns
  return payload;
}

/** A copy of bytes[start..end). */
export function copyPayload(bytes: Uint8Array, start: number, end: number): Buffer {
  const payload = allocPayload(end - start);
  payload.set(bytes.subarray(start, end));
  return payload;
}
