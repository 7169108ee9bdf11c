// The part of usocket's API (it ships no types) that bench/raw-peer.ts uses.
declare module 'usocket' {
  import { Duplex } from 'node:stream';
  export class USocket extends Duplex {
    /** { fd }: adopts a connected socket. */
    constructor(options: { fd: number });
    // write({ data, fds }) (Duplex's write(chunk: any) types it): the fds go with the first
    // byte of data; it returns nothing, not write()'s backpressure signal.
    /** With a second argument: { data, fds }, the bytes buffered (length null: all) and `count` fds (null: all). */
    read(length: number | null, count: number | null): { data: Buffer | null; fds: number[] } | null;
    read(size?: number): unknown;
    destroy(): this;
  }
}
