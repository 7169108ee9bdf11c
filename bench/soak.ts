// npm run soak [-- --fds N]: passes N fds (default 10^6) from this process to a child over one
// Channel of each socket type (stream, seqpacket, dgram), a seeded mix of bare fds and messages
// (0..64 KiB of data with 0..16 fds), the child sending one message in eight back. Both sides
// check every message: its bytes, and that each fd is the file it should be (bench/soak-plan.ts).
// At a checkpoint every 10% of the fds, both sides collect garbage and we read their RSS and open
// fds from /proc. Exits 1 on any fd lost, wrong message or leaked fd, or if after warm-up RSS
// grows by more than RSS_GROWTH_LIMIT_KIB or what JS holds by more than JS_GROWTH_LIMIT_KIB.
// Both sides import the built package ('fdpass', i.e. dist/), as users do (see bench/run.ts).
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Channel, socketpair } from 'fdpass';
import { collectGarbage, heldByJsKiB } from './heap';
import { exited, watchLines } from './peer-process';
import { memory, openFds } from './proc';
import {
  MAX_PAYLOAD_BYTES,
  Plan,
  SOCKET_TYPES,
  checkpointData,
  identify,
  itemData,
  random,
  mismatch,
  type Item,
} from './soak-plan';

const CHECKPOINTS = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1];
// The first 10% of the fds are warm-up (JIT, heap sizing, malloc arenas, the Channels' receive
// buffers). From there to the end, after a full GC:
// - what JS holds (live objects, Buffers) may grow by 1 MiB: it moved by 0.3 MiB at most in
//   steady runs, and a leak of one small object per message (~100,000 of them) is more;
// - RSS may grow by 32 MiB: V8 doubles its young generation when a process allocates fast,
//   at any point of a run, and keeps it (8 -> 16 MiB in our runs, and up to 32 MiB by its
//   limit), and malloc keeps or returns a few MiB. That is a coarse check for native leaks
//   (37 bytes per fd, 300 per message); ASan and valgrind (npm run test:asan) are the fine one.
const JS_GROWTH_LIMIT_KIB = 1024;
const RSS_GROWTH_LIMIT_KIB = 32 * 1024;
// Sends in flight at once, as on a busy server; each waits in its channel's queue on EAGAIN.
const WINDOW = 64;
const CHECKPOINT_TIMEOUT_MS = 60_000;

/** What the child reports at a checkpoint. */
interface ChildReport {
  fdsReceived: number[];
  messages: number;
  echoedFds: number;
  wrong: number;
  problems: string[];
  heldByJsKiB: number;
}

interface MemorySample {
  rssKiB: number;
  heldByJsKiB: number;
}

interface Sample {
  fds: number;
  parent: MemorySample;
  child: MemorySample;
}

/** The fds the soak sends: files, a directory, a device, a FIFO and sockets, each a distinct file. */
function openSources(dir: string): number[] {
  const files = ['a', 'b', 'c'].map((name) => {
    writeFileSync(path.join(dir, name), name);
    return openSync(path.join(dir, name), 'r');
  });
  const fifo = path.join(dir, 'fifo');
  execFileSync('mkfifo', [fifo]);
  // Linux opens a FIFO read-write without waiting for a writer.
  return [...files, openSync(dir, 'r'), openSync('/dev/null', 'r'), openSync(fifo, 'r+'), ...socketpair()];
}

