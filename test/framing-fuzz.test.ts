// Property-based fuzzing of the decoders in lib/framing.ts with fast-check. Valid streams, split
// into reads at every kind of place and paused at random message boundaries, must come out
// exactly as a model of docs/wire-format.md says; mutated streams (flipped, inserted and deleted
// bytes, headers that lie, fds that come with the wrong read, truncation) may only end in
// protocol errors; fds that come with the wrong read are held to a model of the rule of which
// read brings a message's fds. Every run also checks at each push: the read is consumed whole
// unless the sink paused the decoder at a boundary (then nothing more came out) or the stream
// failed; the decoder's fd count matches the fds it was given and has not taken; no payload is
// held beyond the limit; after a fatal error nothing is consumed. A run that takes seconds is a
// hang. The seed is printed: FDPASS_FUZZ_SEED=<seed> replays every property, and fast-check's
// report of a failure gives the seed and path of the shrunk counterexample; FDPASS_FUZZ_RUNS=<n>
// runs n cases per property without the time budget.
import vm from 'node:vm';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { FdpassError } from '../lib/errors';
import { MAX_FDS_PER_FRAME, MAX_PAYLOAD_BYTES, MESSAGE_HEADER_BYTES, type DecodeSink, type FramingLimits } from '../lib/framing';
import {
  FakeFds,
  QueueDecoder,
  decodePacketWithFds,
  describeData,
  isDecodeError,
  streamOf,
  summary,
  wireBytes,
  type DecodeOutcome,
  type TestMessage,
} from './decoder-harness';

const seed = Number(process.env.FDPASS_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const longRuns = process.env.FDPASS_FUZZ_RUNS === undefined ? undefined : Number(process.env.FDPASS_FUZZ_RUNS);
console.log(`framing fuzz: seed ${seed} (FDPASS_FUZZ_SEED=${seed} replays)`);

/** Each property stops after this long, passing with the runs done, so the file takes seconds. */
const PROPERTY_BUDGET_MS = 1000;
/** A run is milliseconds of work (90 ms at most, measured): one that lasts this long may hang... */
const RUN_LIMIT_MS = 2000;
/** ...and does, if it lasts this long again: a starved machine finishes it the second time. */
const HANG_LIMIT_MS = 10_000;

const PROTOCOL_ERRORS = ['ERR_FDPASS_BAD_MESSAGE', 'ERR_FDPASS_MESSAGE_TOO_LARGE', 'ERR_FDPASS_TOO_MANY_FDS'];
const roomy: FramingLimits = { maxPayloadBytes: MAX_PAYLOAD_BYTES, maxFdsPerMessage: MAX_FDS_PER_FRAME };

/**
 * fc.assert with the file's seed, `numRuns` (or FDPASS_FUZZ_RUNS), the time budget, and the
 * hang limit per run; `examples` run first, every time. Then `coverage`, which checks that the
 * runs met what the property is about, if the budget let them all run.
 */
function assertProperty<T>(
  numRuns: number,
  values: fc.Arbitrary<T>,
  predicate: (value: T) => void,
  { examples = [], coverage }: { examples?: T[]; coverage?: () => void } = {},
): void {
  let runs = 0;
  const wanted = longRuns ?? numRuns;
  fc.assert(
    fc.property(values, (value) => {
      runs++;
      withinTime(() => predicate(value));
    }),
    {
      seed,
      numRuns: wanted,
      plugins: longRuns === undefined ? [fc.interruptAfterTimeLimit(PROPERTY_BUDGET_MS)] : [],
      examples: examples.map((example) => [example]),
    },
  );
  if (runs >= wanted) coverage?.();
  else if (coverage)
    console.warn(`framing fuzz: ${runs} of ${wanted} runs within the time budget, too few to check what they covered (seed ${seed})`);
}

// Synchronous code cannot be interrupted from its own thread, except by V8's watchdog, which
// vm's timeout arms: it stops whatever JavaScript the script called, a looping push included.
const watchdogContext = vm.createContext({ run: (): unknown => undefined });
const watchdogScript = new vm.Script('run()');

/** Runs `run`, and fails if it hangs. */
function withinTime<T>(run: () => T): T {
  (watchdogContext as { run: () => T }).run = run;
  const attempt = (ms: number): { result: T } | 'timed out' => {
    try {
      return { result: watchdogScript.runInContext(watchdogContext, { timeout: ms }) as T };
    } catch (error) {
      if ((error as { code?: string }).code === 'ERR_SCRIPT_EXECUTION_TIMEOUT') return 'timed out';
      throw error;
    }
  };
  const first = attempt(RUN_LIMIT_MS);
  if (first !== 'timed out') return first.result;
  const started = performance.now();
  const second = attempt(HANG_LIMIT_MS);
  if (second === 'timed out')
    throw new Error(`a run did not finish in ${RUN_LIMIT_MS} ms, nor in ${HANG_LIMIT_MS} ms again: the decoder hangs`);
  console.warn(
    `framing fuzz: a run took over ${RUN_LIMIT_MS} ms, then ${Math.round(performance.now() - started)} ms: a slow machine, not a hang (seed ${seed})`,
  );
  return second.result;
}

/** A cheap assertion for the hot loop (vitest's expect costs too much per push). */
function ensure(condition: boolean, what: () => string): void {
  if (!condition) throw new Error(what());
}

// ---------------------------------------------------------------------------------------------
// Messages

/** A message to send. Its payload is made from (length, fill), so a counterexample prints short. */
class MessageSpec {
  constructor(
    readonly length: number,
    readonly nfds: number,
    readonly fill: number,
    /** Sent as a frame even with no data and one fd, which a sender would send as a bare fd. */
    readonly asFrame: boolean,
  ) {}

  data(): Buffer {
    const data = Buffer.allocUnsafe(this.length);
    let x = this.fill | 1;
    for (let i = 0; i < this.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      data[i] = x & 0xff;
    }
    return data;
  }

  message(fds: number[]): TestMessage {
    return { data: this.data(), fds, asFrame: this.asFrame };
  }

  [fc.toStringMethod](): string {
    if (this.length === 0 && this.nfds === 1 && !this.asFrame) return 'bareFd';
    return `frame(${this.length} bytes (fill ${this.fill}), ${this.nfds} fds${this.asFrame && this.length === 0 && this.nfds === 1 ? ', as a frame' : ''})`;
  }
}

const bareFd = new MessageSpec(0, 1, 0, false);

/** For encoding alone, where only the count matters: fds that are never passed. */
function placeholderFds(count: number): number[] {
  return new Array<number>(count).fill(-1);
}

/** Mostly 0..3 fds, some anywhere up to 253, some exactly 253. */
const fdCount = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0, max: 3 }) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: MAX_FDS_PER_FRAME }) },
  { weight: 1, arbitrary: fc.constant(MAX_FDS_PER_FRAME) },
);

