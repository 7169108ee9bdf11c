// Where frames that must wait for the socket are copied. A frame's own ArrayBuffer costs
// microseconds (an allocation outside V8's heap, and its sweeping): more than sending it. So
// frames are copied one after another into a slab, one per thread, shared by every channel's
// queue, and the slab is written from its start again once none of its frames waits any more.
// A queue batches the frames that lie in one slab into one sendmmsg.
import { writeFrameHeader, type Outgoing } from './outgoing';
import { MESSAGE_HEADER_BYTES } from './framing';

const SLAB_BYTES = 256 * 1024;
// A larger frame gets a buffer of its own: a slab is for many frames.
const LARGEST_IN_SLAB = 16 * 1024;

let slab: Uint8Array | null = null;
let used = 0;
/** Frames in the current slab that still wait. */
let waiting = 0;

/** Copies outgoing's frame (header and payload) to where it can wait: outgoing.frame. */
export function holdFrame(outgoing: Outgoing): void {
  const bytes = outgoing.frameBytes;
  let target: Uint8Array;
  let start = 0;
  if (bytes > LARGEST_IN_SLAB) {
    target = Buffer.allocUnsafeSlow(bytes);
  } else {
    if (slab === null || used + bytes > SLAB_BYTES) {
      slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
      used = 0;
      waiting = 0;
    }
    target = slab;
    start = used;
    used += bytes;
    waiting++;
  }
  writeFrameHeader(outgoing, target, start);
  target.set(outgoing.payload, start + MESSAGE_HEADER_BYTES);
  outgoing.frame = target;
  outgoing.frameStart = start;
}

/** outgoing no longer waits (sent, failed or dropped): its room may be written again. */
export function releaseFrame(outgoing: Outgoing): void {
  if (outgoing.frame !== null && outgoing.frame === slab && --waiting === 0) used = 0;
  outgoing.frame = null;
}