async function within<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing after ${CHECKPOINT_TIMEOUT_MS} ms`)), CHECKPOINT_TIMEOUT_MS);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const mib = (kib: number): string => `${(kib / 1024).toFixed(1)} MiB`;
const count = (n: number): string => n.toLocaleString('en-US');

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { fds: { type: 'string', default: '1000000' }, seed: { type: 'string', default: '1' } } });
  const total = Number(values.fds);
  const seed = Number(values.seed);
  if (!Number.isSafeInteger(total) || total < 1 || !Number.isSafeInteger(seed)) throw new Error('--fds and --seed take integers');

  const dir = mkdtempSync(path.join(os.tmpdir(), 'fdpass-soak-'));
  const sources = openSources(dir);
  const identities = sources.map(identify);
  const pairs = SOCKET_TYPES.map((type) => socketpair(type));
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, 'soak-peer.ts'), JSON.stringify(identities), String(seed)], {
    stdio: ['pipe', 'pipe', 'inherit', ...pairs.map(([, theirs]) => theirs)],
  });
  for (const [, theirs] of pairs) closeSync(theirs);
  const channels = pairs.map(([mine]) => new Channel(mine));
  const peer = watchLines(child);
  await within(peer.printed('ready'), 'the child starting');
  const childPid = child.pid!;

  // Echoes come back in the order the child received their items; we check them the same way.
  let echoesExpected = 0;
  let echoesReceived = 0;
  let echoedFdsReceived = 0;
  const problems: string[] = [];
  let wakeEchoWaiter: (() => void) | undefined;
  const echoLoops = channels.map(async (channel, type) => {
    const plan = new Plan(seed, type, sources.length);
    for await (const message of channel) {
      const problem = mismatch(plan.nextEchoed(), message, identities);
      if (problem) problems.push(`${SOCKET_TYPES[type]} echo, ${problem}`);
      echoedFdsReceived += message.fds.length;
      echoesReceived++;
      message.close();
      wakeEchoWaiter?.();
    }
  });
  const echoesIn = async (): Promise<void> => {
    while (echoesReceived < echoesExpected) await new Promise<void>((resolve) => (wakeEchoWaiter = resolve));
  };

  const plans = SOCKET_TYPES.map((_, type) => new Plan(seed, type, sources.length));
  const pick = random(~seed); // which channel each item goes on
  const scratch = Buffer.alloc(MAX_PAYLOAD_BYTES + 64);
  const fdsSent = SOCKET_TYPES.map(() => 0);
  let fdsTotal = 0;
  let messages = 0;
  let bareFds = 0;
  let payloadBytes = 0;
  let echoedFdsExpected = 0;
  const sendItem = (channel: Channel, item: Item): Promise<void> =>
    item.bare ? channel.send(sources[item.sources[0]!]!) : channel.send({ data: itemData(item, scratch), fds: item.sources.map((i) => sources[i]!) });

  const samples: Sample[] = [];
  let childReport: ChildReport | undefined;
  let fdsBefore: { parent: string[]; child: string[] } | undefined;
  let fdsAfter: { parent: string[]; child: string[] } | undefined;
  let sendingMs = 0;
  let started = performance.now();
  for (const [index, share] of CHECKPOINTS.entries()) {
    const until = Math.ceil(share * total);
    while (fdsTotal < until) {
      const batch: Promise<void>[] = [];
      for (let i = 0; i < WINDOW && fdsTotal < until; i++) {
        const type = Math.floor(pick() * SOCKET_TYPES.length);
        const item = plans[type]!.next();
        batch.push(sendItem(channels[type]!, item));
        fdsSent[type]! += item.sources.length;
        fdsTotal += item.sources.length;
        if (item.bare) bareFds++;
        else messages++;
        payloadBytes += item.length;
        if (item.echo) {
          echoesExpected++;
          echoedFdsExpected += item.sources.length;
        }
      }
      await Promise.all(batch);
    }
    sendingMs += performance.now() - started;
    // A checkpoint: the child answers once it has handled everything before it on every channel.
    await Promise.all(channels.map((channel) => channel.send({ data: checkpointData(index) })));
    childReport = JSON.parse(await within(peer.reported(`checkpoint ${index} `), `checkpoint ${index}`)) as ChildReport;
    await within(echoesIn(), `echoes by checkpoint ${index}`);
    await collectGarbage();
    const fds = { parent: openFds('self'), child: openFds(childPid) };
    if (index === 0) fdsBefore = fds;
    else fdsAfter = fds;
    samples.push({
      fds: fdsTotal,
      parent: { rssKiB: memory('self').rssKiB, heldByJsKiB: heldByJsKiB() },
      child: { rssKiB: memory(childPid).rssKiB, heldByJsKiB: childReport.heldByJsKiB },
    });
    started = performance.now();
  }
  const peaks = { parent: memory('self').peakKiB, child: memory(childPid).peakKiB };

  child.stdin!.end(); // the child closes its channels and exits
  await exited(child);
  await Promise.all(channels.map((channel) => channel.close()));
  await Promise.all(echoLoops);
  for (const fd of sources) closeSync(fd);
  rmSync(dir, { recursive: true });

  const counts = childReport!;
  const fdsReceived = counts.fdsReceived.reduce((a, b) => a + b, 0);
  // Lost on the way: sent and never received, there or back.
  const lost = { there: fdsTotal - fdsReceived, back: counts.echoedFds - echoedFdsReceived };
  const wrong = counts.wrong + problems.length;
  const seconds = sendingMs / 1000;
  console.log(`fdpass soak: ${count(fdsTotal)} fds to a child in ${count(messages)} messages and ${count(bareFds)} bare fds, seed ${seed}`);
  for (const [type, name] of SOCKET_TYPES.entries()) {
    console.log(`  ${name.padEnd(9)} ${count(fdsSent[type]!).padStart(9)} fds sent, ${count(counts.fdsReceived[type]!).padStart(9)} received`);
  }
  console.log(`  ${count(payloadBytes)} bytes of payload; ${count(echoedFdsReceived)} of ${count(echoedFdsExpected)} fds echoed back (sent by the child: ${count(counts.echoedFds)})`);
  console.log(`  ${count(Math.round(fdsTotal / seconds))} fds/s (${seconds.toFixed(1)} s, not counting checkpoints)`);
  console.log(`  lost: ${lost.there} on the way there, ${lost.back} on the way back; wrong messages: ${wrong}`);
  for (const problem of [...counts.problems, ...problems].slice(0, 10)) console.log(`    ${problem}`);

  console.log(`  after a full GC at each checkpoint: RSS, and (in it) what JS holds:`);
  console.log(`    ${'fds'.padStart(10)}  ${'parent'.padStart(10)} ${'(JS)'.padStart(10)}  ${'child'.padStart(10)} ${'(JS)'.padStart(10)}`);
  const columns = (m: MemorySample): string => `${mib(m.rssKiB).padStart(10)} ${`(${mib(m.heldByJsKiB)})`.padStart(10)}`;
  for (const sample of samples) console.log(`    ${count(sample.fds).padStart(10)}  ${columns(sample.parent)}  ${columns(sample.child)}`);
  console.log(`    ${'peak'.padStart(10)}  ${mib(peaks.parent).padStart(10)} ${''.padStart(10)}  ${mib(peaks.child).padStart(10)}`);
  const warm = samples[1]!;
  const last = samples[samples.length - 1]!;
  const growth = (key: keyof MemorySample) => ({ parent: last.parent[key] - warm.parent[key], child: last.child[key] - warm.child[key] });
  const rssGrowth = growth('rssKiB');
  const jsGrowth = growth('heldByJsKiB');
  console.log(`  growth 10% -> 100%: RSS parent ${mib(rssGrowth.parent)}, child ${mib(rssGrowth.child)} (limit ${mib(RSS_GROWTH_LIMIT_KIB)}); held by JS parent ${mib(jsGrowth.parent)}, child ${mib(jsGrowth.child)} (limit ${mib(JS_GROWTH_LIMIT_KIB)})`);

  const before = fdsBefore!;
  const after = fdsAfter!;
  console.log(`  open fds before -> after: parent ${before.parent.length} -> ${after.parent.length}, child ${before.child.length} -> ${after.child.length}`);
  const leaked = [...difference(after.parent, before.parent).map((t) => `parent ${t}`), ...difference(after.child, before.child).map((t) => `child ${t}`)];
  for (const fd of leaked.slice(0, 10)) console.log(`    extra: ${fd}`);
  const leakedCount = after.parent.length - before.parent.length + after.child.length - before.child.length;

  const failures = [
    (lost.there !== 0 || lost.back !== 0) && 'fds lost',
    counts.echoedFds !== echoedFdsExpected && `the child echoed ${counts.echoedFds} fds, not ${echoedFdsExpected}`,
    wrong !== 0 && `${wrong} wrong messages`,
    leakedCount !== 0 && `${leakedCount} fds leaked`,
    rssGrowth.parent > RSS_GROWTH_LIMIT_KIB && 'parent RSS grew after warm-up',
    rssGrowth.child > RSS_GROWTH_LIMIT_KIB && 'child RSS grew after warm-up',
    jsGrowth.parent > JS_GROWTH_LIMIT_KIB && 'what JS holds in the parent grew after warm-up',
    jsGrowth.child > JS_GROWTH_LIMIT_KIB && 'what JS holds in the child grew after warm-up',
  ].filter(Boolean);
  console.log(failures.length === 0 ? 'PASS' : `FAIL: ${failures.join(', ')}`);
  if (failures.length !== 0) process.exitCode = 1;
}

/** What `after` holds more of than `before` (both sorted lists of fd targets). */
function difference(after: string[], before: string[]): string[] {
  const rest = [...before];
  return after.filter((target) => {
    const i = rest.indexOf(target);
    if (i === -1) return true;
    rest.splice(i, 1);
    return false;
  });
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
