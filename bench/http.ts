// npm run bench:http: HTTP requests per second through a master and 2 workers, fdpass's
// WorkerPool against Node's cluster (round-robin, its default, and SCHED_NONE), under a load
// generator in a process of its own: a new TCP connection per request (`Connection: close`),
// then keep-alive. The load generator is bench/http-client.c by default, compiled in this run
// (one thread over epoll: about 60 µs of CPU per request with a new connection each, against
// autocannon's 330 on the same 2 vCPUs, so that the servers get most of the machine), or
// autocannon with `--client autocannon` (bench/http-load.ts). Every contender meets the same
// one. Two more contenders show what the pool's master gains from running under SCHED_BATCH
// (its batchScheduling option, on by default): the pool without it, and cluster's master
// with it. All the servers run side by side, idle but for the one under load. Each round
// loads each of them in turn for a few seconds, in alternating order (the listed order in
// even rounds, reversed in odd ones: by default the pool first, then last), so that on a
// shared machine the contenders of a round see the same noise; each ratio to cluster
// round-robin is taken within each round, and the report gives every round's ratios and their
// medians. Beside requests per second, each run reports the CPU time the server's processes
// (master and workers) used per request, from /proc: a figure that the machine's other work
// disturbs less, and the CPU time the load generator used per request (it shares the
// machine: the more it takes, the closer to 1 every ratio comes).
//   npm run bench:http -- [--rounds 9] [--seconds 3] [--connections 50] [--workers 2]
//                         [--client c|autocannon] [--contenders pool,cluster-rr,...]
//                         [--modes close,keep-alive]
// Contenders (all by default; cluster-rr always): see bench/http-server.ts.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { compileC, out } from './compile';
import { median } from './median';
import { exited, watchLines } from './peer-process';
import { children, cpuMilliseconds } from './proc';

const here = __dirname;
const CONTENDERS = ['pool', 'pool-sched-other', 'cluster-rr', 'cluster-rr-batch', 'cluster-none'] as const;
type Contender = (typeof CONTENDERS)[number];
/** Every ratio is to this one: Node's cluster as it comes. */
const BASE: Contender = 'cluster-rr';
const MODES = ['close', 'keep-alive'] as const;
type Mode = (typeof MODES)[number];

interface LoadResult {
  requestsPerSecond: number;
  total: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  /** CPU time of the server's master and workers per request. */
  cpuMicroseconds?: number;
  /** CPU time of the load generator per request. */
  clientCpuMicroseconds: number;
}

interface Contending {
  server: ChildProcess;
  port: string;
  /** The master and its workers. */
  pids: number[];
}

function option(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  return at === -1 ? fallback : Number(process.argv[at + 1]);
}

const rounds = option('rounds', 9);
const seconds = option('seconds', 3);
const connections = option('connections', 50);
const workers = option('workers', 2);
/** A comma-separated list option's words, or all of them. */
function list(name: string, all: readonly string[]): string[] {
  const at = process.argv.indexOf(`--${name}`);
  if (at === -1) return [...all];
  const words = process.argv[at + 1]?.split(',') ?? [];
  for (const word of words) if (!all.includes(word)) throw new Error(`--${name}: unknown ${word}; one of ${all.join(', ')}`);
  if (words.length === 0) throw new Error(`--${name} needs a list: one or more of ${all.join(', ')}`);
  return words;
}

const contenders = list('contenders', CONTENDERS) as Contender[];
if (!contenders.includes(BASE)) throw new Error(`--contenders must include ${BASE}: every ratio is to it`);
const modes = list('modes', MODES) as Mode[];
const clientAt = process.argv.indexOf('--client');
const client = clientAt === -1 ? 'c' : process.argv[clientAt + 1];
if (client !== 'c' && client !== 'autocannon') throw new Error(`--client must be c or autocannon, not ${client}`);

