// The worker pool's messages between the master and a worker, carried as fdpass messages
// (docs/wire-format.md) over the channel the master started the worker with. The protocol,
// for workers in other languages: docs/pool-protocol.md. Integers are little-endian.
//
//   HELLO        master -> worker, first:  [1, version, flags u16], with one fd: the write end
//                                          of the worker's acknowledgement pipe
//   CONNECTIONS  master -> worker:         [2, hasData, count u16] (+ count x [length u32, bytes])
//                                          with the `count` connections' fds, in order
//   STATUS       worker -> master:         [3, 0, 0, 0, taken u32, open u32]: the worker's join,
//                                          and its acknowledgements when the pipe is full
//   ACK          worker -> master, on the acknowledgement pipe: [taken u32, open u32]
//
// Acknowledgements go to a pipe that the master does not watch: it reads it when it is about
// to hand out connections, on a short timer while connections are in flight, and when a
// worker is gone. So a worker's acknowledgement costs one write(2), and wakes nobody.
import { fdpassError } from './errors';

export const PROTOCOL_VERSION = 1;
export const HELLO = 1;
export const CONNECTIONS = 2;
export const STATUS = 3;
/** HELLO flag: send a STATUS when connections close, not only with acknowledgements (least-busy needs it). */
export const REPORT_CLOSES = 1;
/** HELLO flag: every connection is a TCP socket (the pool listens on TCP), so the worker need not ask each fd what it is. */
export const TCP_CONNECTIONS = 2;
/** HELLO flag: every connection has TCP_NODELAY set already (inherited from the listening socket). */
export const NO_DELAY = 4;
/** The environment variable that names a worker's slot in the pool: 0 .. workers - 1. */
export const WORKER_ID_VARIABLE = 'FDPASS_POOL_WORKER_ID';

/** An ACK record's size: written whole (a pipe write of up to PIPE_BUF bytes is atomic). */
export const ACK_BYTES = 8;
const HELLO_BYTES = 4;
const CONNECTIONS_HEADER_BYTES = 4;
const STATUS_BYTES = 12;

export function encodeHello(flags: number): Buffer {
  const bytes = Buffer.alloc(HELLO_BYTES);
  bytes[0] = HELLO;
  bytes[1] = PROTOCOL_VERSION;
  bytes.writeUInt16LE(flags, 2);
  return bytes;
}

/** A CONNECTIONS message's payload for `count` connections, with each one's data if any has some. */
export function encodeConnections(count: number, data: ReadonlyArray<Uint8Array | undefined> | undefined): Buffer {
  if (data === undefined) {
    const bytes = Buffer.allocUnsafe(CONNECTIONS_HEADER_BYTES);
    bytes[0] = CONNECTIONS;
    bytes[1] = 0;
    bytes.writeUInt16LE(count, 2);
    return bytes;
  }
  let length = CONNECTIONS_HEADER_BYTES;
  for (let i = 0; i < count; i++) length += 4 + (data[i]?.length ?? 0);
  const bytes = Buffer.allocUnsafe(length);
  bytes[0] = CONNECTIONS;
  bytes[1] = 1;
  bytes.writeUInt16LE(count, 2);
  let offset = CONNECTIONS_HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    const item = data[i];
    bytes.writeUInt32LE(item?.length ?? 0, offset);
    offset += 4;
    if (item !== undefined) {
      bytes.set(item, offset);
      offset += item.length;
    }
  }
  return bytes;
}

export function encodeStatus(taken: number, open: number): Buffer {
  const bytes = Buffer.alloc(STATUS_BYTES);
  bytes[0] = STATUS;
  bytes.writeUInt32LE(taken >>> 0, 4);
  bytes.writeUInt32LE(Math.min(open, 0xffff_ffff), 8);
  return bytes;
}

/** An ACK record for the acknowledgement pipe, written into `record` (ACK_BYTES long). */
export function encodeAck(record: Buffer, taken: number, open: number): Buffer {
  record.writeUInt32LE(taken >>> 0, 0);
  record.writeUInt32LE(Math.min(open, 0xffff_ffff), 4);
  return record;
}

export type PoolMessage =
  | { type: typeof HELLO; version: number; flags: number }
  | { type: typeof CONNECTIONS; count: number; data: Buffer[] | undefined }
  | { type: typeof STATUS; taken: number; open: number }
  | { type: 'unknown'; code: number };

/** What a message's payload says; a malformed one is ERR_FDPASS_BAD_MESSAGE. */
export function decodePoolMessage(bytes: Buffer): PoolMessage {
  const type = bytes[0];
  switch (type) {
    case HELLO:
      if (bytes.length < HELLO_BYTES) throw malformed('HELLO', bytes);
      return { type, version: bytes[1]!, flags: bytes.readUInt16LE(2) };
    case CONNECTIONS: {
      if (bytes.length < CONNECTIONS_HEADER_BYTES) throw malformed('CONNECTIONS', bytes);
      const count = bytes.readUInt16LE(2);
      if (bytes[1] === 0) return { type, count, data: undefined };
      const data: Buffer[] = [];
      let offset = CONNECTIONS_HEADER_BYTES;
      for (let i = 0; i < count; i++) {
        if (offset + 4 > bytes.length) throw malformed('CONNECTIONS', bytes);
        const length = bytes.readUInt32LE(offset);
        offset += 4;
        if (offset + length > bytes.length) throw malformed('CONNECTIONS', bytes);
        data.push(bytes.subarray(offset, offset + length));
        offset += length;
      }
      return { type, count, data };
    }
    case STATUS:
      if (bytes.length < STATUS_BYTES) throw malformed('STATUS', bytes);
      return { type, taken: bytes.readUInt32LE(4), open: bytes.readUInt32LE(8) };
    default:
      return { type: 'unknown', code: type ?? -1 };
  }
}

function malformed(what: string, bytes: Buffer): Error {
  return fdpassError('ERR_FDPASS_BAD_MESSAGE', `a pool ${what} message of ${bytes.length} bytes, too short for what it announces`);
}
