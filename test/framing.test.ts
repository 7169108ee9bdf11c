// The message codec alone, with fake fd numbers: encode, feed back in every kind of split,
// and check every message, error and fd closure exactly.
import { describe, expect, it } from 'vitest';
import {
  MAX_FDS_PER_FRAME,
  MESSAGE_HEADER_BYTES,
  StreamDecoder,
  TAG_BARE_FD,
  TAG_FRAME,
  encodeHeader,
  isBareFd,
  validateFramingLimits,
  writeHeader,
  type FramingLimits,
} from '../lib/framing';
import {
  FakeFds,
  QueueDecoder,
  decodePacketWithFds,
  expected,
  isDecodeError,
  streamOf,
  summary,
  wireBytes,
  type DecodeOutcome,
  type TestMessage,
} from './decoder-harness';
import { binding } from '../lib/binding';

const SEED = Number(process.env.FRAMING_SEED ?? 0x5eed_f00d);
console.log(`framing tests: seed ${SEED} (rerun with FRAMING_SEED=${SEED})`);

/** mulberry32: small, seedable, good enough to pick sizes and splits. */
function random(seed: number): (below: number) => number {
  let state = seed >>> 0;
  return (below) => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * below);
  };
}

const roomy: FramingLimits = { maxPayloadBytes: 1024 * 1024, maxFdsPerMessage: MAX_FDS_PER_FRAME };

/** Seeded bytes, four at a time from a xorshift the seeded generator starts. */
function randomBytes(count: number, rand: (below: number) => number): Buffer {
  const bytes = Buffer.alloc(count);
  let x = rand(2 ** 31) | 1;
  for (let i = 0; i < count; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    for (let j = 0; j < 4 && i + j < count; j++) bytes[i + j] = (x >>> (8 * j)) & 0xff;
  }
  return bytes;
}

/**
 * Feeds a stream to a decoder in reads of the given sizes, each read's fds being those of
 * the messages that start within it, through reused buffers that are scribbled over after
 * every push (the decoder must have copied what it kept).
 */
function feed(
  decoder: QueueDecoder,
  messages: TestMessage[],
  readSizes: (remaining: number) => number,
  { fdsAhead = (): number => 0 }: { fdsAhead?: () => number } = {},
): DecodeOutcome[] {
  const { stream, starts } = streamOf(messages);
  const scratch = new Uint8Array(stream.length + 16);
  const fdScratch = new Int32Array(messages.reduce((sum, message) => sum + message.fds.length, 0) + 8);
  const outcomes: DecodeOutcome[] = [];
  let next = 0; // the next message whose fds are still to deliver
  let at = 0;
  while (at < stream.length) {
    const size = Math.max(1, Math.min(readSizes(stream.length - at), stream.length - at));
    const fds: number[] = [];
    // Kernel order: a message's fds come with the read holding its first byte, or earlier
    // (fdsAhead: with the fds of up to that many messages after it).
    let last = next;
    while (last < messages.length && starts[last]! < at + size) last++;
    last = Math.min(messages.length, last + fdsAhead());
    while (next < last) fds.push(...messages[next++]!.fds);
    const offset = (at + fds.length) % 7;
    scratch.set(stream.subarray(at, at + size), offset);
    fdScratch.set(fds, 3);
    decoder.push(scratch, offset, size, fdScratch, 3, fds.length, outcomes);
    scratch.fill(0xee, offset, offset + size);
    fdScratch.fill(-1, 3, 3 + fds.length);
    at += size;
  }
  return outcomes;
}

function randomMessages(fakeFds: FakeFds, count: number, rand: (below: number) => number, maxBytes = 256 * 1024): TestMessage[] {
  const messages: TestMessage[] = [];
  for (let i = 0; i < count; i++) {
    const kind = rand(10);
    let bytes: number;
    let nfds: number;
    if (kind < 3)
      [bytes, nfds] = [0, 1]; // a bare fd
    else if (kind === 3) [bytes, nfds] = [0, rand(3) === 0 ? 0 : 2 + rand(MAX_FDS_PER_FRAME - 1)];
    else if (kind === 4) [bytes, nfds] = [rand(maxBytes + 1), rand(MAX_FDS_PER_FRAME + 1)];
    else [bytes, nfds] = [rand(200), rand(4)];
    messages.push({ data: randomBytes(bytes, rand), fds: fakeFds.issue(nfds) });
  }
  return messages;
}

