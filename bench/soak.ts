// npm run soak [-- --fds N --seed S]: passes N fds (default 10^6) from this process to a child
// over one Channel of each socket type (stream, seqpacket, dgram), a seeded mix of bare fds and
// messages (0..64 KiB of data with 0..16 fds), the child sending one message in eight back.
// Both sides check every message: its bytes, and that each fd is the file it should be
// (bench/soak-plan.ts). At a checkpoint every 10% of the fds, both sides collect garbage and
// we read their RSS and open fds from /proc. Exits 1 on any fd lost, wrong message, leaked or
// closed fd, or if after warm-up RSS or what JS holds grows by more than its limit.
// Both sides import the built package ('fdpass', i.e. dist/), as users do (see bench/run.ts).
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Channel, socketpair } from 'fdpass';
import { collectGarbage, heldByJsKiB } from './heap';
import { exited, watchLines, type Peer } from './peer-process';
import { memory, openFds } from './proc';
import { MAX_PAYLOAD_BYTES, Plan, SOCKET_TYPES, checkpointData, identify, itemData, mismatch, random, type Item } from './soak-plan';

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
// This long without progress (a window of sends taken, a checkpoint passed) is a hang.
const STALL_MS = 30_000;

/** What the child reports at a checkpoint (bench/soak-peer.ts). */
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

interface Checkpoint {
  fds: number;
  parent: MemorySample;
  child: MemorySample;
  openFds: { parent: string[]; child: string[] };
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

/** A bench/soak-peer.ts process with the other end of a channel of each type as fds 3, 4, 5. */
async function startChild(identities: string[], seed: number): Promise<{ peer: Peer; channels: Channel[] }> {
  const pairs = SOCKET_TYPES.map((type) => socketpair(type));
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(__dirname, 'soak-peer.ts'), JSON.stringify(identities), String(seed)],
    {
      stdio: ['pipe', 'pipe', 'inherit', ...pairs.map(([, theirs]) => theirs)],
    },
  );
  for (const [, theirs] of pairs) closeSync(theirs);
  const channels = pairs.map(([mine]) => new Channel(mine));
  const peer = watchLines(child);
  await peer.printed('ready');
  return { peer, channels };
}

/**
 * Receives and checks what the child echoes on each channel: the items whose plan says echo,
 * in their order. settled() resolves once every echo expected so far has come back.
 */
function collectEchoes(channels: Channel[], seed: number, identities: string[]) {
  const echoes = { expected: 0, expectedFds: 0, received: 0, receivedFds: 0, problems: [] as string[] };
  let wake: (() => void) | undefined;
  const loops = channels.map(async (channel, type) => {
    const plan = new Plan(seed, type, identities.length);
    for await (const message of channel) {
      const problem = mismatch(plan.nextEchoed(), message, identities);
      if (problem) echoes.problems.push(`${SOCKET_TYPES[type]} echo, ${problem}`);
      echoes.receivedFds += message.fds.length;
      echoes.received++;
      message.close();
      wake?.();
    }
  });
  const settled = async (): Promise<void> => {
    while (echoes.received < echoes.expected) await new Promise<void>((resolve) => (wake = resolve));
  };
  return { echoes, settled, ended: Promise.all(loops) };
}

const mib = (kib: number): string => `${(kib / 1024).toFixed(1)} MiB`;
const count = (n: number): string => n.toLocaleString('en-US');

