// npm run bench:raw: a raw byte stream carrying one fd with each 64-byte write, between two
// processes, the receiver counting bytes and fds and closing each fd: fdpass's RawStream
// against a C program doing the same sendmsg/recvmsg (bench/baseline.c, compiled in this run)
// and against usocket, in paired rounds (the contenders one after the other in each round,
// in alternating order), so that each round's ratios see the same load.
// usocket sends a write's fds only if its first sendmsg takes some bytes: one that finds the
// socket full (EAGAIN) goes out later without them. So usocket runs with a window (at most
// 128 records unacknowledged, the receiver acknowledging every 32 with a byte back, which
// keeps the socket from filling), and so do the fdpass row it is compared with and the C row
// that shows how fast the window lets any program go.
//   npm run bench:raw [-- --rounds R] [--scale X] [CONTENDER...]
// Each run times a fixed number of records (after WARM untimed ones, while the JIT compiles),
// about 0.3 to 0.6 s on a 2-vCPU VM; --scale multiplies them. The JavaScript contenders take
// tens of thousands of writes to reach their steady pace: timed over 30,000 writes after
// 10,000 untimed ones, fdpass measured 0.55 of C; over 300,000, 0.74. --deadline S (default 20): the
// longest any one wait may take.
// Contenders: c, fdpass, c-window, fdpass-window, usocket-window (the default set) and usocket
// (without a window: fails, as it loses fds). Every run checks every record's number, the byte and fd
// counts, and each process's open fds after; any miss fails the bench, and so does any wait
// past its deadline, after killing every process it started.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import path from 'node:path';
import { socketpair } from 'fdpass';
import { compileC, out } from './compile';
import { median } from './median';
import { openFds } from './proc';

const RECORD_BYTES = 64;
const WINDOW = 128;
/** raw-peer.ts's acknowledgement interval, which the C baseline is given too. */
const ACK_EVERY = 32;
const WARM = 50_000;

function option(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  return at === -1 ? fallback : Number(process.argv[at + 1]);
}
const rounds = option('rounds', 5);
const scale = option('scale', 1);
/** Every wait of the bench ends by this, or the bench fails. */
const deadlineMs = option('deadline', 20) * 1000;

type Contender = 'c' | 'fdpass' | 'c-window' | 'fdpass-window' | 'usocket-window' | 'usocket';
const ALL: Contender[] = ['c', 'fdpass', 'c-window', 'fdpass-window', 'usocket-window', 'usocket'];
const named = process.argv.slice(2).filter((word, i, words) => !word.startsWith('--') && !words[i - 1]?.startsWith('--'));
for (const word of named) if (!ALL.includes(word as Contender)) throw new Error(`unknown contender ${word}; one of ${ALL.join(', ')}`);
const contenders: Contender[] = named.length > 0 ? (named as Contender[]) : ALL.filter((c) => c !== 'usocket');
const RECORDS: Record<Contender, number> = {
  c: 300_000,
  fdpass: 200_000,
  'c-window': 250_000,
  'fdpass-window': 150_000,
  'usocket-window': 80_000,
  usocket: 80_000,
};

interface Measured {
  writesPerSecond: number;
  /** CPU time per write, in microseconds, of the sender and of the receiver. */
  senderCpu: number;
  receiverCpu: number;
}

// ---- the processes the bench starts, and the deadline on every wait ----

interface Started {
  name: string;
  child: ChildProcess;
  output: string;
  exited: Promise<number | null>;
}
const started = new Set<Started>();