/** A contender's master (and its workers), listening: its port. */
async function startServer(contender: Contender): Promise<Contending> {
  const server = spawn(process.execPath, ['--import', 'tsx', path.join(here, 'http-server.ts'), contender, String(workers)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await watchLines(server).reported('listening ');
  return { server, port, pids: [server.pid!, ...children(server.pid!)] };
}

/** A run against one contender, with the CPU its processes used. */
async function measure(load: ReturnType<typeof startLoad>, contending: Contending, mode: Mode, duration: number): Promise<LoadResult> {
  const cpu = (): number => contending.pids.reduce((sum, pid) => sum + cpuMilliseconds(pid), 0);
  const before = cpu();
  const result = await load.run(contending.port, mode, duration);
  return { ...result, cpuMicroseconds: ((cpu() - before) * 1000) / result.total };
}

/** The load generator: one process for every run, a run per line written to it. */
function startLoad(): { run(port: string, mode: Mode, seconds: number): Promise<LoadResult>; stop(): Promise<void> } {
  const load =
    client === 'c'
      ? spawn(path.join(out, 'http-client'), [], { stdio: ['pipe', 'pipe', 'inherit'] })
      : spawn(process.execPath, ['--import', 'tsx', path.join(here, 'http-load.ts')], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: load.stdout })[Symbol.asyncIterator]();
  return {
    async run(port, mode, duration) {
      load.stdin.write(`${port} ${mode} ${duration} ${connections}\n`);
      const next: IteratorResult<string> = await lines.next();
      if (next.done === true) throw new Error('the load generator exited');
      return JSON.parse(next.value) as LoadResult;
    },
    async stop() {
      load.stdin.end();
      await exited(load);
    },
  };
}

const fixed = (value: number, digits = 2): string => value.toFixed(digits);

async function main(): Promise<void> {
  if (client === 'c') compileC('http-client');
  const generator = client === 'c' ? 'bench/http-client.c' : 'autocannon';
  console.log(`${rounds} rounds of ${seconds} s per contender, ${connections} connections, ${workers} workers, load from ${generator}`);
  const servers = {} as Record<Contender, Contending>;
  for (const contender of contenders) servers[contender] = await startServer(contender);
  const load = startLoad();
  const report: Record<string, unknown> = { rounds, seconds, connections, workers, client: generator };
  try {
    for (const mode of modes) {
      console.log(`\n${mode === 'close' ? 'new connection per request (Connection: close)' : 'keep-alive'}`);
      for (const contender of contenders) await load.run(servers[contender].port, mode, 2); // warm-up
      const compared = contenders.filter((c) => c !== BASE);
      const columns = (cells: string[]): string => cells.map((cell, i) => cell.padStart(Math.max(6, contenders[i]?.length ?? 0))).join(' ');
      const ratioColumns = (cells: string[]): string => cells.map((cell, i) => cell.padStart(compared[i]!.length + 3)).join(' ');
      console.log(
        `round | req/s: ${columns([...contenders])} | / rr: ${ratioColumns(compared.map((c) => `${c}/rr`))} | errors | ` +
          `CPU µs/request | client µs/request`,
      );
      const results: Record<Contender, LoadResult>[] = [];
      for (let round = 0; round < rounds; round++) {
        const order = round % 2 === 0 ? contenders : [...contenders].reverse();
        const result = {} as Record<Contender, LoadResult>;
        for (const contender of order) result[contender] = await measure(load, servers[contender], mode, seconds);
        results.push(result);
        const errors = contenders.map((c) => result[c].errors + result[c].timeouts + result[c].non2xx).join('/');
        console.log(
          `${String(round + 1).padStart(5)} |        ${columns(contenders.map((c) => fixed(result[c].requestsPerSecond, 0)))} |       ` +
            `${ratioColumns(compared.map((c) => fixed(result[c].requestsPerSecond / result[BASE].requestsPerSecond)))} | ${errors} | ` +
            `${contenders.map((c) => fixed(result[c].cpuMicroseconds!, 0)).join('/')} | ` +
            contenders.map((c) => fixed(result[c].clientCpuMicroseconds, 0)).join('/'),
        );
      }
      const ratios = Object.fromEntries(
        compared.map((c) => [c, results.map((r) => r[c].requestsPerSecond / r[BASE].requestsPerSecond)]),
      ) as Record<Contender, number[]>;
      const medians = Object.fromEntries(contenders.map((c) => [c, median(results.map((r) => r[c].requestsPerSecond))]));
      const medianRatios = Object.fromEntries(compared.map((c) => [c, median(ratios[c])]));
      const cpu = contenders.map((c) => median(results.map((r) => r[c].cpuMicroseconds!)));
      const clientCpu = contenders.map((c) => median(results.map((r) => r[c].clientCpuMicroseconds)));
      console.log(
        `median |        ${columns(contenders.map((c) => fixed(medians[c]!, 0)))} |       ` +
          `${ratioColumns(compared.map((c) => fixed(medianRatios[c]!)))} |        | ` +
          `${cpu.map((c) => fixed(c, 0)).join('/')} | ${clientCpu.map((c) => fixed(c, 0)).join('/')}`,
      );
      if (contenders.includes('pool'))
        console.log(
          `pool ahead of rr in ${ratios.pool.filter((r) => r > 1).length} of ${rounds} rounds (CPU and client columns: ${contenders.join('/')})`,
        );
      report[mode] = { contenders, results, ratios, medianRatios, medians, cpu, clientCpu };
    }
  } finally {
    await load.stop();
    for (const { server } of Object.values(servers)) {
      server.kill('SIGTERM');
      await exited(server);
    }
  }
  writeFileSync(path.join(out, 'http.json'), `${JSON.stringify(report, null, 2)}\n`);
}

void main();
