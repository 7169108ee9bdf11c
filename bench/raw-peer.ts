// One side of a raw-stream bench run (bench/raw.ts), its socket on fd 3: a sender writing
// 64-byte records, each with one fd, or a receiver counting the bytes and the fds and closing
// each fd, over fdpass's RawStream or usocket's USocket.
//   raw-peer.ts send|receive fdpass|usocket TOTAL WARM WINDOW
// WINDOW 0: the sender writes as fast as the stream takes them. WINDOW w: at most w records
// are unacknowledged, the receiver acknowledging every ACK_EVERY with a byte back. usocket
// needs it: a write whose sendmsg finds the socket full (EAGAIN) goes out later without its fds.
// Record i starts with i (uint32 LE): the receiver checks every record's number, the byte
// count and the fd count, so a lost, repeated or reordered record or a lost fd fails the run.
// Each side prints one line "result {json}" (its CPU time over the records after the first
// WARM, and the receiver's clock then and at the end), once it has checked that no fd is open
// that was not before the stream, and that the stream's socket is closed.
import { closeSync, openSync, readlinkSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { RawStream } from 'fdpass';
import { USocket } from 'usocket';
import { openFds } from './proc';

const RECORD_BYTES = 64;
const ACK_EVERY = 32;
/** A peer that runs longer than this has hung: it says so and exits. */
const PEER_TIMEOUT_MS = Number(process.env.RAW_PEER_TIMEOUT_MS ?? 30_000);

const [side, library, totalArg, warmArg, windowArg] = process.argv.slice(2);
const total = Number(totalArg);
const warm = Number(warmArg);
const window = Number(windowArg);
/** The acknowledgements the sender needs: enough to write the last record; the receiver sends no more. */
const acksNeeded = window > 0 ? Math.max(0, Math.ceil((total - window) / ACK_EVERY)) : 0;

function fail(message: string): never {
  console.error(`raw-peer ${side} ${library}: ${message}`);
  process.exit(1);
}

function open(): Duplex {
  if (library === 'fdpass') return new RawStream(3);
  if (library === 'usocket') return new USocket({ fd: 3 });
  return fail(`unknown library ${library}`);
}

/** The fds open before the stream, less its socket: nothing else may be open once it is gone. */
function fdsToEndWith(): string[] {
  const fds = openFds('self');
  fds.splice(fds.indexOf(readlinkSync('/proc/self/fd/3')), 1);
  return fds;
}

/** What the stream's close leaves open, once it has closed. */
async function closeStream(stream: Duplex): Promise<void> {
  if (stream instanceof RawStream) {
    // Its socket closes once the poll handle has stopped: 'close'.
    const closed = new Promise((resolve) => stream.once('close', resolve));
    stream.destroy();
    await closed;
  } else {
    stream.destroy(); // usocket's closes the socket at once, and emits nothing
  }
}

/**
 * Nothing open now that was not open before (a leak), and the socket closed. Fds may have gone
 * since: tsx's hook, as it loads, tries to reach a tsx CLI parent over a socket (the bench is
 * not one), whose socket closes a few loop turns later.
 */
function checkFds(before: string[]): void {
  const unmatched = [...before];
  const leaked = openFds('self').filter((target) => {
    const at = unmatched.indexOf(target);
    if (at === -1) return true;
    unmatched.splice(at, 1);
    return false;
  });
  if (leaked.length > 0) fail(`fds open that were not before: ${leaked.join(', ')}`);
}

function report(result: Record<string, number>): void {
  console.log(`result ${JSON.stringify(result)}`);
}

async function send(): Promise<void> {
  const expected = fdsToEndWith();
  const passed = openSync('/dev/null', 'r');
  const stream = open();
  stream.on('error', (error) => fail(`stream error: ${String(error)}`));
  const write =
    stream instanceof RawStream
      ? (record: Buffer, callback?: () => void): void => void stream.writeWithFds(record, [passed], callback)
      : (record: Buffer, callback?: () => void): void => void (stream as USocket).write({ data: record, fds: [passed] }, callback);
  let acks = 0;
  let onAck: (() => void) | undefined;
  if (window > 0) {
    stream.on('data', (chunk: Buffer) => {
      acks += chunk.length;
      onAck?.();
    });
  }
  const acknowledged = (count: number): Promise<void> | undefined =>
    acks >= count
      ? undefined
      : new Promise<void>((resolve) => {
          onAck = () => {
            if (acks < count) return;
            onAck = undefined;
            resolve();
          };
        });
  let cpu = process.cpuUsage();
  let lastWritten: Promise<void> = Promise.resolve();
  for (let i = 0; i < total; i++) {
    if (i === warm) cpu = process.cpuUsage();
    if (window > 0 && i - acks * ACK_EVERY >= window) await acknowledged(Math.ceil((i - window + 1) / ACK_EVERY));
    const record = Buffer.allocUnsafe(RECORD_BYTES); // only its number is checked
    record.writeUInt32LE(i, 0);
    if (i === total - 1) lastWritten = new Promise((resolve) => write(record, resolve));
    else write(record);
    // usocket's write() returns nothing: both streams' writableNeedDrain says what write() would.
    if (stream.writableNeedDrain) await new Promise((resolve) => stream.once('drain', resolve));
  }
  await lastWritten;
  const used = process.cpuUsage(cpu);
  // Every acknowledgement read: a socket closed with unread bytes is ECONNRESET at the other end.
  await acknowledged(acksNeeded);
  // What was written is in the kernel now: the receiver reads it after this end is closed.
  await closeStream(stream);
  closeSync(passed);
  checkFds(expected);
  report({ cpuMicroseconds: used.user + used.system });
}

async function receive(): Promise<void> {
  const expected = fdsToEndWith();
  const stream = open();
  const totalBytes = total * RECORD_BYTES;
  let bytes = 0;
  let fds = 0;
  let sequence = 0;
  let cpu = process.cpuUsage();
  let warmAt = process.hrtime.bigint();
  let warmed = false;
  let acksSent = 0;
  const acknowledge = (): void => {
    const due = Math.min(acksNeeded, Math.floor(bytes / RECORD_BYTES / ACK_EVERY)) - acksSent;
    if (due <= 0) return;
    acksSent += due;
    stream.write(Buffer.alloc(due));
  };
  // Each library's way to close what it gave: RawStream's closeFds (one native call for them
  // all), fs.closeSync for usocket's numbers.
  const closeAll =
    stream instanceof RawStream
      ? (received: readonly number[]) => stream.closeFds(received)
      : (received: readonly number[]) => received.forEach((fd) => closeSync(fd));
  const takeFds = (received: readonly number[]): void => {
    closeAll(received);
    fds += received.length;
    // fds come with or before their record's bytes, never before the record's write.
    if (fds > Math.floor(bytes / RECORD_BYTES) + 1 + 256) fail(`${fds} fds after ${bytes} bytes`);
  };
  const finished = new Promise<void>((resolve) => {
    const takeBytes = (chunk: Buffer): void => {
      // Reads the record number wherever the chunk cuts the record: byte by byte at a record's start.
      for (let i = 0; i < chunk.length;) {
        const inRecord = bytes % RECORD_BYTES;
        if (inRecord < 4) {
          sequence |= chunk[i]! << (8 * inRecord);
          if (inRecord === 3) {
            const record = bytes >> 6; // RECORD_BYTES is 64
            if (sequence >>> 0 !== record) fail(`record ${record} carries number ${sequence >>> 0}`);
            sequence = 0;
          }
          i++;
          bytes++;
        } else {
          const skip = Math.min(RECORD_BYTES - inRecord, chunk.length - i);
          i += skip;
          bytes += skip;
        }
      }
      if (acksSent < acksNeeded) acknowledge();
      if (!warmed && bytes >= warm * RECORD_BYTES) {
        warmed = true;
        warmAt = process.hrtime.bigint();
        cpu = process.cpuUsage();
      }
      if (bytes > totalBytes) fail(`${bytes} bytes, more than the ${totalBytes} sent`);
      if (bytes === totalBytes) {
        if (fds !== total) fail(`${fds} fds arrived with ${total} records (${total - fds} lost)`);
        resolve();
      }
    };
    stream.on('end', () => {
      if (bytes < totalBytes) fail(`EOF after ${bytes} of ${totalBytes} bytes, ${fds} fds`);
    });
    stream.on('error', (error) => fail(`stream error after ${bytes} bytes, ${fds} fds: ${String(error)}`));
    if (stream instanceof RawStream) {
      stream.on('fds', takeFds);
      stream.on('data', takeBytes);
      return;
    }
    // usocket: read(length, count) takes bytes and fds together; its 'fds' event leaves them queued.
    const usocket = stream as USocket;
    usocket.on('readable', () => {
      for (;;) {
        const read = usocket.read(null, null);
        if (read === null || (read.data === null && read.fds.length === 0)) return;
        if (read.fds.length > 0) takeFds(read.fds);
        if (read.data !== null) takeBytes(read.data);
      }
    });
  });
  await finished;
  const endAt = process.hrtime.bigint();
  const used = process.cpuUsage(cpu);
  await closeStream(stream);
  checkFds(expected);
  report({
    cpuMicroseconds: used.user + used.system,
    warmAtNanoseconds: Number(warmAt),
    endAtNanoseconds: Number(endAt),
    bytes,
    fds,
  });
}

setTimeout(() => fail(`still running after ${PEER_TIMEOUT_MS} ms`), PEER_TIMEOUT_MS);
// The bench gone (its end of stdin closed): so is the reason to run.
process.stdin.on('end', () => fail('the bench went away'));
process.stdin.resume();
(side === 'send' ? send() : side === 'receive' ? receive() : Promise.reject(new Error(`unknown side ${side}`))).then(
  () => process.exit(0),
  (error: unknown) => fail(String(error)),
);