/** Bare fds and frames; `bigPayloads` adds, rarely, payloads past the decoder's first buffer (64 KiB). */
function messageSpec({ maxPayload, bigPayloads = false }: { maxPayload: number; bigPayloads?: boolean }): fc.Arbitrary<MessageSpec> {
  const frame = (length: fc.Arbitrary<number>): fc.Arbitrary<MessageSpec> =>
    fc
      .tuple(length, fdCount, fc.integer(), fc.boolean())
      .map(([bytes, nfds, fill, asFrame]) => new MessageSpec(bytes, nfds, fill, asFrame));
  return fc.oneof(
    { weight: 3, arbitrary: fc.constant(bareFd) },
    { weight: 4, arbitrary: frame(fc.integer({ min: 0, max: 16 })) },
    { weight: 3, arbitrary: frame(fc.integer({ min: 0, max: maxPayload })) },
    { weight: bigPayloads ? 1 : 0, arbitrary: frame(fc.integer({ min: 64 * 1024 + 1, max: 160 * 1024 })) },
  );
}

/** Small random limits, so that messages fall on both sides of them, or none at all. */
const smallLimits: fc.Arbitrary<FramingLimits> = fc.record({
  maxPayloadBytes: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 4096 }), fc.constant(MAX_PAYLOAD_BYTES)),
  maxFdsPerMessage: fc.oneof(fc.integer({ min: 0, max: 4 }), fc.integer({ min: 0, max: MAX_FDS_PER_FRAME })),
});

/** Limits that most hostile streams (payloads up to 64 bytes, mostly 0..3 fds) go over. */
const tightLimits: fc.Arbitrary<FramingLimits> = fc.record({
  maxPayloadBytes: fc.integer({ min: 0, max: 16 }),
  maxFdsPerMessage: fc.integer({ min: 0, max: 2 }),
});

/** Limits for hostile streams: none to speak of, small, or tight. */
const anyLimits = fc.oneof(fc.constant(roomy), smallLimits, tightLimits);

/** The error code for a message over a limit (payload first), or null. */
function limitCode(payloadBytes: number, nfds: number, limits: FramingLimits): string | null {
  if (payloadBytes > limits.maxPayloadBytes) return 'ERR_FDPASS_MESSAGE_TOO_LARGE';
  if (nfds > limits.maxFdsPerMessage) return 'ERR_FDPASS_TOO_MANY_FDS';
  return null;
}

// ---------------------------------------------------------------------------------------------
// Reads

// Places and indices are drawn before the stream they point into is known. A place is a fraction
// of the length, so that shrinking it moves it towards the start (a value taken modulo the
// length would jump about and shrink badly); an index is small and taken modulo the count.
const PLACES = 0x1_0000;
const place = fc.nat({ max: PLACES - 1 });
const index = fc.nat({ max: 15 });

/** `place` as an offset in 0..size - 1. */
function placeIn(at: number, size: number): number {
  return Math.floor((at * size) / PLACES);
}

/** Where a stream is cut into reads. */
type Split =
  | { kind: 'whole stream' }
  | { kind: 'every byte' }
  | { kind: 'random cuts'; cuts: number[] }
  | { kind: 'near message starts'; offsets: number[] };

const split: fc.Arbitrary<Split> = fc.oneof(
  fc.constant({ kind: 'whole stream' } as const),
  fc.constant({ kind: 'every byte' } as const),
  fc.record({ kind: fc.constant('random cuts' as const), cuts: fc.array(place, { maxLength: 40 }) }),
  // Just before, at and just after a tag, and around the end of a header.
  fc.record({ kind: fc.constant('near message starts' as const), offsets: fc.subarray([-1, 0, 1, 2, 7, 8, 9], { minLength: 1 }) }),
);

/** Byte-at-a-time reads stop at this many; a longer stream is cut into this many even reads. */
const MAX_READS = 4096;

/** The end of each read of a `length`-byte stream whose messages start at `starts`. */
function readEnds(how: Split, length: number, starts: readonly number[]): number[] {
  let cuts: number[];
  switch (how.kind) {
    case 'whole stream':
      cuts = [];
      break;
    case 'every byte': {
      const step = Math.max(1, Math.ceil(length / MAX_READS));
      cuts = Array.from({ length: Math.ceil(length / step) }, (_, i) => i * step);
      break;
    }
    case 'random cuts':
      cuts = how.cuts.map((cut) => placeIn(cut, length + 1));
      break;
    case 'near message starts':
      cuts = starts.flatMap((start) => how.offsets.map((offset) => start + offset));
      break;
  }
  const ends = [...new Set([...cuts.filter((cut) => cut > 0 && cut < length), length])].sort((a, b) => a - b);
  return length === 0 ? [] : ends;
}