/** What `a` holds more of than `b` (lists of fd targets). */
function surplus(a: string[], b: string[]): string[] {
  const rest = [...b];
  return a.filter((target) => {
    const i = rest.indexOf(target);
    if (i !== -1) rest.splice(i, 1);
    return i === -1;
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { fds: { type: 'string', default: '1000000' }, seed: { type: 'string', default: '1' } } });
  const total = Number(values.fds);
  const seed = Number(values.seed);
  if (!Number.isSafeInteger(total) || total < 1 || !Number.isSafeInteger(seed)) throw new Error('--fds and --seed take integers');

  const dir = mkdtempSync(path.join(os.tmpdir(), 'fdpass-soak-'));
  const sources = openSources(dir);
  const identities = sources.map(identify);
  const { peer, channels } = await startChild(identities, seed);
  const childPid = peer.child.pid!;
  const { echoes, settled: echoesSettled, ended: echoesEnded } = collectEchoes(channels, seed, identities);
  let stage = 'the first checkpoint';
  let report: ChildReport | undefined;
  const watchdog = setTimeout(() => {
    console.error(`soak: stalled before ${stage}: nothing for ${STALL_MS / 1000} s; ${echoes.received} of ${echoes.expected} echoes back`);
    for (const problem of [...(report?.problems ?? []), ...echoes.problems].slice(0, 10)) console.error(`  ${problem}`);
    peer.child.kill();
    process.exit(1);
  }, STALL_MS);

  const plans = SOCKET_TYPES.map((_, type) => new Plan(seed, type, sources.length));
  const pickChannel = random(seed, 0);
  const scratch = Buffer.alloc(MAX_PAYLOAD_BYTES + 64);
  const sendItem = (channel: Channel, item: Item): Promise<void> =>
    item.bare
      ? channel.send(sources[item.sources[0]!]!)
      : channel.send({ data: itemData(item, scratch), fds: item.sources.map((i) => sources[i]!) });
  const sent = { fds: SOCKET_TYPES.map(() => 0), total: 0, messages: 0, bareFds: 0, payloadBytes: 0 };

  const checkpoints: Checkpoint[] = [];
  let sendingMs = 0;
  for (const [index, share] of CHECKPOINTS.entries()) {
    const started = performance.now();
    const until = Math.ceil(share * total);
    while (sent.total < until) {
      const batch: Promise<void>[] = [];
      for (let i = 0; i < WINDOW && sent.total < until; i++) {
        const type = Math.floor(pickChannel() * SOCKET_TYPES.length);
        const item = plans[type]!.next();
        batch.push(sendItem(channels[type]!, item));
        sent.fds[type]! += item.sources.length;
        sent.total += item.sources.length;
        if (item.bare) sent.bareFds++;
        else sent.messages++;
        sent.payloadBytes += item.length;
        if (item.echo) {
          echoes.expected++;
          echoes.expectedFds += item.sources.length;
        }
      }
      await Promise.all(batch);
      watchdog.refresh();
    }
    sendingMs += performance.now() - started;
    stage = `checkpoint ${index}`;
    // The child answers once it has handled everything before the checkpoint on every channel.
    await Promise.all(channels.map((channel) => channel.send({ data: checkpointData(index) })));
    report = JSON.parse(await peer.reported(`checkpoint ${index} `)) as ChildReport;
    await echoesSettled();
    await collectGarbage();
    checkpoints.push({
      fds: sent.total,
      parent: { rssKiB: memory('self').rssKiB, heldByJsKiB: heldByJsKiB() },
      child: { rssKiB: memory(childPid).rssKiB, heldByJsKiB: report.heldByJsKiB },
      openFds: { parent: openFds('self'), child: openFds(childPid) },
    });
    watchdog.refresh();
  }
  const peaks = { parent: memory('self').peakKiB, child: memory(childPid).peakKiB };

  clearTimeout(watchdog);
  peer.child.stdin!.end(); // the child closes its channels and exits
  await exited(peer.child);
  await Promise.all(channels.map((channel) => channel.close()));
  await echoesEnded;
  for (const fd of sources) closeSync(fd);
  rmSync(dir, { recursive: true });

  const child = report!;
  const received = child.fdsReceived.reduce((a, b) => a + b, 0);
  const seconds = sendingMs / 1000;
  console.log(
    `fdpass soak: ${count(sent.total)} fds to a child in ${count(sent.messages)} messages and ${count(sent.bareFds)} bare fds, seed ${seed}`,
  );
  for (const [type, name] of SOCKET_TYPES.entries()) {
    console.log(
      `  ${name.padEnd(9)} ${count(sent.fds[type]!).padStart(9)} fds sent, ${count(child.fdsReceived[type]!).padStart(9)} received`,
    );
  }
  console.log(
    `  ${count(sent.payloadBytes)} bytes of payload; the child echoed ${count(child.echoedFds)} fds of ${count(echoes.expectedFds)} planned, ${count(echoes.receivedFds)} came back`,
  );
  console.log(`  ${count(Math.round(sent.total / seconds))} fds/s (${seconds.toFixed(1)} s, not counting checkpoints)`);
  // Lost: sent and never received, there or back.
  const lost = { there: sent.total - received, back: child.echoedFds - echoes.receivedFds };
  const problems = [...child.problems, ...echoes.problems];
  const wrong = child.wrong + echoes.problems.length;
  console.log(`  lost: ${lost.there} fds on the way there, ${lost.back} on the way back; wrong messages: ${wrong}`);
  for (const problem of problems.slice(0, 10)) console.log(`    ${problem}`);

  console.log(`  after a full GC at each checkpoint: RSS, and (in it) what JS holds:`);
  console.log(`    ${'fds'.padStart(10)}  ${'parent'.padStart(10)} ${'(JS)'.padStart(10)}  ${'child'.padStart(10)} ${'(JS)'.padStart(10)}`);
  const columns = (m: MemorySample): string => `${mib(m.rssKiB).padStart(10)} ${`(${mib(m.heldByJsKiB)})`.padStart(10)}`;
  for (const c of checkpoints) console.log(`    ${count(c.fds).padStart(10)}  ${columns(c.parent)}  ${columns(c.child)}`);
  console.log(`    ${'peak'.padStart(10)}  ${mib(peaks.parent).padStart(10)} ${''.padStart(10)}  ${mib(peaks.child).padStart(10)}`);
  const warm = checkpoints[1]!;
  const last = checkpoints[checkpoints.length - 1]!;
  const growth = (key: keyof MemorySample) => ({ parent: last.parent[key] - warm.parent[key], child: last.child[key] - warm.child[key] });
  const rss = growth('rssKiB');
  const js = growth('heldByJsKiB');
  console.log(`  growth from 10% to 100%: RSS parent ${mib(rss.parent)}, child ${mib(rss.child)} (limit ${mib(RSS_GROWTH_LIMIT_KIB)});`);
  console.log(`    held by JS parent ${mib(js.parent)}, child ${mib(js.child)} (limit ${mib(JS_GROWTH_LIMIT_KIB)})`);

  // Open fds at the last checkpoint against the first, before any traffic: the same state (channels
  // open, nothing in flight), so any fd more is a leak and any fd less one closed behind our back.
  const before = checkpoints[0]!.openFds;
  const after = last.openFds;
  console.log(
    `  open fds before -> after: parent ${before.parent.length} -> ${after.parent.length}, child ${before.child.length} -> ${after.child.length}`,
  );
  const changed = (['parent', 'child'] as const).flatMap((side) => [
    ...surplus(after[side], before[side]).map((target) => `${side} has more: ${target}`),
    ...surplus(before[side], after[side]).map((target) => `${side} has lost: ${target}`),
  ]);
  for (const line of changed.slice(0, 10)) console.log(`    ${line}`);

  const failures = [
    (lost.there !== 0 || lost.back !== 0) && 'fds lost',
    child.echoedFds !== echoes.expectedFds && 'the child echoed other fds than planned',
    wrong !== 0 && 'wrong messages',
    changed.length !== 0 && 'open fds changed',
    rss.parent > RSS_GROWTH_LIMIT_KIB && "the parent's RSS grew",
    rss.child > RSS_GROWTH_LIMIT_KIB && "the child's RSS grew",
    js.parent > JS_GROWTH_LIMIT_KIB && 'what JS holds in the parent grew',
    js.child > JS_GROWTH_LIMIT_KIB && 'what JS holds in the child grew',
  ].filter(Boolean);
  console.log(failures.length === 0 ? 'PASS' : `FAIL: ${failures.join('; ')}`);
  if (failures.length !== 0) process.exitCode = 1;
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
