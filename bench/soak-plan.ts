// The soak's traffic (bench/soak.ts), generated alike on both sides from a seed, so that the
// receiver knows what the next message on each channel must be: bare fd or message, its bytes,
// and which of the sender's source files each of its fds is.
import { createCipheriv } from 'node:crypto';
import { fstatSync } from 'node:fs';
import type { ReceivedMessage } from 'fdpass';

export const SOCKET_TYPES = ['stream', 'seqpacket', 'dgram'] as const;
export const MAX_FDS_PER_MESSAGE = 16;
// 64 KiB plus two headers is far below what a Unix seqpacket or dgram socket accepts in one
// packet (its send buffer, net.core.wmem_default, 208 KiB by default).
export const MAX_PAYLOAD_BYTES = 64 * 1024;
const BARE_SHARE = 0.5;
const ECHO_SHARE = 1 / 8;

// A message's data starts with a kind and a number: an item's sequence number on its channel,
// or a checkpoint's index. Then, for an item, a slice of the pool.
const ITEM = 0;
const CHECKPOINT = 1;
const HEADER_BYTES = 5;

/**
 * Seeded pseudo-random bytes: AES-128-CTR's keystream, keyed by the seed and a stream
 * number, so each side and each channel can draw the same sequence.
 */
function keystream(seed: number, stream: number): (bytes: number) => Buffer {
  const key = Buffer.alloc(16);
  key.writeInt32LE(seed | 0, 0);
  key.writeUInt32LE(stream, 4);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  return (bytes) => cipher.update(Buffer.alloc(bytes));
}

/** Seeded numbers, uniform in [0, 1). */
export function random(seed: number, stream: number): () => number {
  const next = keystream(seed, stream);
  let block: Buffer = Buffer.alloc(0);
  let at = 0;
  return () => {
    if (at === block.length) {
      block = next(4096);
      at = 0;
    }
    at += 4;
    return block.readUInt32LE(at - 4) / 2 ** 32;
  };
}

const below = (next: () => number, n: number): number => Math.floor(next() * n);

// Payloads are slices of one pseudo-random pool, the same on both sides.
const pool = keystream(0, 0)(2 * MAX_PAYLOAD_BYTES);

/** One message of the soak: a bare fd, or data with 0..16 fds. */
export interface Item {
  readonly seq: number;
  readonly bare: boolean;
  /** Indexes into the sender's sources, one per fd, in order. */
  readonly sources: number[];
  readonly offset: number;
  readonly length: number;
  /** The receiver sends it back. */
  readonly echo: boolean;
}

/** The items of the channel of socket type `type`, in the order they are sent on it. */
export class Plan {
  readonly #next: () => number;
  readonly #sourceCount: number;
  #seq = 0;

  constructor(seed: number, type: number, sourceCount: number) {
    this.#next = random(seed, 1 + type);
    this.#sourceCount = sourceCount;
  }

  next(): Item {
    const next = this.#next;
    const bare = next() < BARE_SHARE;
    const fdCount = bare ? 1 : below(next, MAX_FDS_PER_MESSAGE + 1);
    const sources = Array.from({ length: fdCount }, () => below(next, this.#sourceCount));
    const length = bare ? 0 : below(next, MAX_PAYLOAD_BYTES + 1);
    const offset = bare ? 0 : below(next, pool.length - length + 1);
    return { seq: this.#seq++, bare, sources, offset, length, echo: next() < ECHO_SHARE };
  }

  /** The next item that the receiver echoes. */
  nextEchoed(): Item {
    for (;;) {
      const item = this.next();
      if (item.echo) return item;
    }
  }
}

/** An item's data, written into scratch (Channel.send copies it at the call). */
export function itemData(item: Item, scratch: Buffer): Buffer {
  scratch[0] = ITEM;
  scratch.writeUInt32LE(item.seq, 1);
  pool.copy(scratch, HEADER_BYTES, item.offset, item.offset + item.length);
  return scratch.subarray(0, HEADER_BYTES + item.length);
}

export function checkpointData(index: number): Buffer {
  const data = Buffer.alloc(HEADER_BYTES);
  data[0] = CHECKPOINT;
  data.writeUInt32LE(index, 1);
  return data;
}

/** The index of the checkpoint that message is, or -1 if it is an item. */
export function checkpointIndex(message: ReceivedMessage): number {
  return message.data.length === HEADER_BYTES && message.data[0] === CHECKPOINT ? message.data.readUInt32LE(1) : -1;
}

/** A file's identity, the same in every process that has it open. */
export function identify(fd: number): string {
  const { dev, ino } = fstatSync(fd);
  return `${dev}:${ino}`;
}

/** What is wrong with message if it is meant to be item, or undefined if nothing is. */
export function mismatch(item: Item, message: ReceivedMessage, identities: readonly string[]): string | undefined {
  const { data, fds } = message;
  if (item.bare !== (data.length === 0)) return `item ${item.seq}: expected ${item.bare ? 'a bare fd' : 'a message'}`;
  if (!item.bare) {
    const seq = data.length >= HEADER_BYTES && data[0] === ITEM ? data.readUInt32LE(1) : -1;
    if (seq !== item.seq) return `item ${item.seq}: got a message numbered ${seq}`;
    if (!data.subarray(HEADER_BYTES).equals(pool.subarray(item.offset, item.offset + item.length))) {
      return `item ${item.seq}: ${data.length - HEADER_BYTES} bytes of payload that differ from the ${item.length} sent`;
    }
  }
  if (fds.length !== item.sources.length) return `item ${item.seq}: ${fds.length} fds, expected ${item.sources.length}`;
  for (const [i, fd] of fds.entries()) {
    const expected = identities[item.sources[i]!];
    const got = identify(fd);
    if (got !== expected) return `item ${item.seq}: fd ${i} is ${got}, expected source ${item.sources[i]} (${expected})`;
  }
  return undefined;
}