/** One read: the stream's bytes up to `end` (from the previous read's end), and its fds. */
interface Read {
  end: number;
  fds: number[];
}

/** What a peer's stream looks like to the receiver: its bytes in reads, each with its fds. */
interface ReadPlan {
  bytes: Uint8Array;
  reads: Read[];
}

/** The read that holds byte `at`. */
function readHolding(ends: readonly number[], at: number): number {
  let low = 0;
  let high = ends.length - 1;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (ends[middle]! > at) high = middle;
    else low = middle + 1;
  }
  return low;
}

/** A valid stream of `messages`, cut at `ends`, each message's fds with the read holding its tag. */
function validPlan(stream: Buffer, starts: readonly number[], messages: readonly TestMessage[], ends: readonly number[]): ReadPlan {
  const reads: Read[] = ends.map((end) => ({ end, fds: [] }));
  messages.forEach((message, i) => {
    if (starts[i]! < stream.length) reads[readHolding(ends, starts[i]!)]!.fds.push(...message.fds);
  });
  return { bytes: stream, reads };
}

// ---------------------------------------------------------------------------------------------
// The driver

/** What came out of feeding a plan to a decoder and ending the stream. */
interface Run {
  outcomes: DecodeOutcome[];
  fatalError: FdpassError | null;
  /** Pushes that stopped short because the sink paused the decoder. */
  pausedPushes: number;
}

/** A sink that must not be called: for a decoder that failed or ended. */
const silentSink: DecodeSink = {
  message: () => {
    throw new Error('the decoder delivered a message after it failed or ended');
  },
  error: (error) => {
    throw new Error(`the decoder reported an error after it failed or ended: ${error.message}`);
  },
  get paused(): boolean {
    throw new Error('the decoder asked whether to pause after it failed or ended');
  },
};

/**
 * Feeds each read to a decoder the way a Channel does: the bytes in a buffer it scribbles over
 * afterwards, the fds in an array at an offset; when the sink pauses it, the rest of the read
 * again (a copy) with no fds; after a failure, straight to the decoder too, which must take
 * nothing. Then EOF. `pauses` are the sink's answers at each boundary (then false);
 * `heldBytesBound` is the most payload the decoder may hold.
 */
function feed(plan: ReadPlan, limits: FramingLimits, fakeFds: FakeFds, pauses: readonly boolean[], heldBytesBound: number): Run {
  const queue = new QueueDecoder(limits, fakeFds.close);
  const decoder = queue.decoder;
  const outcomes: DecodeOutcome[] = [];
  let answers = 0;
  let pausedAt: number | null; // outcomes.length when the sink last answered true
  queue.paused = () => {
    const pause = pauses[answers++] ?? false;
    if (pause) pausedAt = outcomes.length;
    return pause;
  };
  let pausedPushes = 0;

  const expectSteady = (): void => {
    ensure(decoder.heldFds === queue.heldFds, () => `the decoder counts ${decoder.heldFds} fds held, but holds ${queue.heldFds}`);
    ensure(
      decoder.inFrame === decoder.bytesToBoundary > 0,
      () => `inFrame is ${decoder.inFrame} with ${decoder.bytesToBoundary} bytes to the boundary`,
    );
    ensure(decoder.heldBytes <= heldBytesBound, () => `the decoder holds ${decoder.heldBytes} payload bytes, over ${heldBytesBound}`);
    if (decoder.failed)
      ensure(decoder.heldFds === 0 && decoder.heldBytes === 0 && !decoder.inFrame, () => 'a failed decoder still holds something');
  };

  /**
   * Pushes bytes[from..to) with fds from copies, as a Channel's read would be (or, rest, the
   * rest of a read the sink paused); returns what was consumed.
   */
  const push = (from: number, to: number, fds: number[], raw: boolean, rest = false): number => {
    const pad = (from % 5) + 1;
    const bytes = new Uint8Array(to - from + 2 * pad).fill(0xee);
    bytes.set(plan.bytes.subarray(from, to), pad);
    const fdArray = new Int32Array(fds.length + 3).fill(-1);
    fdArray.set(fds, 2);
    let consumed: number;
    if (raw) {
      // Straight to a decoder that failed or ended: it must take nothing, and its fds are still ours to close.
      consumed = decoder.push(bytes, pad, to - from, fds.length, silentSink);
      if (fds.length > 0) fakeFds.close(fds);
    } else {
      if (rest) queue.pushRest(bytes, pad, to - from, outcomes);
      else queue.push(bytes, pad, to - from, fdArray, 2, fds.length, outcomes);
      consumed = queue.lastConsumed;
    }
    // The decoder copies what it keeps: the caller reuses its buffers.
    bytes.fill(0xdd);
    fdArray.fill(-2);
    return consumed;
  };

  let start = 0;
  for (const read of plan.reads) {
    let from = start;
    let fds = read.fds;
    let rest = false;
    for (;;) {
      const length = read.end - from;
      if (decoder.failed) {
        const consumed = push(from, read.end, fds, true);
        ensure(
          consumed === 0 && decoder.heldFds === 0,
          () => `a failed decoder consumed ${consumed} bytes and counts ${decoder.heldFds} fds`,
        );
        break;
      }
      pausedAt = null;
      const consumed = push(from, read.end, fds, false, rest);
      ensure(Number.isInteger(consumed) && consumed >= 0 && consumed <= length, () => `push of ${length} bytes returned ${consumed}`);
      expectSteady();
      const stoppedAt = pausedAt as number | null;
      if (stoppedAt !== null) {
        // Paused at a boundary: nothing more came out, and the rest waits.
        ensure(consumed < length, () => `the sink paused the decoder, but it consumed the whole read (${length} bytes)`);
        ensure(outcomes.length === stoppedAt, () => `${outcomes.length - stoppedAt} result(s) came after the sink paused the decoder`);
        ensure(!decoder.inFrame, () => 'the decoder paused within a message');
        pausedPushes++;
        from += consumed;
        fds = [];
        rest = true;
        continue;
      }
      ensure(consumed === length || decoder.failed, () => `the decoder consumed ${consumed} of ${length} bytes unpaused, and did not fail`);
      break;
    }
    start = read.end;
  }

  const endError = queue.end();
  if (endError !== null) outcomes.push(endError);
  ensure(decoder.heldFds === 0 && queue.heldFds === 0, () => `after end() the decoder still counts ${decoder.heldFds} fds`);
  ensure(decoder.heldBytes === 0 && !decoder.inFrame, () => `after end() the decoder still holds ${decoder.heldBytes} payload bytes`);
  // Ended or failed: it takes nothing more (the decoder only counts fds, so none need exist here).
  ensure(
    decoder.push(new Uint8Array([0]), 0, 1, 1, silentSink) === 0 && decoder.heldFds === 0,
    () => 'the decoder took a read after end()',
  );
  decoder.end(silentSink);
  return { outcomes, fatalError: queue.fatalError, pausedPushes };
}

