// npm run bench: fds per second between two processes, one fd per message, the receiver
// closing each fd, for a C baseline compiled in this run, fdpass's seed send/recv (the
// receiver closing with closeFd, and again with fs.closeSync), fdpass's Channel and Node's own
// handle passing; a one-fd round trip for C and Channel; and messages of 16 fds, 64 fds,
// 64 bytes with one fd and 4 KiB with one fd, each against C doing the same. Channel cases run twice: with the default
// budgets (128 fds, 4 MiB held for nobody: what the receiver reads at a time is bounded by
// them), and with wide ones (64 x 253 fds, 64 MiB), which measure the receiving alone.
// Every case is timed the same way: from the first send until the receiving process
// reports it has handled the N-th fd. The cases run in interleaved rounds; each reports its best,
// and each ratio is also given as the median of its rounds' ratios (a case against the C case
// measured in the same round), which a burst of load elsewhere moves less.
// `npm run bench -- 64b 4k` runs only the rows whose key contains one of the words (see `rows`),
// with the C rows they are measured against.
// Both sides import the built package ('fdpass', i.e. dist/), as users do: tsx's transform
// of lib/ reaches each re-exported name through a getter, which costs more than the call.
import { execFileSync, fork, spawn } from 'node:child_process';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Channel, lastError, send, setBlocking, socketpair } from 'fdpass';
import { compileC, out } from './compile';
import { median } from './median';
import { exited, watchLines, type Peer } from './peer-process';

const peerScript = path.join(__dirname, 'peer.ts');
let baseline = '';
const RUNS = Number(process.env.RUNS ?? 5);
const TARGET_SECONDS = Number(process.env.TARGET_SECONDS ?? 1);
const WARM_MESSAGES = Number(process.env.WARM_MESSAGES ?? 10_000);

/** A bench/peer.ts process holding the other end of a new socketpair as fd 3. */
async function startPeer(role: string, n: number, warm = 0): Promise<{ peer: Peer; socket: number }> {
  const [mine, theirs] = socketpair();
  const child = spawn(process.execPath, ['--import', 'tsx', peerScript, role, String(n), String(warm)], {
    stdio: ['ignore', 'pipe', 'inherit', theirs],
  });
  closeSync(theirs);
  const peer = watchLines(child);
  await peer.printed('ready');
  return { peer, socket: mine };
}

// Each case sends n fds (or makes n round trips) and returns the seconds it took.
type Case = (n: number, fd: number) => Promise<number>;

const cases: Record<string, Case> = {
  seedSync: (n, fd) => timeSeedSync('recv-sync', n, fd),
  seedSyncFsClose: (n, fd) => timeSeedSync('recv-sync-fs-close', n, fd),

  channel: (n, fd) => timeChannel(n, 1024, (channel) => channel.send(fd)),
  channelWide: (n, fd) => timeChannel(n, 1024, (channel) => channel.send(fd), 'recv-channel-wide'),

  async nodeIpc(n) {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const child = fork(peerScript, ['recv-node-ipc', String(n)], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    });
    const peer = watchLines(child);
    await peer.printed('ready');
    const start = performance.now();
    // Node queues handle messages itself (one in flight until the child acknowledges it).
    await inWindows(
      n,
      256,
      () => new Promise((resolve, reject) => child.send('fd', server, (error) => (error ? reject(error) : resolve()))),
    );
    await peer.printed('done');
    const seconds = (performance.now() - start) / 1000;
    await exited(child);
    server.close();
    return seconds;
  },

  async channelPingPong(n, fd) {
    const { peer, socket } = await startPeer('echo-channel', n);
    const channel = new Channel(socket);
    const start = performance.now();
    for (let i = 0; i < n; i++) {
      await channel.send(fd);
      closeSync((await channel.recv()).fd);
    }
    const seconds = (performance.now() - start) / 1000;
    await peer.printed('done');
    await channel.close();
    await exited(peer.child);
    return seconds;
  },
};