function start(name: string, file: string, args: string[], stdio: Array<'pipe' | 'ignore' | number>): Started {
  // Its own process group, so that a kill reaches what it forks (the C program's receiver).
  const child = spawn(file, args, { stdio, detached: true });
  const entry: Started = { name, child, output: '', exited: new Promise((resolve) => child.once('exit', (code) => resolve(code))) };
  const keep = (chunk: Buffer): void => {
    entry.output = (entry.output + chunk.toString()).slice(-4000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  started.add(entry);
  void entry.exited.then(() => started.delete(entry));
  return entry;
}

function killAll(): void {
  for (const { child } of started) {
    try {
      process.kill(-child.pid!, 'SIGKILL');
    } catch {
      // gone already
    }
  }
}

/** what, or a failure that names what was pending (each live process and what it printed last) after the deadline. */
async function within<T>(what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const pending = [...started].map(
        ({ name, child, output }) => `  ${name} (pid ${child.pid}) last printed: ${JSON.stringify(output.slice(-300))}`,
      );
      reject(new Error(`timed out after ${deadlineMs} ms waiting for ${what}; still running:\n${pending.join('\n')}`));
    }, deadlineMs);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves when it exits with 0; otherwise fails with what it printed. */
async function succeeded(entry: Started): Promise<string> {
  const code = await within(`${entry.name} to exit`, entry.exited);
  if (code !== 0) throw new Error(`${entry.name} exited with ${code}:\n${entry.output}`);
  return entry.output;
}

// ---- the contenders ----

let baseline = '';

async function runC(records: number, window: number): Promise<Measured> {
  const args = ['throughput', String(records), '1', String(RECORD_BYTES), String(window), String(ACK_EVERY)];
  const output = await succeeded(start('C baseline', baseline, args, ['ignore', 'pipe', 'pipe']));
  const [rate, cpuLine] = output.trim().split('\n');
  const [, senderCpu, receiverCpu] = cpuLine!.split(' ').map(Number);
  return { writesPerSecond: Number(rate), senderCpu: senderCpu!, receiverCpu: receiverCpu! };
}

async function runPeers(library: 'fdpass' | 'usocket', records: number, window: number): Promise<Measured> {
  const [senderEnd, receiverEnd] = socketpair('stream');
  const peer = (side: string, fd: number): Started =>
    start(
      `${library} ${side}`,
      process.execPath,
      // tsx's CommonJS hook alone: half the start-up of --import tsx, which starts a loader thread.
      ['--require', 'tsx/cjs', path.join(__dirname, 'raw-peer.ts'), side, library, String(records + WARM), String(WARM), String(window)],
      ['pipe', 'pipe', 'pipe', fd],
    );
  let receiver: Started;
  let sender: Started;
  try {
    receiver = peer('receive', receiverEnd);
    sender = peer('send', senderEnd);
  } finally {
    closeSync(senderEnd);
    closeSync(receiverEnd);
  }
  const [sent, received] = await Promise.all([succeeded(sender), succeeded(receiver)]);
  const result = (output: string): Record<string, number> => JSON.parse(/^result (.*)$/m.exec(output)![1]!) as Record<string, number>;
  const send = result(sent);
  const receive = result(received);
  return {
    writesPerSecond: records / ((receive.endAtNanoseconds! - receive.warmAtNanoseconds!) / 1e9),
    senderCpu: send.cpuMicroseconds! / records,
    receiverCpu: receive.cpuMicroseconds! / records,
  };
}

const run: Record<Contender, (records: number) => Promise<Measured>> = {
  c: (records) => runC(records, 0),
  'c-window': (records) => runC(records, WINDOW),
  fdpass: (records) => runPeers('fdpass', records, 0),
  'fdpass-window': (records) => runPeers('fdpass', records, WINDOW),
  'usocket-window': (records) => runPeers('usocket', records, WINDOW),
  usocket: (records) => runPeers('usocket', records, 0),
};

// ---- the report ----

/** A ratio of two contenders' writes per second, taken within each round. */
interface Ratio {
  name: string;
  of: Contender;
  to: Contender;
  says: string;
}
const RATIOS: Ratio[] = [
  { name: 'fdpass/C', of: 'fdpass', to: 'c', says: 'target >= 0.8' },
  { name: 'fdpass/usocket', of: 'fdpass-window', to: 'usocket-window', says: 'both windowed; target >= 3' },
  // How far the same sendmsg/recvmsg under the same window take a C program: what the kernel
  // leaves room for, beside which fdpass's ratio to usocket reads.
  { name: 'fdpass/C-window', of: 'fdpass-window', to: 'c-window', says: 'both windowed' },
  { name: 'C/usocket', of: 'c-window', to: 'usocket-window', says: 'both windowed: C under the window usocket needs' },
];

const fixed = (value: number, digits = 2): string => value.toFixed(digits);
const rate = (value: number): string => Math.round(value).toLocaleString('en-US');

async function main(): Promise<void> {
  const fdsBefore = openFds('self');
  baseline = compileC('baseline');
  const load = [loadavg()];
  const records = Object.fromEntries(contenders.map((c) => [c, Math.round(RECORDS[c] * scale)])) as Record<Contender, number>;
  console.log(
    `load average ${load[0]!.map((l) => fixed(l)).join(' ')}; ${rounds} rounds; records per run: ` +
      contenders.map((c) => `${c} ${records[c]}`).join(', '),
  );
  const results: Array<Record<Contender, Measured>> = [];
  const header = contenders.map((c) => c.padStart(15)).join('');
  console.log(`\nwrites/s (64 B + 1 fd each); ratios within each round, and their medians`);
  console.log(
    `round${header}${RATIOS.filter(measured)
      .map((r) => r.name.padStart(16))
      .join('')}`,
  );
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? contenders : [...contenders].reverse();
    const result = {} as Record<Contender, Measured>;
    for (const contender of order) result[contender] = await run[contender](records[contender]);
    results.push(result);
    console.log(
      `${String(round + 1).padStart(5)}${contenders.map((c) => rate(result[c].writesPerSecond).padStart(15)).join('')}` +
        RATIOS.filter(measured)
          .map((r) => fixed(ratioIn(result, r)).padStart(16))
          .join(''),
    );
  }
  const medians = Object.fromEntries(
    contenders.map((c) => [
      c,
      {
        writesPerSecond: median(results.map((r) => r[c].writesPerSecond)),
        senderCpu: median(results.map((r) => r[c].senderCpu)),
        receiverCpu: median(results.map((r) => r[c].receiverCpu)),
      },
    ]),
  ) as Record<Contender, Measured>;
  const ratioMedians = Object.fromEntries(
    RATIOS.filter(measured).map((r) => [r.name, median(results.map((result) => ratioIn(result, r)))]),
  );
  console.log(
    `  med${contenders.map((c) => rate(medians[c].writesPerSecond).padStart(15)).join('')}` +
      RATIOS.filter(measured)
        .map((r) => fixed(ratioMedians[r.name]!).padStart(16))
        .join(''),
  );
  console.log(`\nCPU µs per write, sender + receiver (medians)`);
  for (const c of contenders) console.log(`  ${c.padEnd(15)} ${fixed(medians[c].senderCpu)} + ${fixed(medians[c].receiverCpu)}`);
  console.log('');
  for (const r of RATIOS.filter(measured)) console.log(`${r.name}: ${fixed(ratioMedians[r.name]!)} (${r.says})`);
  load.push(loadavg());
  console.log(`load average at the end ${load[1]!.map((l) => fixed(l)).join(' ')}`);
  const fdsAfter = openFds('self');
  if (fdsAfter.join('\n') !== fdsBefore.join('\n'))
    throw new Error(`the bench's own open fds changed:\n${fdsBefore.join(' ')}\n${fdsAfter.join(' ')}`);
  writeFileSync(
    path.join(out, 'raw.json'),
    `${JSON.stringify({ date: new Date().toISOString(), node: process.version, load, records, results, medians, ratioMedians }, null, 2)}\n`,
  );
}

function measured(ratio: Ratio): boolean {
  return contenders.includes(ratio.of) && contenders.includes(ratio.to);
}

function ratioIn(result: Record<Contender, Measured>, ratio: Ratio): number {
  return result[ratio.of].writesPerSecond / result[ratio.to].writesPerSecond;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killAll();
    process.exit(1);
  });
}
main().then(
  () => process.exit(0),
  (error: unknown) => {
    killAll();
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  },
);