/** The answers the sink gives at successive message boundaries: none, or a random few. */
const pauseAnswers = fc.oneof(fc.constant([] as boolean[]), fc.array(fc.boolean(), { maxLength: 40 }));

// ---------------------------------------------------------------------------------------------
// What every run must show

function expectOnlyProtocolErrors(run: Run): void {
  const errors = run.outcomes.filter(isDecodeError);
  for (const error of errors) {
    expect(PROTOCOL_ERRORS).toContain(error.code);
    expect(error.message).not.toBe('');
  }
  // A bad message ends the stream: it is the one fatal error, and the last result.
  const bad = errors.filter((error) => error.code === 'ERR_FDPASS_BAD_MESSAGE');
  expect(bad.length).toBeLessThanOrEqual(1);
  expect(run.fatalError).toBe(bad[0] ?? null);
  if (run.fatalError !== null) expect(run.outcomes.at(-1)).toBe(run.fatalError);
}

function expectWithinLimits(run: Run, limits: FramingLimits): void {
  for (const outcome of run.outcomes) {
    if (isDecodeError(outcome)) continue;
    expect(outcome.data.length).toBeLessThanOrEqual(limits.maxPayloadBytes);
    expect(outcome.fds.length).toBeLessThanOrEqual(limits.maxFdsPerMessage);
  }
}

/**
 * What the decoder must make of `messages` cut at byte `cut` and ended there, per
 * docs/wire-format.md: each message whole, or its limit error, in order; a message cut short
 * is a bad message at EOF. Also the fds closed, in the order closed.
 */
function model(
  messages: readonly TestMessage[],
  starts: readonly number[],
  cut: number,
  limits: FramingLimits,
): { outcomes: unknown[]; closed: number[] } {
  const outcomes: unknown[] = [];
  const closed: number[] = [];
  for (const [i, message] of messages.entries()) {
    const start = starts[i]!;
    if (start >= cut) break;
    const bare = !message.asFrame && message.data.length === 0 && message.fds.length === 1;
    const headerEnd = start + (bare ? 1 : MESSAGE_HEADER_BYTES);
    const end = bare ? headerEnd : headerEnd + message.data.length;
    if (cut < headerEnd) {
      outcomes.push({ code: 'ERR_FDPASS_BAD_MESSAGE' });
      closed.push(...message.fds);
      break;
    }
    const code = limitCode(message.data.length, message.fds.length, limits);
    if (code !== null) {
      outcomes.push({ code });
      closed.push(...message.fds);
    }
    if (cut < end) {
      outcomes.push({ code: 'ERR_FDPASS_BAD_MESSAGE' });
      if (code === null) closed.push(...message.fds);
      break;
    }
    if (code === null) outcomes.push({ data: describeData(message.data), fds: message.fds });
  }
  return { outcomes, closed };
}

// ---------------------------------------------------------------------------------------------
// Valid streams