/** Seconds until a peer in `role` has received and closed n fds sent with the seed send(). */
async function timeSeedSync(role: string, n: number, fd: number): Promise<number> {
  const { peer, socket } = await startPeer(role, n);
  setBlocking(socket, true);
  const start = performance.now();
  for (let i = 0; i < n; i++) if (!send(socket, fd)) throw lastError() ?? new Error('send failed');
  await peer.printed('done');
  const seconds = (performance.now() - start) / 1000;
  closeSync(socket);
  await exited(peer.child);
  return seconds;
}

/** The baseline's figure: fds per second (throughput) or microseconds per round trip (pingpong). */
function runBaseline(mode: 'throughput' | 'pingpong', n: number, fdsPerMessage = 1, bytes = 1): number {
  const output = execFileSync(baseline, [mode, String(n), String(fdsPerMessage), String(bytes)], { encoding: 'utf8' });
  return Number(output.split('\n')[0]);
}

/** Makes count calls of send, window at a time: many sends in flight, as a busy server has them. */
async function inWindows(count: number, window: number, send: () => Promise<void>): Promise<void> {
  for (let sent = 0; sent < count;) {
    const batch: Promise<void>[] = [];
    for (let i = 0; i < window && sent < count; i++, sent++) batch.push(send());
    await Promise.all(batch);
  }
}

/**
 * Seconds until a recv-channel peer has received `messages` that a Channel sent with send,
 * after WARM_MESSAGES more that are not timed: the peer is a new process, and its first
 * thousands of messages run before the JIT has compiled the receive path.
 */
async function timeChannel(
  messages: number,
  window: number,
  send: (channel: Channel) => Promise<void>,
  role = 'recv-channel',
): Promise<number> {
  const { peer, socket } = await startPeer(role, messages, WARM_MESSAGES);
  const channel = new Channel(socket);
  await inWindows(WARM_MESSAGES, window, () => send(channel));
  await peer.printed('warm');
  const start = performance.now();
  await inWindows(messages, window, () => send(channel)); // the channel queues on EAGAIN
  await peer.printed('done');
  const seconds = (performance.now() - start) / 1000;
  await channel.close();
  await exited(peer.child);
  return seconds;
}

/** Channel messages of `bytes` bytes (0: none) with fdsPerMessage fds; n counts fds. */
function channelMessages(fdsPerMessage: number, bytes: number, role = 'recv-channel'): Case {
  return async (n, fd) => {
    const messages = Math.max(1, Math.round(n / fdsPerMessage));
    const message = { data: Buffer.alloc(bytes), fds: new Array<number>(fdsPerMessage).fill(fd) };
    const seconds = await timeChannel(messages, 256, (channel) => channel.send(message), role);
    return (seconds * n) / (messages * fdsPerMessage);
  };
}

/**
 * Sizes n so that one run takes about TARGET_SECONDS: a short trial, then a second run at
 * the size the trial suggests, as the first few thousand calls run before the JIT has
 * compiled them and a trial that short would size the runs too small.
 */
async function sized(run: (n: number) => Promise<number>, trial: number): Promise<number> {
  let n = trial;
  for (let pass = 0; pass < 2; pass++) {
    const seconds = await run(n);
    n = Math.max(trial, Math.round((n / seconds) * TARGET_SECONDS));
  }
  return n;
}