function expectIdle(decoder: QueueDecoder): void {
  expect(decoder.inFrame).toBe(false);
  expect(decoder.heldFds).toBe(0);
  expect(decoder.heldBytes).toBe(0);
  expect(decoder.failed).toBe(false);
  expect(decoder.end()).toBeNull();
}

const message = (fakeFds: FakeFds, data: string | Buffer, nfds: number): TestMessage => ({
  data: typeof data === 'string' ? Buffer.from(data) : data,
  fds: fakeFds.issue(nfds),
});

describe('the header', () => {
  it('is tag 0x01, reserved 0x00, nfds uint16 LE, length uint32 LE', () => {
    expect(MESSAGE_HEADER_BYTES).toBe(8);
    expect(binding.constants.MESSAGE_HEADER_BYTES).toBe(MESSAGE_HEADER_BYTES); // the addon bounds reads with its own copy
    expect([TAG_BARE_FD, TAG_FRAME]).toEqual([0, 1]);
    expect(encodeHeader(5, 2).toString('hex')).toBe('0100020005000000');
    expect(encodeHeader(0x0403_0201, 253).toString('hex')).toBe('0100fd0001020304');
    expect(encodeHeader(0xffff_ffff, 0).toString('hex')).toBe('01000000ffffffff');
    expect(encodeHeader(0, 0).toString('hex')).toBe('0100000000000000');
    const target = new Uint8Array(12).fill(0xaa);
    writeHeader(target, 3, 0x1_0000, 0x80);
    expect(Buffer.from(target).toString('hex')).toBe('aaaaaa0100800000000100aa');
  });

  it('rejects lengths and fd counts the format cannot carry', () => {
    expect(() => encodeHeader(2 ** 32, 0)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => encodeHeader(-1, 0)).toThrow(RangeError);
    expect(() => encodeHeader(1.5, 0)).toThrow(RangeError);
    expect(() => encodeHeader(0, 254)).toThrow(/"nfds" is out of range/);
    expect(() => encodeHeader('5' as unknown as number, 0)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
  });

  it('a message with no data and exactly one fd, and only that, goes as a bare fd', () => {
    expect(isBareFd(0, 1)).toBe(true);
    expect([isBareFd(0, 0), isBareFd(0, 2), isBareFd(1, 1), isBareFd(1, 0)]).toEqual([false, false, false, false]);
  });

  it('limits are validated', () => {
    expect(validateFramingLimits({ maxPayloadBytes: 0, maxFdsPerMessage: 253 })).toEqual({ maxPayloadBytes: 0, maxFdsPerMessage: 253 });
    expect(() => new StreamDecoder({ maxPayloadBytes: 10, maxFdsPerMessage: 254 })).toThrow(/maxFdsPerMessage/);
    expect(() => new StreamDecoder({ maxPayloadBytes: -1, maxFdsPerMessage: 1 })).toThrow(/maxPayloadBytes/);
    expect(() => new StreamDecoder(null as unknown as FramingLimits)).toThrow(/limits/);
  });
});

describe('StreamDecoder round trips', () => {
  const splits: [string, (rand: (below: number) => number) => (remaining: number) => number][] = [
    ['one byte at a time', () => () => 1],
    ['random chunk sizes', (rand) => () => [1 + rand(9), 1 + rand(100), 1 + rand(5000), 1 + rand(100_000)][rand(4)]!],
    ['everything in one read', () => (remaining) => remaining],
  ];
  for (const [name, makeSplit] of splits) {
    it(`decodes random messages fed ${name}`, () => {
      const rand = random(SEED + name.length);
      const fakeFds = new FakeFds();
      // Byte-at-a-time reads stay in the hundreds of thousands: small messages, with one at the 256 KiB top.
      const messages =
        name === 'one byte at a time'
          ? [
              ...randomMessages(fakeFds, 150, rand, 1024),
              message(fakeFds, Buffer.alloc(256 * 1024, 0x5a), 253),
              ...randomMessages(fakeFds, 50, rand, 1024),
            ]
          : randomMessages(fakeFds, 300, rand);
      const decoder = new QueueDecoder(roomy, fakeFds.close);
      const outcomes = feed(decoder, messages, makeSplit(rand));
      expect(summary(outcomes)).toEqual(expected(messages));
      expect(fakeFds.closed).toEqual([]);
      expectIdle(decoder);
    });
  }

  it('fds that arrive with a read before their message begins belong to no message: the stream ends, every fd closed once', () => {
    const fakeFds = new FakeFds();
    const messages = [message(fakeFds, 'abc', 2), message(fakeFds, '', 1), message(fakeFds, 'de', 3), message(fakeFds, '', 0)];
    const decoder = new QueueDecoder(roomy, fakeFds.close);
    const outcomes = feed(decoder, messages, () => 3, { fdsAhead: () => messages.length });
    expect(summary(outcomes)).toEqual([{ code: 'ERR_FDPASS_BAD_MESSAGE' }]);
    expect((outcomes[0] as Error).message).toBe(
      '4 fd(s) arrived that no message declared; the stream cannot be read further and its 6 received fd(s) were closed',
    );
    expect(decoder.failed).toBe(true);
    fakeFds.expectAccountedFor(outcomes);
  });

  it('whatever reads bring fds ahead of their messages, each fd is delivered or closed exactly once', () => {
    const rand = random(SEED ^ 0xf1f0);
    for (let round = 0; round < 20; round++) {
      const fakeFds = new FakeFds();
      const messages = randomMessages(fakeFds, 40, rand, 2000);
      const decoder = new QueueDecoder(roomy, fakeFds.close);
      const outcomes = feed(decoder, messages, () => 1 + rand(3000), { fdsAhead: () => (rand(4) === 0 ? 1 + rand(3) : 0) });
      decoder.end();
      fakeFds.expectAccountedFor(outcomes);
      // Every message before the first error arrived whole and in order.
      const firstError = outcomes.findIndex(isDecodeError);
      const good = firstError === -1 ? outcomes : outcomes.slice(0, firstError);
      expect(summary(good)).toEqual(expected(messages).slice(0, good.length));
    }
  });

  it('reads payload lengths of 2 GiB and more as unsigned', () => {
    const fakeFds = new FakeFds();
    const decoder = new QueueDecoder({ maxPayloadBytes: 0x7fff_ffff, maxFdsPerMessage: 1 }, fakeFds.close);
    const outcomes = decoder.push(encodeHeader(0xffff_fffe, 0), 0, 8, [], 0, 0);
    expect(outcomes).toMatchObject([
      {
        code: 'ERR_FDPASS_MESSAGE_TOO_LARGE',
        message: expect.stringMatching(/^a message of 4294967294 bytes exceeds maxPayloadBytes \(2147483647\)/),
      },
    ]);
    expect(decoder.end()).toMatchObject({ message: 'the stream ended within a frame (0 of 4294967294 payload bytes)' });
  });

  it('pauses at a message boundary when the sink asks, and goes on from there', () => {
    const fakeFds = new FakeFds();
    const messages = [message(fakeFds, 'one', 1), message(fakeFds, '', 1), message(fakeFds, 'three', 2)];
    const { stream } = streamOf(messages);
    const decoder = new QueueDecoder(roomy, fakeFds.close);
    const all = messages.flatMap((m) => m.fds);
    const outcomes: DecodeOutcome[] = [];
    decoder.paused = true;
    decoder.push(stream, 0, stream.length, all, 0, all.length, outcomes);
    expect([decoder.lastConsumed, outcomes.length]).toEqual([0, 0]);
    // One message at a time: the sink pauses as soon as one more is out.
    let at = 0;
    while (at < stream.length) {
      const before = outcomes.length;
      decoder.paused = () => outcomes.length > before;
      const rest = stream.subarray(at);
      decoder.pushRest(rest, 0, rest.length, outcomes);
      at += decoder.lastConsumed;
      expect(outcomes.length).toBe(before + 1);
    }
    expect(summary(outcomes)).toEqual(expected(messages));
  });

  it('copies: the caller may reuse its buffers right after push', () => {
    const fakeFds = new FakeFds();
    const wire = new Uint8Array(wireBytes({ data: Buffer.from('hello'), fds: [1, 2] }));
    const fds = new Int32Array([7, 8]);
    const decoder = new QueueDecoder(roomy, fakeFds.close);
    const [outcome] = decoder.push(wire, 0, wire.length, fds, 0, 2);
    wire.fill(0);
    fds.fill(0);
    expect(summary([outcome!])).toEqual([{ data: Buffer.from('hello').toString('hex'), fds: [7, 8] }]);
    expect(isDecodeError(outcome!) || outcome!.data.buffer === wire.buffer).toBe(false);
  });

  it('a bare fd alone in a read is one message with empty data', () => {
    const fakeFds = new FakeFds();
    const [fd] = fakeFds.issue(1);
    const decoder = new QueueDecoder(roomy, fakeFds.close);
    const outcomes = decoder.push(new Uint8Array([0]), 0, 1, [fd!], 0, 1);
    expect(outcomes).toHaveLength(1);
    expect(isDecodeError(outcomes[0]!)).toBe(false);
    expect(outcomes[0]).toEqual({ data: Buffer.alloc(0), fds: [fd] });
    expectIdle(decoder);
  });

  it('appends to the array it is given', () => {
    const decoder = new QueueDecoder(roomy, () => {});
    const out: DecodeOutcome[] = [];
    expect(decoder.push(new Uint8Array([0, 0]), 0, 2, [5, 6], 0, 2, out)).toBe(out);
    expect(out.map((outcome) => (isDecodeError(outcome) ? outcome : outcome.fds))).toEqual([[5], [6]]);
  });
});

describe('StreamDecoder limits', () => {
  const limits: FramingLimits = { maxPayloadBytes: 100, maxFdsPerMessage: 4 };
  const byteAtATime = (): number => 1;

  it('drops a payload over maxPayloadBytes without buffering it, closes its fds, and goes on', () => {
    const fakeFds = new FakeFds();
    const messages = [
      message(fakeFds, 'before', 1),
      message(fakeFds, Buffer.alloc(101, 1), 3),
      message(fakeFds, Buffer.alloc(100, 2), 4),
      message(fakeFds, '', 1),
    ];
    const decoder = new QueueDecoder(limits, fakeFds.close);
    const heldBytes: number[] = [];
    const { stream } = streamOf(messages);
    // One byte at a time, watching what the decoder holds while it skips.
    const outcomes: DecodeOutcome[] = [];
    let next = 0;
    const starts = streamOf(messages).starts;
    for (let at = 0; at < stream.length; at++) {
      const fds = at === starts[next] ? messages[next++]!.fds : [];
      decoder.push(stream, at, 1, fds, 0, fds.length, outcomes);
      if (next === 2) heldBytes.push(decoder.heldBytes);
    }
    expect(summary(outcomes)).toEqual([expected(messages)[0], { code: 'ERR_FDPASS_MESSAGE_TOO_LARGE' }, ...expected(messages).slice(2)]);
    expect(Math.max(...heldBytes.slice(0, 101 + 8))).toBe(0);
    expect(fakeFds.closed).toEqual(messages[1]!.fds);
    expect((outcomes[1] as Error).message).toBe(
      'a message of 101 bytes exceeds maxPayloadBytes (100); it was dropped; its 3 fd(s) were closed',
    );
    fakeFds.expectAccountedFor(outcomes);
    expectIdle(decoder);
  });

  it('drops a message with more fds than maxFdsPerMessage, closes them, and goes on', () => {
    const fakeFds = new FakeFds();
    const messages = [message(fakeFds, 'x', 5), message(fakeFds, '', 5), message(fakeFds, 'ok', 4)];
    const decoder = new QueueDecoder(limits, fakeFds.close);
    const outcomes = feed(decoder, messages, byteAtATime);
    expect(summary(outcomes)).toEqual([{ code: 'ERR_FDPASS_TOO_MANY_FDS' }, { code: 'ERR_FDPASS_TOO_MANY_FDS' }, expected(messages)[2]]);
    expect(fakeFds.closed).toEqual([...messages[0]!.fds, ...messages[1]!.fds]);
    fakeFds.expectAccountedFor(outcomes);
    expectIdle(decoder);
  });

  it('reports one error, payload first, for a message over both limits', () => {
    const fakeFds = new FakeFds();
    const messages = [message(fakeFds, Buffer.alloc(1000), 9), message(fakeFds, 'next', 0)];
    const decoder = new QueueDecoder(limits, fakeFds.close);
    const outcomes = feed(decoder, messages, (remaining) => remaining);
    expect(summary(outcomes)).toEqual([{ code: 'ERR_FDPASS_MESSAGE_TOO_LARGE' }, expected(messages)[1]]);
    fakeFds.expectAccountedFor(outcomes);
  });

  it('with maxFdsPerMessage 0, a bare fd is too many fds; with maxPayloadBytes 0, only empty messages pass', () => {
    const fakeFds = new FakeFds();
    const messages = [message(fakeFds, '', 1), message(fakeFds, '', 0), message(fakeFds, 'a', 0)];
    const decoder = new QueueDecoder({ maxPayloadBytes: 0, maxFdsPerMessage: 0 }, fakeFds.close);
    const outcomes = feed(decoder, messages, () => 2);
    expect(summary(outcomes)).toEqual([
      { code: 'ERR_FDPASS_TOO_MANY_FDS' },
      expected(messages)[1],
      { code: 'ERR_FDPASS_MESSAGE_TOO_LARGE' },
    ]);
    fakeFds.expectAccountedFor(outcomes);
    expectIdle(decoder);
  });
});

describe('StreamDecoder protocol errors', () => {
  /** Pushes raw bytes with fds, the way one read delivers them. */
  const push = (decoder: QueueDecoder, bytes: number[] | Buffer, fds: number[] = []): DecodeOutcome[] =>
    decoder.push(Uint8Array.from(bytes), 0, bytes.length, fds, 0, fds.length);

  it('fails for good at an unknown tag, reports it once, and closes every fd it holds and gets', () => {
    const fakeFds = new FakeFds();
    const decoder = new QueueDecoder(roomy, fakeFds.close);
    const [good, later, afterwards] = [fakeFds.issue(1), fakeFds.issue(2), fakeFds.issue(1)];
    // A bare fd, then garbage whose read also brought fds.
    const outcomes = push(decoder, [0x00, 0x02, 0x01, 0x00], [...good, ...later]);
    expect(summary(outcomes)).toEqual([{ data: '', fds: good }, { code: 'ERR_FDPASS_BAD_MESSAGE' }]);
    expect((outcomes[1] as Error).message).toBe(
      'unknown message tag 0x02 (expected 0x00, a bare fd, or 0x01, a frame); the stream cannot be read further and its 2 received fd(s) were closed',
    );
    expect(decoder.failed).toBe(true);
    expect(fakeFds.closed).toEqual(later);
    expect(push(decoder, [0x00], afterwards)).toEqual([]);
    expect(fakeFds.closed).toEqual([...later, ...afterwards]);
    expect(decoder.heldFds).toBe(0);
    fakeFds.expectAccountedFor(outcomes);
  });

  it('fails at a non-zero reserved byte as soon as it arrives', () => {
    const fakeFds = new FakeFds();
    const decoder = new QueueDecoder(roomy, fakeFds.close);
    const fds = fakeFds.issue(2);
    expect(push(decoder, [0x01], fds)).toEqual([]);
    expect(decoder.inFrame).toBe(true);
    expect(decoder.heldFds).toBe(2);
    const outcomes = push(decoder, [0x80]);
    expect(summary(outcomes)).toEqual([{ code: 'ERR_FDPASS_BAD_MESSAGE' }]);
    expect((outcomes[0] as Error).message).toMatch(/^a frame header's reserved byte is 0x80, not 0x00/);
    expect(fakeFds.closed).toEqual(fds);
    expect(decoder.failed).toBe(true);
  });

  it('fails at a reserved byte within a whole header in one read', () => {
    const fakeFds = new FakeFds();
    const decoder = new QueueDecoder(roomy, fakeFds.close);
    const header = encodeHeader(1, 0);
    header[1] = 1;
    expect(summary(push(decoder, Buffer.concat([header, Buffer.from('x')])))).toEqual([{ code: 'ERR_FDPASS_BAD_MESSAGE' }]);
    expect(decoder.failed).toBe(true);
  });

  it('fails when a complete header announces more fds than arrived', () => {
    const fakeFds = new FakeFds();
    const decoder = new QueueDecoder(roomy, fakeFds.close);
    const fds = fakeFds.issue(2);
    const header = encodeHeader(3, 3);
    expect(push(decoder, header.subarray(0, 5), fds)).toEqual([]);
    const outcomes = push(decoder, header.subarray(5));
    expect(summary(outcomes)).toEqual([{ code: 'ERR_FDPASS_BAD_MESSAGE' }]);
    expect((outcomes[0] as Error).message).toMatch(/^a frame header announces 3 fd\(s\), but only 2 arrived with it/);
    expect(fakeFds.closed).toEqual(fds);
  });

  it('fails at a bare-fd byte without an fd', () => {
    const fakeFds = new FakeFds();
    const decoder = new QueueDecoder(roomy, fakeFds.close);
    const fds = fakeFds.issue(1);
    const outcomes = push(decoder, [0x00, 0x00], fds);
    expect(summary(outcomes)).toEqual([{ data: '', fds }, { code: 'ERR_FDPASS_BAD_MESSAGE' }]);
    expect(fakeFds.closed).toEqual([]);
  });
});

describe('StreamDecoder at EOF and close', () => {
  it('end() within a header: an error, and the fds that came are closed', () => {
    const fakeFds = new FakeFds();
    const decoder = new QueueDecoder(roomy, fakeFds.close);
    const fds = fakeFds.issue(2);
    decoder.push(encodeHeader(10, 2), 0, 3, fds, 0, 2);
    expect([decoder.inFrame, decoder.heldFds, decoder.heldBytes]).toEqual([true, 2, 0]);
    const error = decoder.end();
    expect(error).toMatchObject({
      code: 'ERR_FDPASS_BAD_MESSAGE',
      message: 'the stream ended within a frame header (3 of 8 bytes); its 2 fd(s) were closed',
    });
    expect(fakeFds.closed).toEqual(fds);
  });

  it("end() within a payload: an error, and the frame's fds are closed", () => {
    const fakeFds = new FakeFds();
    const decoder = new QueueDecoder(roomy, fakeFds.close);
    const frame = fakeFds.issue(2);
    const wire = Buffer.concat([encodeHeader(10, 2), Buffer.from('12345')]);
    expect(decoder.push(wire, 0, wire.length, frame, 0, 2)).toEqual([]);
    expect([decoder.inFrame, decoder.heldFds, decoder.heldBytes]).toEqual([true, 2, 10]); // a partial frame counts at its announced length
    expect(decoder.end()).toMatchObject({ message: 'the stream ended within a frame (5 of 10 payload bytes); its 2 fd(s) were closed' });
    expect(fakeFds.closed).toEqual(frame);
    expect(decoder.end()).toBeNull();
  });

  it("fds beyond a frame's declared count end the stream at once, not at EOF", () => {
    const fakeFds = new FakeFds();
    const decoder = new QueueDecoder(roomy, fakeFds.close);
    const [frame, extra] = [fakeFds.issue(2), fakeFds.issue(3)];
    const wire = Buffer.concat([encodeHeader(10, 2), Buffer.from('12345')]);
    const outcomes = decoder.push(wire, 0, wire.length, [...frame, ...extra], 0, 5);
    expect(summary(outcomes)).toEqual([{ code: 'ERR_FDPASS_BAD_MESSAGE' }]);
    expect((outcomes[0] as Error).message).toBe(
      '3 fd(s) arrived that no message declared; the stream cannot be read further and its 5 received fd(s) were closed',
    );
    expect(fakeFds.closed).toEqual([...frame, ...extra]);
    expect(decoder.failed).toBe(true);
  });

  it("fds that come with a read continuing a frame header (not the one that began it) are no message's", () => {
    const fakeFds = new FakeFds();
    const decoder = new QueueDecoder(roomy, fakeFds.close);
    const [own, stray] = [fakeFds.issue(1), fakeFds.issue(253)];
    const header = encodeHeader(0, 1);
    expect(decoder.push(header, 0, 2, own, 0, 1)).toEqual([]); // the header's own fd: may still be claimed
    expect(decoder.push(header, 2, 1, [], 0, 0)).toEqual([]); // more header, no fds: fine
    const outcomes = decoder.push(header, 3, 1, stray, 0, 253);
    expect(summary(outcomes)).toEqual([{ code: 'ERR_FDPASS_BAD_MESSAGE' }]);
    expect(fakeFds.closed).toEqual([...own, ...stray]);
  });

  it('end() while skipping an oversize payload is an error too', () => {
    const fakeFds = new FakeFds();
    const decoder = new QueueDecoder({ maxPayloadBytes: 4, maxFdsPerMessage: 4 }, fakeFds.close);
    const wire = Buffer.concat([encodeHeader(10, 0), Buffer.from('123')]);
    expect(summary(decoder.push(wire, 0, wire.length, [], 0, 0))).toEqual([{ code: 'ERR_FDPASS_MESSAGE_TOO_LARGE' }]);
    expect([decoder.inFrame, decoder.heldBytes]).toEqual([true, 0]);
    expect(decoder.end()).toMatchObject({ message: 'the stream ended within a frame (3 of 10 payload bytes)' });
  });

  it('fds a read brings that no message in it claims are closed when the read is decoded, without waiting for EOF', () => {
    const fakeFds = new FakeFds();
    const decoder = new QueueDecoder(roomy, fakeFds.close);
    const fds = fakeFds.issue(3);
    const wire = Buffer.concat([encodeHeader(1, 1), Buffer.from('z')]);
    const outcomes = decoder.push(wire, 0, wire.length, fds, 0, 3);
    expect(summary(outcomes)).toEqual([{ data: '7a', fds: [fds[0]] }, { code: 'ERR_FDPASS_BAD_MESSAGE' }]);
    expect((outcomes[1] as Error).message).toBe(
      '2 fd(s) arrived that no message declared; the stream cannot be read further and its 2 received fd(s) were closed',
    );
    expect([decoder.inFrame, decoder.heldFds, decoder.failed]).toEqual([false, 0, true]);
    expect(fakeFds.closed).toEqual(fds.slice(1));
  });

  it('a frame declaring 0 fds that carries 253 ends the stream, its fds closed', () => {
    const fakeFds = new FakeFds();
    const decoder = new QueueDecoder(roomy, fakeFds.close);
    const fds = fakeFds.issue(253);
    const wire = encodeHeader(0, 0);
    const outcomes = decoder.push(wire, 0, wire.length, fds, 0, fds.length);
    expect(summary(outcomes)).toEqual([{ data: '', fds: [] }, { code: 'ERR_FDPASS_BAD_MESSAGE' }]);
    expect(fakeFds.closed).toEqual(fds);
  });

  it('a frame header begun in one read and completed in the next claims no fd of the later read', () => {
    const fakeFds = new FakeFds();
    const decoder = new QueueDecoder(roomy, fakeFds.close);
    const stray = fakeFds.issue(1);
    const header = encodeHeader(0, 1);
    expect(decoder.push(header, 0, 2, [], 0, 0)).toEqual([]); // the header begins, no fds
    const outcomes = decoder.push(header, 2, 6, stray, 0, 1); // its rest, with an fd: not the frame's
    expect(summary(outcomes)).toEqual([{ code: 'ERR_FDPASS_BAD_MESSAGE' }]);
    expect(fakeFds.closed).toEqual(stray);
    expect(decoder.failed).toBe(true);
  });

  it('close() closes what it holds once, and the fds of any later push', () => {
    const fakeFds = new FakeFds();
    const decoder = new QueueDecoder(roomy, fakeFds.close);
    const [frame, late] = [fakeFds.issue(4), fakeFds.issue(1)];
    decoder.push(encodeHeader(100, 4), 0, 8, frame, 0, 4);
    expect(decoder.heldFds).toBe(4);
    decoder.close();
    decoder.close();
    expect(decoder.push(new Uint8Array([0]), 0, 1, late, 0, 1)).toEqual([]);
    expect(fakeFds.closed).toEqual([...frame, ...late]);
    expect(decoder.heldFds).toBe(0);
  });
});

describe('decodePacket', () => {
  const limits: FramingLimits = { maxPayloadBytes: 300, maxFdsPerMessage: 10 };

  /** Decodes one packet placed at an offset in reused buffers. */
  function decode(fakeFds: FakeFds, bytes: number[] | Buffer, fds: number[], packetLimits = limits): DecodeOutcome {
    const scratch = new Uint8Array(bytes.length + 5);
    scratch.set(bytes, 5);
    const fdScratch = new Int32Array(fds.length + 2);
    fdScratch.set(fds, 2);
    const outcome = decodePacketWithFds(scratch, 5, bytes.length, fdScratch, 2, fds.length, packetLimits, fakeFds.close);
    scratch.fill(0xee);
    fdScratch.fill(-1);
    return outcome;
  }

  it('decodes bare fds and frames, one message a packet', () => {
    const rand = random(SEED ^ 0xbac7);
    const fakeFds = new FakeFds();
    const messages = [
      message(fakeFds, '', 0),
      message(fakeFds, '', 2),
      message(fakeFds, 'a', 1),
      message(fakeFds, Buffer.alloc(300, 7), 10),
    ];
    for (let i = 0; i < 50; i++) {
      messages.push({ data: randomBytes(rand(301), rand), fds: fakeFds.issue(rand(11)) });
    }
    messages.push(message(fakeFds, '', 1));
    const outcomes = messages.map((m) => decode(fakeFds, wireBytes(m), m.fds));
    expect(summary(outcomes)).toEqual(expected(messages));
    expect(fakeFds.closed).toEqual([]);
  });

  const bad: [string, (fakeFds: FakeFds) => [number[] | Buffer, number[]], string, RegExp][] = [
    ['an empty packet with fds', (f) => [[], f.issue(2)], 'ERR_FDPASS_BAD_MESSAGE', /^an empty packet; its 2 fd/],
    ['a zero byte with no fd', () => [[0], []], 'ERR_FDPASS_BAD_MESSAGE', /not 1 byte\(s\) with 0 fd/],
    ['a zero byte with two fds', (f) => [[0], f.issue(2)], 'ERR_FDPASS_BAD_MESSAGE', /bare-fd packet/],
    ['a zero byte and more data', (f) => [[0, 0], f.issue(1)], 'ERR_FDPASS_BAD_MESSAGE', /not 2 byte\(s\) with 1 fd/],
    ['an unknown tag', (f) => [[2, 0, 0, 0, 0, 0, 0, 0], f.issue(1)], 'ERR_FDPASS_BAD_MESSAGE', /^unknown message tag 0x02/],
    ['a packet shorter than a header', (f) => [[1, 0, 1, 0, 0, 0, 0], f.issue(1)], 'ERR_FDPASS_BAD_MESSAGE', /^a 7-byte packet is shorter/],
    ['a non-zero reserved byte', () => [[1, 1, 0, 0, 0, 0, 0, 0], []], 'ERR_FDPASS_BAD_MESSAGE', /reserved byte is 0x01/],
    [
      'a length longer than the packet',
      () => [[...encodeHeader(3, 0), 1, 2], []],
      'ERR_FDPASS_BAD_MESSAGE',
      /says 3 payload bytes, but 2 followed/,
    ],
    [
      'a length shorter than the packet',
      () => [[...encodeHeader(1, 0), 1, 2], []],
      'ERR_FDPASS_BAD_MESSAGE',
      /says 1 payload bytes, but 2 followed/,
    ],
    ['fewer fds than the header says', (f) => [encodeHeader(0, 3), f.issue(2)], 'ERR_FDPASS_BAD_MESSAGE', /says 3 fd\(s\), but 2 came/],
    ['more fds than the header says', (f) => [encodeHeader(0, 1), f.issue(2)], 'ERR_FDPASS_BAD_MESSAGE', /says 1 fd\(s\), but 2 came/],
    [
      'a payload over the limit',
      (f) => [[...encodeHeader(301, 1), ...Buffer.alloc(301)], f.issue(1)],
      'ERR_FDPASS_MESSAGE_TOO_LARGE',
      /^a message of 301 bytes/,
    ],
    [
      'fds over the limit',
      (f) => [[...encodeHeader(1, 11), 9], f.issue(11)],
      'ERR_FDPASS_TOO_MANY_FDS',
      /^a message with 11 fds exceeds maxFdsPerMessage \(10\)/,
    ],
  ];
  for (const [name, packet, code, reason] of bad) {
    it(`rejects ${name}, closing its fds`, () => {
      const fakeFds = new FakeFds();
      const [bytes, fds] = packet(fakeFds);
      const outcome = decode(fakeFds, bytes, fds);
      expect(outcome).toBeInstanceOf(Error);
      expect(outcome).toMatchObject({ code, message: expect.stringMatching(reason) });
      expect(fakeFds.closed).toEqual(fds);
    });
  }

  it('a bare fd over maxFdsPerMessage 0 is too many fds', () => {
    const fakeFds = new FakeFds();
    const fds = fakeFds.issue(1);
    expect(decode(fakeFds, [0], fds, { maxPayloadBytes: 10, maxFdsPerMessage: 0 })).toMatchObject({ code: 'ERR_FDPASS_TOO_MANY_FDS' });
    expect(fakeFds.closed).toEqual(fds);
  });
});