describe(`StreamDecoder, valid streams (seed ${seed})`, () => {
  it('round-trip exactly, data and fd order, however they are split into reads and paused', () => {
    let pausedRuns = 0;
    assertProperty(
      150,
      fc.tuple(fc.array(messageSpec({ maxPayload: 2048, bigPayloads: true }), { maxLength: 24 }), split, pauseAnswers),
      ([specs, how, pauses]) => {
        const fakeFds = new FakeFds();
        const messages = specs.map((spec) => spec.message(fakeFds.issue(spec.nfds)));
        const { stream, starts } = streamOf(messages);
        const plan = validPlan(stream, starts, messages, readEnds(how, stream.length, starts));
        const largest = Math.max(0, ...messages.map((message) => message.data.length));
        const run = feed(plan, roomy, fakeFds, pauses, largest);
        expect(summary(run.outcomes)).toEqual(model(messages, starts, stream.length, roomy).outcomes);
        expect(fakeFds.closed).toEqual([]);
        if (run.pausedPushes > 0) pausedRuns++;
      },
      // The pauses took effect, or the property said nothing about them.
      { coverage: () => expect(pausedRuns).toBeGreaterThan(0) },
    );
  });

  it('over small limits: each message over one is reported once in its place, its fds closed, and the stream goes on; cut short, the stream ends in one bad message', () => {
    const seen = { overLimit: 0, delivered: 0, cutShort: 0 };
    assertProperty(
      300,
      fc.tuple(
        fc.array(messageSpec({ maxPayload: 200 }), { maxLength: 16 }),
        smallLimits,
        split,
        pauseAnswers,
        fc.option(place, { nil: undefined }),
      ),
      ([specs, limits, how, pauses, truncate]) => {
        const fakeFds = new FakeFds();
        const { stream, starts } = streamOf(specs.map((spec) => spec.message(placeholderFds(spec.nfds))));
        const cut = truncate === undefined ? stream.length : placeIn(truncate, stream.length + 1);
        // fds only for the messages whose tag is sent: the others never reach the receiver.
        const messages = specs.map((spec, i) => spec.message(starts[i]! < cut ? fakeFds.issue(spec.nfds) : placeholderFds(spec.nfds)));
        const plan = validPlan(stream.subarray(0, cut), starts, messages, readEnds(how, cut, starts));
        // The decoder holds at most the largest payload it was announced within the limit.
        const withinLimit = messages.filter(
          (message, i) => starts[i]! < cut && limitCode(message.data.length, message.fds.length, limits) === null,
        );
        const run = feed(plan, limits, fakeFds, pauses, Math.max(0, ...withinLimit.map((message) => message.data.length)));
        const expected = model(messages, starts, cut, limits);
        expect(summary(run.outcomes)).toEqual(expected.outcomes);
        expect(fakeFds.closed).toEqual(expected.closed);
        fakeFds.expectAccountedFor(run.outcomes);
        expectOnlyProtocolErrors(run);
        expectWithinLimits(run, limits);
        if (run.outcomes.some((outcome) => isDecodeError(outcome) && outcome.code !== 'ERR_FDPASS_BAD_MESSAGE')) seen.overLimit++;
        if (run.outcomes.some((outcome) => !isDecodeError(outcome))) seen.delivered++;
        if (run.fatalError !== null) seen.cutShort++;
      },
      // Each side of the limits, and streams cut short, came up.
      { coverage: () => expect(Object.values(seen).every((count) => count > 0)).toBe(true) },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Adversarial streams

/** A change to a valid stream. `message`, `at` and `to` are taken modulo what exists. */
type Mutation =
  | { kind: 'flip byte'; at: number; xor: number }
  | { kind: 'insert bytes'; at: number; bytes: Uint8Array }
  | { kind: 'delete bytes'; at: number; count: number }
  | { kind: 'tag'; message: number; tag: number }
  | { kind: 'reserved byte'; message: number; value: number }
  | { kind: 'header nfds'; message: number; delta: number }
  | { kind: 'header nfds value'; message: number; nfds: number }
  | { kind: 'header length'; message: number; delta: number }
  | { kind: 'header length value'; message: number; length: number }
  | { kind: 'fds with another byte'; message: number; to: number }
  | { kind: 'fewer fds'; message: number; drop: number }
  | { kind: 'extra fds'; at: number; count: number }
  | { kind: 'fds with an empty read'; at: number; count: number };

/** Changes to the bytes: the stream no longer says what its sender meant. */
const byteMutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip byte' as const), at: place, xor: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ kind: fc.constant('insert bytes' as const), at: place, bytes: fc.uint8Array({ minLength: 1, maxLength: 9 }) }),
  fc.record({ kind: fc.constant('delete bytes' as const), at: place, count: fc.integer({ min: 1, max: 9 }) }),
  fc.record({ kind: fc.constant('tag' as const), message: index, tag: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('reserved byte' as const), message: index, value: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ kind: fc.constant('header nfds' as const), message: index, delta: fc.integer({ min: -3, max: 3 }) }),
  fc.record({ kind: fc.constant('header nfds value' as const), message: index, nfds: fc.integer({ min: 0, max: 0xffff }) }),
  fc.record({ kind: fc.constant('header length' as const), message: index, delta: fc.integer({ min: -9, max: 9 }) }),
  fc.record({
    kind: fc.constant('header length value' as const),
    message: index,
    length: fc.oneof(fc.nat({ max: 300 }), fc.nat(), fc.constantFrom(0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 0xffff_ffff)),
  }),
);

/** Changes to where fds come: the bytes are well formed, but fds come with the wrong reads. */
const fdMutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('fds with another byte' as const), message: index, to: place }),
  fc.record({ kind: fc.constant('fewer fds' as const), message: index, drop: fc.integer({ min: 1, max: 3 }) }),
  fc.record({
    kind: fc.constant('extra fds' as const),
    at: place,
    count: fc.oneof(fc.integer({ min: 1, max: 3 }), fc.constant(MAX_FDS_PER_FRAME)),
  }),
  fc.record({ kind: fc.constant('fds with an empty read' as const), at: place, count: fc.integer({ min: 1, max: 3 }) }),
);

const mutation = fc.oneof({ weight: 9, arbitrary: byteMutation }, { weight: 4, arbitrary: fdMutation });

/** fds sent with the byte at `at`; `alone`: in a read of no bytes just before that byte's read. */
interface Attachment {
  at: number;
  count: number;
  alone: boolean;
}

interface HostileStream {
  specs: MessageSpec[];
  mutations: Mutation[];
  truncate: number | undefined;
  split: Split;
}

const hostileStream: fc.Arbitrary<HostileStream> = fc.record({
  specs: fc.array(messageSpec({ maxPayload: 64 }), { maxLength: 12 }),
  mutations: fc.array(mutation, { minLength: 1, maxLength: 6 }),
  truncate: fc.option(place, { nil: undefined }),
  split,
});

/** A valid stream of `specs` with the mutations applied, truncated, cut into reads; fds issued by `fakeFds`. */
function hostilePlan({ specs, mutations, truncate, split: how }: HostileStream, fakeFds: FakeFds): ReadPlan {
  // Only the fd counts matter to the encoder: the fds themselves are issued read by read below.
  const { stream, starts } = streamOf(specs.map((spec) => spec.message(placeholderFds(spec.nfds))));
  let bytes = new Uint8Array(stream);
  const attachments: Attachment[] = specs.map((spec, i) => ({ at: starts[i]!, count: spec.nfds, alone: false }));
  const frameStart = (message: number): number | undefined => {
    if (specs.length === 0) return undefined;
    const start = starts[message % specs.length]!;
    return start + MESSAGE_HEADER_BYTES <= stream.length && stream[start] === 1 ? start : undefined;
  };
  // Header lies first, while the messages are where they were written; then bytes and fds move.
  for (const change of mutations) {
    const start = frameStart('message' in change ? change.message : 0);
    const header = start === undefined ? undefined : Buffer.from(bytes.buffer, bytes.byteOffset + start, MESSAGE_HEADER_BYTES);
    switch (change.kind) {
      case 'tag':
        if (specs.length > 0) bytes[starts[change.message % specs.length]!] = change.tag;
        break;
      case 'reserved byte':
        if (header) header[1] = change.value;
        break;
      case 'header nfds':
        if (header) header.writeUInt16LE(Math.min(0xffff, Math.max(0, header.readUInt16LE(2) + change.delta)), 2);
        break;
      case 'header nfds value':
        if (header) header.writeUInt16LE(change.nfds, 2);
        break;
      case 'header length':
        if (header) header.writeUInt32LE(Math.min(MAX_PAYLOAD_BYTES, Math.max(0, header.readUInt32LE(4) + change.delta)), 4);
        break;
      case 'header length value':
        if (header) header.writeUInt32LE(change.length, 4);
        break;
      default:
        break;
    }
  }
  for (const change of mutations) {
    switch (change.kind) {
      case 'flip byte':
        if (bytes.length > 0) bytes[placeIn(change.at, bytes.length)]! ^= change.xor;
        break;
      case 'insert bytes': {
        const at = placeIn(change.at, bytes.length + 1);
        bytes = Buffer.concat([bytes.subarray(0, at), change.bytes, bytes.subarray(at)]);
        for (const attachment of attachments) if (attachment.at >= at) attachment.at += change.bytes.length;
        break;
      }
      case 'delete bytes': {
        const at = placeIn(change.at, bytes.length + 1);
        const count = Math.min(change.count, bytes.length - at);
        bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + count)]);
        for (const attachment of attachments)
          attachment.at = attachment.at >= at + count ? attachment.at - count : Math.min(attachment.at, at);
        break;
      }
      case 'fds with another byte':
        if (attachments.length > 0) attachments[change.message % attachments.length]!.at = placeIn(change.to, bytes.length + 1);
        break;
      case 'fewer fds':
        if (attachments.length > 0) {
          const attachment = attachments[change.message % attachments.length]!;
          attachment.count = Math.max(0, attachment.count - change.drop);
        }
        break;
      case 'extra fds':
        attachments.push({ at: placeIn(change.at, bytes.length + 1), count: change.count, alone: false });
        break;
      case 'fds with an empty read':
        attachments.push({ at: placeIn(change.at, bytes.length + 1), count: change.count, alone: true });
        break;
      default:
        break;
    }
  }
  if (truncate !== undefined) bytes = bytes.subarray(0, placeIn(truncate, bytes.length + 1));
  // Cut into reads; fds past the end come with the last read (or an empty one, for no bytes).
  const ends = readEnds(how, bytes.length, starts);
  if (ends.length === 0) ends.push(0);
  const reads: (Read & { emptyBefore: number })[] = ends.map((end) => ({ end, fds: [], emptyBefore: 0 }));
  attachments.sort((a, b) => a.at - b.at);
  for (const attachment of attachments) {
    const read = reads[readHolding(ends, Math.min(attachment.at, Math.max(0, bytes.length - 1)))]!;
    if (attachment.alone) read.emptyBefore += attachment.count;
    else read.fds.push(...fakeFds.issue(attachment.count));
  }
  const withEmpty: Read[] = [];
  let start = 0;
  for (const read of reads) {
    if (read.emptyBefore > 0) withEmpty.push({ end: start, fds: fakeFds.issue(read.emptyBefore) });
    withEmpty.push({ end: read.end, fds: read.fds });
    start = read.end;
  }
  return { bytes, reads: withEmpty };
}