async function main(): Promise<void> {
  baseline = compileC('baseline');
  const fd = openSync('/dev/null', 'r');

  // Each measurement takes n and returns the seconds that n fds (or n round trips) took.
  const measurements = {
    cThroughput: (n: number) => Promise.resolve(n / runBaseline('throughput', n)),
    seedSync: (n: number) => cases.seedSync!(n, fd),
    seedSyncFsClose: (n: number) => cases.seedSyncFsClose!(n, fd),
    channel: (n: number) => cases.channel!(n, fd),
    channelWide: (n: number) => cases.channelWide!(n, fd),
    nodeIpc: (n: number) => cases.nodeIpc!(n, fd),
    cRoundTrip: (n: number) => Promise.resolve((runBaseline('pingpong', n) * n) / 1e6),
    channelRoundTrip: (n: number) => cases.channelPingPong!(n, fd),
    c16: (n: number) => Promise.resolve(n / runBaseline('throughput', Math.max(1, Math.round(n / 16)), 16)),
    channel16: (n: number) => channelMessages(16, 0)(n, fd),
    channel16Wide: (n: number) => channelMessages(16, 0, 'recv-channel-wide')(n, fd),
    c64: (n: number) => Promise.resolve(n / runBaseline('throughput', Math.max(1, Math.round(n / 64)), 64)),
    channel64: (n: number) => channelMessages(64, 0)(n, fd),
    channel64Wide: (n: number) => channelMessages(64, 0, 'recv-channel-wide')(n, fd),
    c64b: (n: number) => Promise.resolve(n / runBaseline('throughput', n, 1, 64)),
    channel64b: (n: number) => channelMessages(1, 64)(n, fd),
    channel64bWide: (n: number) => channelMessages(1, 64, 'recv-channel-wide')(n, fd),
    c4k: (n: number) => Promise.resolve(n / runBaseline('throughput', n, 1, 4096)),
    channel4k: (n: number) => channelMessages(1, 4096)(n, fd),
    channel4kWide: (n: number) => channelMessages(1, 4096, 'recv-channel-wide')(n, fd),
  };
  type Name = keyof typeof measurements;
  const trials: Record<Name, number> = {
    cThroughput: 2000,
    seedSync: 2000,
    seedSyncFsClose: 2000,
    channel: 2000,
    channelWide: 2000,
    nodeIpc: 500,
    cRoundTrip: 200,
    channelRoundTrip: 200,
    c16: 16_000,
    channel16: 16_000,
    channel16Wide: 16_000,
    c64: 32_000,
    channel64: 32_000,
    channel64Wide: 32_000,
    c64b: 2000,
    channel64b: 2000,
    channel64bWide: 2000,
    c4k: 2000,
    channel4k: 2000,
    channel4kWide: 2000,
  };
  // Each row: a measurement, and the C measurement its ratio is taken against (none: a C row).
  interface Row {
    label: string;
    measured: Name;
    against?: Name;
    unit: 'fds/s' | 'µs';
    target?: string;
  }
  const rows: Row[] = [
    { label: '(a) C, blocking sendmsg/recvmsg', measured: 'cThroughput', unit: 'fds/s' },
    { label: '(b) fdpass send/recv (sync)', measured: 'seedSync', against: 'cThroughput', unit: 'fds/s', target: '>= 0.9' },
    { label: '    the same, closing with fs.closeSync', measured: 'seedSyncFsClose', against: 'cThroughput', unit: 'fds/s' },
    { label: '(c) fdpass Channel (promises)', measured: 'channel', against: 'cThroughput', unit: 'fds/s', target: '>= 0.6' },
    { label: '    the same, wide budgets', measured: 'channelWide', against: 'cThroughput', unit: 'fds/s' },
    { label: "(d) Node's child.send(msg, handle)", measured: 'nodeIpc', against: 'cThroughput', unit: 'fds/s' },
    { label: '(a) C round trip', measured: 'cRoundTrip', unit: 'µs' },
    { label: '(c) Channel round trip', measured: 'channelRoundTrip', against: 'cRoundTrip', unit: 'µs', target: '<= 1.3' },
    { label: 'C, 16 fds per message', measured: 'c16', unit: 'fds/s' },
    { label: 'Channel, 16 fds per message', measured: 'channel16', against: 'c16', unit: 'fds/s', target: '>= 0.7' },
    { label: '    the same, wide budgets', measured: 'channel16Wide', against: 'c16', unit: 'fds/s' },
    { label: 'C, 64 fds per message', measured: 'c64', unit: 'fds/s' },
    { label: 'Channel, 64 fds per message', measured: 'channel64', against: 'c64', unit: 'fds/s', target: '>= 0.7' },
    { label: '    the same, wide budgets', measured: 'channel64Wide', against: 'c64', unit: 'fds/s' },
    { label: 'C, 64 B + 1 fd per message', measured: 'c64b', unit: 'fds/s' },
    { label: 'Channel, 64 B + 1 fd per message', measured: 'channel64b', against: 'c64b', unit: 'fds/s', target: '>= 0.8' },
    { label: '    the same, wide budgets', measured: 'channel64bWide', against: 'c64b', unit: 'fds/s' },
    { label: 'C, 4 KiB + 1 fd per message', measured: 'c4k', unit: 'fds/s' },
    { label: 'Channel, 4 KiB + 1 fd per message', measured: 'channel4k', against: 'c4k', unit: 'fds/s', target: '>= 0.6' },
    { label: '    the same, wide budgets', measured: 'channel4kWide', against: 'c4k', unit: 'fds/s' },
  ];
  // Words on the command line pick the rows whose measurement's name contains one of them.
  const words = process.argv.slice(2).map((word) => word.toLowerCase());
  const picked = words.length === 0 ? rows : rows.filter((row) => words.some((word) => row.measured.toLowerCase().includes(word)));
  const names = [...new Set(picked.flatMap((row) => (row.against ? [row.against, row.measured] : [row.measured])))];
  const shown = rows.filter((row) => names.includes(row.measured));

  const sizes = {} as Record<Name, number>;
  for (const name of names) sizes[name] = await sized(measurements[name], trials[name]);
  // Rounds interleave the cases, so a burst of load elsewhere on the machine hits all of
  // them alike; each case keeps its best round, the one least disturbed.
  const best = {} as Record<Name, number>;
  const rounds = {} as Record<Name, number[]>;
  for (let round = 0; round < RUNS; round++) {
    for (const name of names) {
      const secondsEach = (await measurements[name](sizes[name])) / sizes[name];
      best[name] = Math.min(best[name] ?? Infinity, secondsEach);
      (rounds[name] ??= []).push(secondsEach);
    }
  }
  closeSync(fd);

  // Throughput rows compare rates (C's time over ours), round trips compare times (ours over C's).
  const results = shown.map((row) => {
    const seconds = best[row.measured];
    const figure = row.unit === 'µs' ? seconds * 1e6 : 1 / seconds;
    const reference = row.against === undefined ? seconds : best[row.against];
    const ratioOf = (ours: number, theirs: number): number => (row.unit === 'µs' ? ours / theirs : theirs / ours);
    const ratio = ratioOf(seconds, reference);
    const against = row.against === undefined ? rounds[row.measured] : rounds[row.against];
    const medianRatio = median(rounds[row.measured].map((ours, round) => ratioOf(ours, against[round]!)));
    return { case: row.label, figure, unit: row.unit, ratio, medianRatio, target: row.target ?? '' };
  });
  console.log(
    `best of ${RUNS} interleaved runs of about ${TARGET_SECONDS} s each; ratios are to the C case of the same kind, in this run` +
      " (median: of the rounds' ratios, each to the C case of its round)\n",
  );
  console.log(`${'case'.padEnd(38)}${'figure'.padStart(12)}  ${'unit'.padEnd(6)}${'ratio'.padStart(7)}${'median'.padStart(8)}  target`);
  for (const row of results) {
    const figure = row.unit === 'µs' ? row.figure.toFixed(1) : Math.round(row.figure).toLocaleString('en-US');
    console.log(
      `${row.case.padEnd(38)}${figure.padStart(12)}  ${row.unit.padEnd(6)}${row.ratio.toFixed(2).padStart(7)}` +
        `${row.medianRatio.toFixed(2).padStart(8)}  ${row.target}`,
    );
  }
  console.log(`\nn per run: ${names.map((name) => `${name} ${sizes[name]}`).join(', ')}`);
  writeFileSync(
    path.join(out, 'results.json'),
    `${JSON.stringify({ date: new Date().toISOString(), node: process.version, sizes, rows: results }, null, 2)}\n`,
  );
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