describe(`StreamDecoder, hostile streams (seed ${seed})`, () => {
  /** Runs `check` on hostile streams under random limits and pauses. */
  function fuzz(numRuns: number, check: (run: Run, fakeFds: FakeFds, limits: FramingLimits) => void, coverage?: () => void): void {
    assertProperty(
      numRuns,
      fc.tuple(hostileStream, anyLimits, pauseAnswers),
      ([stream, limits, pauses]) => {
        const fakeFds = new FakeFds();
        const plan = hostilePlan(stream, fakeFds);
        const run = feed(plan, limits, fakeFds, pauses, limits.maxPayloadBytes); // a partial frame counts at its announced length
        check(run, fakeFds, limits);
      },
      { coverage },
    );
  }

  it('end only in protocol errors, nothing thrown: a bad message is the one fatal error and the last result', () => {
    const codes = new Set<string>();
    fuzz(
      300,
      (run) => {
        expectOnlyProtocolErrors(run);
        for (const outcome of run.outcomes) if (isDecodeError(outcome)) codes.add(outcome.code);
      },
      () => expect([...codes].sort()).toEqual([...PROTOCOL_ERRORS].sort()),
    );
  });

  it('give out or close every fd they were given exactly once, and hold nothing after end()', () => {
    let fdsSeen = 0;
    fuzz(
      300,
      (run, fakeFds) => {
        fakeFds.expectAccountedFor(run.outcomes);
        fdsSeen += fakeFds.issued.size;
      },
      () => expect(fdsSeen).toBeGreaterThan(0),
    );
  });

  it('never deliver a message over a limit, nor hold a payload beyond the limit', () => {
    fuzz(300, (run, _fakeFds, limits) => expectWithinLimits(run, limits));
  });

  it('never hang: each push returns, whole unless paused at a boundary or failed, and goes on once unpaused', () => {
    let paused = 0;
    fuzz(
      300,
      (run) => {
        if (run.pausedPushes > 0) paused++;
      },
      () => expect(paused).toBeGreaterThan(0),
    );
  });

  it('after a fatal error: nothing more is delivered or consumed, and the fds of later reads are not counted', () => {
    let fatal = 0;
    let runs = 0;
    fuzz(
      300,
      (run) => {
        runs++;
        if (run.fatalError === null) return;
        fatal++;
        // Reported once, last: feed() has pushed every later read straight to the decoder, which took nothing.
        expect(run.outcomes.indexOf(run.fatalError)).toBe(run.outcomes.length - 1);
      },
      () => expect(fatal).toBeGreaterThan(runs / 4),
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Which read an fd comes with

/** One result of the rule model: a message or a limit error, and the read that completes it. */
interface RuledOutcome {
  summary: unknown;
  read: number;
}

/**
 * The rule the stream decoder enforces (lib/framing.ts, docs/wire-format.md), written apart
 * from it: fds come with the read that holds the first byte of the sendmsg that carried them,
 * and a sender attaches a message's fds to the sendmsg that begins with the message's tag. So a
 * message takes its fds from those that came with the read holding its tag (after those that
 * earlier messages starting in that read took); too few there, or fds that no message starting
 * in their read claims, and the stream is broken. Returns the results in order up to the break,
 * each with the read that completes it, and `brokenIn`: the first read by whose end the break
 * can be known (the read completing the header of the last message that starts in the read
 * the fds came with, or that read itself), or null for a sound stream.
 */
function ruleModel(
  messages: readonly TestMessage[],
  starts: readonly number[],
  reads: readonly Read[],
  limits: FramingLimits,
): { outcomes: RuledOutcome[]; brokenIn: number | null } {
  const ends = reads.map((read) => read.end);
  const left = reads.map((read) => [...read.fds]);
  const outcomes: RuledOutcome[] = [];
  let brokenIn = Infinity;
  const readsWithStarts = new Set(starts.map((start) => readHolding(ends, start)));
  reads.forEach((read, i) => {
    if (read.fds.length > 0 && !readsWithStarts.has(i)) brokenIn = Math.min(brokenIn, i);
  });
  for (const [i, message] of messages.entries()) {
    const bare = !message.asFrame && message.data.length === 0 && message.fds.length === 1;
    const tagRead = readHolding(ends, starts[i]!);
    const headerRead = readHolding(ends, starts[i]! + (bare ? 1 : MESSAGE_HEADER_BYTES) - 1);
    const own = left[tagRead]!;
    if (own.length < message.fds.length) {
      brokenIn = Math.min(brokenIn, headerRead);
      break;
    }
    const fds = own.splice(0, message.fds.length);
    const code = limitCode(message.data.length, fds.length, limits);
    if (code !== null) outcomes.push({ summary: { code }, read: headerRead });
    else
      outcomes.push({
        summary: { data: describeData(message.data), fds },
        read: readHolding(ends, starts[i]! + wireBytes(message).length - 1),
      });
    const lastInItsRead = i + 1 === messages.length || readHolding(ends, starts[i + 1]!) !== tagRead;
    if (lastInItsRead && own.length > 0) brokenIn = Math.min(brokenIn, headerRead);
  }
  return { outcomes, brokenIn: brokenIn === Infinity ? null : brokenIn };
}

/** The place that placeIn() makes offset `at` of `size`. */
function placeOf(at: number, size: number): number {
  return Math.ceil((at * PLACES) / size);
}

/** A frame header alone (8 bytes) that announces one fd. */
const emptyFrameWithFd = new MessageSpec(0, 1, 0, true);
const cutAt = (at: number, length: number): Split => ({ kind: 'random cuts', cuts: [placeOf(at, length + 1)] });

/**
 * Small streams on which lib/framing.ts breaks the rule (found by this property), run first
 * every time: a frame header cut over two reads claims fds that came with the second read, or
 * leaves fds of the first for a message that starts in the second.
 */
const wrongReadExamples: [MessageSpec[], Mutation[], Split, FramingLimits, boolean[]][] = [
  // Read 0 is the header's first 7 bytes, without fds; its fd comes with read 1, where no message starts.
  [[emptyFrameWithFd], [{ kind: 'fds with another byte', message: 0, to: placeOf(7, 9) }], cutAt(7, 8), roomy, []],
  // Read 0 brings the frame's fd and the bare fd's; read 1, the header's last byte and the bare fd, none.
  [[emptyFrameWithFd, bareFd], [{ kind: 'fds with another byte', message: 1, to: 0 }], cutAt(7, 9), roomy, []],
  // A frame sent without its fd, read 0 its tag alone: it takes the next frame's fd, from read 1.
  [
    [new MessageSpec(1, 1, 0, false), new MessageSpec(2, 1, 0, false)],
    [{ kind: 'fewer fds', message: 0, drop: 1 }],
    cutAt(1, 19),
    roomy,
    [],
  ],
];

describe(`StreamDecoder, fds with the wrong read (seed ${seed})`, () => {
  it('a message gets the fds that came with the read holding its tag, and fds that no message starting in their read claims end the stream', () => {
    const seen = { broken: 0, sound: 0 };
    assertProperty(
      300,
      fc.tuple(
        fc.array(messageSpec({ maxPayload: 64 }), { minLength: 1, maxLength: 12 }),
        fc.array(fdMutation, { maxLength: 3 }),
        split,
        anyLimits,
        pauseAnswers,
      ),
      ([specs, mutations, how, limits, pauses]) => {
        const fakeFds = new FakeFds();
        const plan = hostilePlan({ specs, mutations, truncate: undefined, split: how }, fakeFds);
        const messages = specs.map((spec) => spec.message(placeholderFds(spec.nfds)));
        const { starts } = streamOf(messages);
        const ruled = ruleModel(messages, starts, plan.reads, limits);
        const run = feed(plan, limits, fakeFds, pauses, limits.maxPayloadBytes); // a partial frame counts at its announced length
        const results = summary(run.outcomes.filter((outcome) => outcome !== run.fatalError));
        // Whatever came out before the stream ended is what the rule says, in order.
        expect(results).toEqual(ruled.outcomes.slice(0, results.length).map((outcome) => outcome.summary));
        if (ruled.brokenIn === null) {
          expect(run.fatalError).toBeNull();
          expect(results).toHaveLength(ruled.outcomes.length);
          seen.sound++;
        } else {
          expect(run.fatalError?.code).toBe('ERR_FDPASS_BAD_MESSAGE');
          // Everything completed before the read that breaks the stream came out; nothing after it.
          const brokenIn = ruled.brokenIn;
          expect(results.length).toBeGreaterThanOrEqual(ruled.outcomes.filter((outcome) => outcome.read < brokenIn).length);
          expect(results.length).toBeLessThanOrEqual(ruled.outcomes.filter((outcome) => outcome.read <= brokenIn).length);
          seen.broken++;
        }
      },
      { examples: wrongReadExamples, coverage: () => expect(seen.broken > 0 && seen.sound > 0).toBe(true) },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Packets

/**
 * What docs/wire-format.md says a packet is, written apart from lib/framing.ts: one zero byte
 * with one fd, or a frame whose header's length and nfds match the packet; anything else is a
 * bad message, and a well-formed message over a limit is its limit error.
 */
function packetModel(packet: Uint8Array, nfds: number, limits: FramingLimits): { data: string; length: number } | { code: string } {
  const view = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  let payload: Uint8Array;
  if (packet.length === 1 && packet[0] === 0 && nfds === 1) payload = packet.subarray(1);
  else if (
    packet.length >= 8 &&
    packet[0] === 1 &&
    packet[1] === 0 &&
    view.getUint32(4, true) === packet.length - 8 &&
    view.getUint16(2, true) === nfds
  )
    payload = packet.subarray(8);
  else return { code: 'ERR_FDPASS_BAD_MESSAGE' };
  const code = limitCode(payload.length, nfds, limits);
  return code !== null ? { code } : { data: describeData(Buffer.from(payload)), length: payload.length };
}

type PacketLie =
  | { kind: 'flip byte'; at: number; xor: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'append'; bytes: Uint8Array }
  | { kind: 'fd count'; nfds: number };

/** A packet and the fds that came with it: a message as a sender writes it, half of them with one lie; or random bytes. */
const packet: fc.Arbitrary<{ bytes: Uint8Array; nfds: number }> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc
      .record({
        spec: messageSpec({ maxPayload: 300 }),
        lie: fc.option(
          fc.oneof(
            fc.record({ kind: fc.constant('flip byte' as const), at: place, xor: fc.integer({ min: 1, max: 255 }) }),
            fc.record({ kind: fc.constant('truncate' as const), at: place }),
            fc.record({ kind: fc.constant('append' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 9 }) }),
            fc.record({ kind: fc.constant('fd count' as const), nfds: fc.integer({ min: 0, max: 260 }) }),
          ),
          { nil: undefined, freq: 2 },
        ),
      })
      .map(({ spec, lie }: { spec: MessageSpec; lie: PacketLie | undefined }) => {
        let bytes = new Uint8Array(streamOf([spec.message(placeholderFds(spec.nfds))]).stream);
        let nfds = spec.nfds;
        if (lie?.kind === 'flip byte') bytes[placeIn(lie.at, bytes.length)]! ^= lie.xor;
        if (lie?.kind === 'truncate') bytes = bytes.subarray(0, placeIn(lie.at, bytes.length));
        if (lie?.kind === 'append') bytes = Buffer.concat([bytes, lie.bytes]);
        if (lie?.kind === 'fd count') nfds = lie.nfds;
        return { bytes, nfds };
      }),
  },
  { weight: 1, arbitrary: fc.record({ bytes: fc.uint8Array({ maxLength: 24 }), nfds: fc.integer({ min: 0, max: 4 }) }) },
);

describe(`decodePacket (seed ${seed})`, () => {
  it('makes any bytes and fds into the message the wire format says, with exactly its fds, or an error that closes them all', () => {
    const seen = new Set<string>();
    assertProperty(
      1000,
      fc.tuple(packet, anyLimits, fc.nat({ max: 7 })),
      ([{ bytes, nfds }, limits, pad]) => {
        const fakeFds = new FakeFds();
        const fds = fakeFds.issue(nfds);
        const buffer = new Uint8Array(bytes.length + 2 * pad).fill(0xee);
        buffer.set(bytes, pad);
        const fdArray = new Int32Array(nfds + pad).fill(-1);
        fdArray.set(fds, pad);
        const outcome = decodePacketWithFds(buffer, pad, bytes.length, fdArray, pad, nfds, limits, fakeFds.close);
        buffer.fill(0xdd); // the message's data is a copy
        const expected = packetModel(bytes, nfds, limits);
        if ('code' in expected) {
          expect(isDecodeError(outcome)).toBe(true);
          expect((outcome as FdpassError).code).toBe(expected.code);
          expect(fakeFds.closed).toEqual(fds);
          seen.add(expected.code);
        } else {
          expect(isDecodeError(outcome)).toBe(false);
          const message = outcome as { data: Buffer; fds: number[] };
          expect({ data: describeData(message.data), length: message.data.length }).toEqual(expected);
          expect(message.fds).toEqual(fds);
          expect(fakeFds.closed).toEqual([]);
          seen.add('message');
        }
      },
      { coverage: () => expect([...seen].sort()).toEqual([...PROTOCOL_ERRORS, 'message'].sort()) },
    );
  });
});
