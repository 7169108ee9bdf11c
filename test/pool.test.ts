// The worker pool with real processes: this test process is the master, workers are Node
// (serveFromPool, joinPool) or Python processes, and the load comes from autocannon or Node's
// http client in a process of their own, so that the master's fd counts are its own.
import { once } from 'node:events';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binding } from '../lib/binding.js';
import {
  Channel,
  WorkerPool,
  closeFd,
  forkWithChannel,
  spawnWorker,
  type PoolStrategy,
  type PoolWorker,
  type WorkerExit,
  type WorkerPoolOptions,
} from '../lib/index.js';
import { ACK_BYTES, STATUS, decodePoolMessage, encodeAck, encodeConnections, encodeHello } from '../lib/pool-protocol.js';
import { expectNoFdLeakAroundEachTest, fixtures, openFds, python, spawnNodePeer, spawnPeer, within } from './helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-pool-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const httpWorker = path.join(fixtures, 'pool-http-worker.mjs');
const pythonWorker = path.join(fixtures, 'pool-worker.py');

expectNoFdLeakAroundEachTest();
// libuv opens /dev/null (its reserve for running out of fds) when this process makes its first
// TCP socket: before the first count.
beforeAll(async () => {
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  server.close();
});

interface Response {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** The client's port: the pool's `data` callback sees it as remotePort. */
  localPort: number | undefined;
}

/** One request on a connection of its own, or on `agent`'s. */
function get(port: number, agent: http.Agent | false = false, urlPath = '/'): Promise<Response> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, agent, path: urlPath }, (response) => {
        const { localPort } = response.socket;
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (body += chunk));
        response.on('end', () => resolve({ status: response.statusCode!, headers: response.headers, body, localPort }));
      })
      .on('error', reject);
  });
}

// Linux's scheduling policies (sched.h), as /proc shows them.
const SCHED_OTHER = 0;
const SCHED_BATCH = 3;

/** The scheduling policy of a process's main thread, or of this thread, as /proc/<pid>/stat shows it (its 41st field). */
function policyOf(who: number | 'thread-self'): number {
  const stat = readFileSync(`/proc/${who}/stat`, 'utf8');
  // Fields from the 3rd on follow the command name's closing parenthesis.
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[41 - 3]);
}

/**
 * Whether this thread runs under SCHED_OTHER and may switch to SCHED_BATCH and back: where not
 * (a test run under chrt, a sandbox that refuses sched_setscheduler), batchScheduling changes
 * nothing by design, and its tests have nothing to see.
 */
function canSwitchToBatch(): boolean {
  if (policyOf('thread-self') !== SCHED_OTHER || binding.setSchedulingPolicy(SCHED_BATCH) !== 0) return false;
  return binding.setSchedulingPolicy(SCHED_OTHER) === 0;
}
const batchSchedulingWorks = canSwitchToBatch();

const pidOf = (response: Response): number => Number(/^served by (\d+)/.exec(response.body)?.[1]);

/** What a process has open, by kind ('socket', 'anon_inode:[eventfd]', a path...), sorted: a count that says what differs. */
function fdKinds(pid: number | 'self' = 'self'): string[] {
  return [...openFds(pid).values()]
    .filter((target) => !/^\/(proc|sys)\//.test(target))
    .map((target) => target.replace(/^(socket|pipe):\[\d+\]$/, '$1'))
    .sort();
}

/** Runs test/fixtures/pool-load.mjs; `during` runs once the load has started. */
async function load<T>(args: string[], during?: () => Promise<void>): Promise<T> {
  const peer = spawnNodePeer('pool-load.mjs', args);
  expect(await peer.line()).toBe('started');
  await during?.();
  const result = JSON.parse(await within(peer.line(), 30_000, 'the load generator')) as T;
  await peer.exited;
  return result;
}

/** Polls until check() passes (it throws until then), for at most ms. */
async function eventually(check: () => void, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      check();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

async function startPool(
  strategy: PoolStrategy = 'round-robin',
  script: ConstructorParameters<typeof WorkerPool>[0] = httpWorker,
  options: WorkerPoolOptions = {},
) {
  const pool = new WorkerPool(script, { workers: 2, strategy, stdio: ['ignore', 'inherit', 'inherit'], ...options });
  const errors: Error[] = [];
  pool.on('error', (error) => errors.push(error));
  const address = await pool.listen({ port: 0, host: '127.0.0.1' });
  return { pool, port: address!.port, errors };
}

/**
 * Load from another process for half a second: every worker has served, and opened what its
 * first connections open.
 */
async function warmUp(pool: WorkerPool, port: number): Promise<void> {
  const { served } = await load<{ served: Record<string, number> }>(['http', String(port), '0.5', '4']);
  expect(Object.keys(served).sort()).toEqual(pool.workers.map((worker) => String(worker.pid)).sort());
}

describe('WorkerPool', () => {
  it('handoff under load: autocannon, 64 connections keep-alive then one per request, zero errors, every worker serves, no fd left behind', async () => {
    const { pool, port, errors } = await startPool();
    await warmUp(pool, port);
    const pids = pool.workers.map((worker) => worker.pid!);
    await eventually(() => expect(pool.pendingConnections).toBe(0));
    const master = fdKinds();
    const workers = pids.map((pid) => fdKinds(pid));

    interface Loaded {
      total: number;
      errors: number;
      timeouts: number;
      non2xx: number;
      served: Record<string, number>;
    }
    for (const mode of ['keep-alive', 'close']) {
      const result = await load<Loaded>(['autocannon', String(port), mode, '3', '64']);
      expect({ mode, errors: result.errors, timeouts: result.timeouts, non2xx: result.non2xx }).toEqual({
        mode,
        errors: 0,
        timeouts: 0,
        non2xx: 0,
      });
      expect(Object.keys(result.served).sort()).toEqual(pids.map(String).sort());
      for (const pid of pids) expect(result.served[pid]).toBeGreaterThan(result.total / 10);
      console.log(`pool, ${mode}: ${result.total} requests, served ${JSON.stringify(result.served)}`);
    }

    // The clients are gone: each side is back where it was after the warm-up.
    await eventually(() => {
      expect(pool.pendingConnections).toBe(0);
      expect(fdKinds()).toEqual(master);
      expect(pids.map((pid) => fdKinds(pid))).toEqual(workers);
    });
    expect(pool.workers.map((worker) => worker.pid)).toEqual(pids); // nobody died
    expect(errors).toEqual([]);
    await pool.close();
  }, 60_000);

  it('a worker killed mid-run (SIGKILL) is replaced at once; clients see at most the connections it held fail', async () => {
    const { pool, port, errors } = await startPool('least-busy');
    await warmUp(pool, port);
    const [victim, survivor] = pool.workers.map((worker) => worker.pid!);
    const exits: WorkerExit[] = [];
    pool.on('exit', (exit) => exits.push(exit));
    const replaced = new Promise<number>((resolve) => pool.once('online', (worker) => resolve(worker.pid!)));

    const result = await load<{ ok: number; failed: Record<string, number>; served: Record<string, number> }>(
      ['http', String(port), '4', '50'],
      async () => {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        process.kill(victim!, 'SIGKILL');
      },
    );
    const replacement = await within(replaced, 10_000, 'the replacement');
    const failed = Object.values(result.failed).reduce((sum, n) => sum + n, 0);
    expect(exits).toEqual([expect.objectContaining({ pid: victim, signal: 'SIGKILL', id: 0, restartDelay: 0 })]);
    const [{ heldConnections, rehandedConnections }] = exits as [WorkerExit];
    console.log(
      `killed worker ${victim}: it held ${heldConnections} connections, ${rehandedConnections} were handed on; ` +
        `clients: ${result.ok} served, ${failed} failed ${JSON.stringify(result.failed)}; served ${JSON.stringify(result.served)}`,
    );
    expect(failed).toBeLessThanOrEqual(heldConnections);
    expect(result.served[survivor!]).toBeGreaterThan(0);
    // The replacement takes its share: in a second run, as under a slow build (ASan) it may join
    // only after the first one ended.
    const after = await load<{ served: Record<string, number> }>(['http', String(port), '1', '20']);
    expect(after.served[replacement]).toBeGreaterThan(0);
    expect(pool.workers.map((worker) => worker.pid)).toEqual([replacement, survivor]);
    expect(errors).toEqual([]);
    await pool.close();
  }, 60_000);

  it('connections a worker took without acknowledging go to another worker when it dies (a Python worker)', async () => {
    const marker = path.join(dir, 'no-ack');
    const { pool, port, errors } = await startPool('round-robin', { command: python, args: [pythonWorker, marker, 'no-ack'] });
    const [rogue] = pool.workers.map((worker) => worker.pid);
    const exited = new Promise<WorkerExit>((resolve) => pool.once('exit', resolve));
    // Round-robin: three to each worker; the rogue holds its three unacknowledged, then exits.
    const responses = await within(Promise.all(Array.from({ length: 6 }, () => get(port))), 10_000, 'the six requests');
    expect(responses.map((response) => response.status)).toEqual([200, 200, 200, 200, 200, 200]);
    expect(responses.map(pidOf)).not.toContain(rogue);
    expect(await exited).toEqual(expect.objectContaining({ pid: rogue, code: 0, heldConnections: 0, rehandedConnections: 3 }));
    expect(errors).toEqual([]);
    await pool.close();
  });

  it('connections a worker acknowledged are never handed on, even when it dies before serving them', async () => {
    const marker = path.join(dir, 'ack');
    const { pool, port, errors } = await startPool('round-robin', { command: python, args: [pythonWorker, marker, 'ack'] });
    const [rogue, other] = pool.workers.map((worker) => worker.pid);
    const exited = new Promise<WorkerExit>((resolve) => pool.once('exit', resolve));
    const outcomes = await within(
      Promise.all(
        Array.from({ length: 6 }, () =>
          get(port).then(
            (response) => pidOf(response),
            (error: NodeJS.ErrnoException) => error.code,
          ),
        ),
      ),
      10_000,
      'the six requests',
    );
    // The three the rogue acknowledged fail with it (the kernel closes them: no client waits
    // forever); the other worker served its three and no more.
    expect(outcomes.filter((outcome) => outcome === other)).toHaveLength(3);
    expect(outcomes.filter((outcome) => outcome === 'ECONNRESET')).toHaveLength(3);
    expect(await exited).toEqual(expect.objectContaining({ pid: rogue, heldConnections: 0, rehandedConnections: 0 }));
    expect(errors).toEqual([]);
    await pool.close();
  });

  it('a worker is handed a connection only once its acknowledgement is written: on its pipe, then on its channel when the pipe is full, else it holds the rest back', async () => {
    // This test is the master, speaking the protocol itself, and reads nothing the worker
    // writes: once its acknowledgement pipe and its channel hold all they can, it must wait.
    const { child, channel } = forkWithChannel(path.join(fixtures, 'pool-join-worker.mjs'), [], {
      stdio: ['ignore', 'pipe', 'inherit'],
      channel: { maxBufferedBytes: 1 }, // read no more than one message ahead of us
    });
    const taken: string[] = [];
    let exited = false;
    child.on('exit', () => (exited = true));
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => taken.push(...chunk.trim().split('\n')));
    const joined = await channel.recv();
    expect(decodePoolMessage(joined.data)).toEqual({ type: STATUS, taken: 0, open: 0 });
    const pipe = new Int32Array(2);
    expect(binding.pipe(pipe)).toBe(0);
    const [acks, ackWriteEnd] = pipe as unknown as [number, number];
    // The worker writes one acknowledgement per wake-up of its channel, however many messages
    // it brought: fill the pipe with records that acknowledge nothing, all but a page (a pipe
    // takes a write once a whole page of it is free).
    const room = 4096;
    const filler = encodeAck(Buffer.alloc(ACK_BYTES), 0, 0);
    for (;;) {
      try {
        writeSync(ackWriteEnd, filler);
      } catch {
        break; // EAGAIN: full
      }
    }
    expect(binding.read(acks, Buffer.alloc(room), 0, room)).toBe(room);
    await channel.send({ data: encodeHello(0), fds: [ackWriteEnd] });
    closeFd(ackWriteEnd);
    const devNull = openSync('/dev/null', 'r');
    // One connection at a time, each sent once the worker has taken the one before (so that
    // each comes with a wake-up and an acknowledgement of its own), until it takes no more:
    // its acknowledgements have filled the pipe's room, then its channel's socket.
    // A worker that has not taken one within a second is taken to be waiting.
    const patience = 1000;
    let sent = 0;
    const takes = async (count: number): Promise<boolean> => {
      for (const deadline = Date.now() + patience; Date.now() < deadline;) {
        if (taken.length >= count) return true;
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      return false;
    };
    try {
      do {
        await channel.send({ data: encodeConnections(1, [Buffer.from(String(sent))]), fds: [devNull] });
        sent++;
        if (sent > 20_000) throw new Error('the worker never stopped taking connections');
      } while (await takes(sent));
      // It holds back these too.
      for (let i = 0; i < 10; i++) await channel.send({ data: encodeConnections(1, [Buffer.from(String(sent++))]), fds: [devNull] });
    } finally {
      closeSync(devNull);
    }
    await new Promise((resolve) => setTimeout(resolve, patience));
    const stuckAt = taken.length;
    expect(stuckAt).toBeGreaterThan(room / ACK_BYTES);
    expect(stuckAt).toBeLessThan(sent);
    // Read both, and it takes the rest; the last acknowledgement counts them all.
    let acknowledged = 0;
    const records = { pipe: 0, channel: 0 };
    channel.on('message', (message) => {
      const status = decodePoolMessage(message.data);
      if (status.type !== STATUS) return;
      acknowledged = Math.max(acknowledged, status.taken);
      records.channel++;
    });
    const record = Buffer.alloc(ACK_BYTES);
    const drain = setInterval(() => {
      while (binding.read(acks, record, 0, ACK_BYTES) === ACK_BYTES) {
        const taken = record.readUInt32LE(0);
        acknowledged = Math.max(acknowledged, taken);
        if (taken > 0) records.pipe++; // the worker's, not the filler
      }
    }, 20);
    try {
      await eventually(() => expect(taken).toHaveLength(sent), 20_000);
      expect(taken).toEqual(Array.from({ length: sent }, (_, i) => `took ${i}`));
      await eventually(() => expect(acknowledged).toBe(sent));
    } finally {
      clearInterval(drain);
      closeFd(acks);
    }
    console.log(`the worker took ${stuckAt} of ${sent} connections, then waited; acknowledgements: ${JSON.stringify(records)}`);
    expect(records.pipe).toBeGreaterThan(0);
    expect(records.channel).toBeGreaterThan(0); // the pipe was full for a while
    await channel.close(); // the worker sees the end, leaves the pool and exits
    await eventually(() => expect(exited).toBe(true));
  }, 60_000);

  it('least-busy: a new connection goes to the worker with the fewest open, as the workers report them', async () => {
    // The client port of every connection the pool accepts, for the failure message: it tells
    // a count that did not fall from one raised by connections that were not the test's.
    const accepted: (number | undefined)[] = [];
    const { pool, port } = await startPool('least-busy', httpWorker, { data: ({ remotePort }) => void accepted.push(remotePort) });
    // Six connections kept open: three on each worker.
    const agents = Array.from({ length: 6 }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
    const first = await Promise.all(agents.map((agent) => get(port, agent)));
    const [a, b] = pool.workers.map((worker) => worker.pid!);
    expect(first.map(pidOf).filter((pid) => pid === a)).toHaveLength(3);
    // Close the three on worker a; once it has said so, the next three go to it.
    first.forEach((response, i) => pidOf(response) === a && agents[i]!.destroy());
    await eventually(() =>
      expect(
        pool.workers.map((worker) => worker.connections),
        `workers ${JSON.stringify(pool.workers)}; connections from client ports ${accepted.join(', ')}, ours ${first.map((r) => r.localPort).join(', ')}`,
      ).toEqual([0, 3]),
    );
    // One at a time, each kept open: a has 0, 1, then 2 against b's 3.
    const more = Array.from({ length: 3 }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
    const next = [];
    for (const agent of more) next.push(pidOf(await get(port, agent)));
    expect(next).toEqual([a, a, a]);
    expect(b).not.toBe(a);
    for (const agent of [...agents, ...more]) agent.destroy();
    await pool.close();
  });

  it('least-busy: a worker reports a closed connection at once, not when something else next wakes it', async () => {
    const { pool, port } = await startPool('least-busy');
    // One connection at a time: its close is the last thing its worker has to do.
    const waits: number[] = [];
    for (let i = 0; i < 4; i++) {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      await get(port, agent);
      expect(pool.workers.reduce((sum, worker) => sum + worker.connections, 0)).toBe(1);
      const closed = Date.now();
      agent.destroy();
      await eventually(() => expect(pool.workers.map((worker) => worker.connections)).toEqual([0, 0]), 5000);
      waits.push(Date.now() - closed);
    }
    // A few ms each (the poll is every 50); a report left for the worker's next wake-up took
    // about a second, or longer.
    expect(Math.max(...waits), `ms from each close to the master's count: ${waits.join(', ')}`).toBeLessThan(400);
    await pool.close();
  });

  it('data: each connection arrives with what the data callback returned for it (the client address here)', async () => {
    const pool = new WorkerPool(httpWorker, {
      workers: 2,
      args: ['data'],
      data: ({ remoteAddress, remotePort, remoteFamily }) => `${remoteFamily} ${remoteAddress} ${remotePort}`,
    });
    const { port } = (await pool.listen({ port: 0, host: '127.0.0.1' }))!;
    const client = net.connect(port, '127.0.0.1');
    await once(client, 'connect');
    const { localPort } = client;
    client.end('GET / HTTP/1.1\r\nHost: pool\r\nConnection: close\r\n\r\n');
    let reply = '';
    for await (const chunk of client) reply += String(chunk);
    // The worker first called toSocket() with a bad signal: a TypeError, and the connection
    // was still there to serve.
    expect(reply).toMatch(new RegExp(`\r\nx-pool-data: IPv4 127\\.0\\.0\\.1 ${localPort} \\(a bad signal: ERR_INVALID_ARG_TYPE\\)\r\n`));
    await pool.close();
  });

  it("serveFromPool: each connection gets the server's socket options, as net.Server gives those it accepts (TCP_NODELAY, keepalive)", async () => {
    const pool = new WorkerPool(httpWorker, { workers: 1, args: ['keep-alive'] });
    const { port } = (await pool.listen({ port: 0, host: '127.0.0.1' }))!;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const response = await get(port, agent);
    // An http.Server sets noDelay unless told otherwise; the connection has it from the
    // pool's listener, and the worker was told so: no setsockopt to set it again.
    expect(response.headers['x-no-delay']).toBe('true');
    expect(response.headers['x-set-no-delay-calls']).toBe('0');
    expect(response.headers['x-high-water-mark']).toBe('20000');
    // The kernel's view of the worker's end, idle between requests: its timer is keepalive's (2).
    const [socket] = Object.values(agent.sockets).flat().concat(Object.values(agent.freeSockets).flat());
    const hex = (n: number): string => n.toString(16).toUpperCase().padStart(4, '0');
    const entry = readFileSync('/proc/net/tcp', 'utf8')
      .split('\n')
      .map((line) => line.trim().split(/\s+/))
      .find((fields) => fields[1]?.endsWith(`:${hex(port)}`) && fields[2]?.endsWith(`:${hex(socket!.localPort!)}`));
    expect(entry?.[5]?.split(':')[0]).toBe('02');
    agent.destroy();
    await pool.close();
  });

  it('serveFromPool: TCP_NODELAY is set on connections whose listener did not have it', async () => {
    // The master tells its workers when every connection has TCP_NODELAY already, and they skip
    // setting it again: a listener without it must not be taken for one with it.
    const pool = new WorkerPool(httpWorker, { workers: 1 });
    const { port } = (await pool.listen({ port: 0, host: '127.0.0.1', noDelay: false }))!;
    const { headers } = await get(port);
    expect(headers['x-no-delay']).toBe('true');
    expect(headers['x-set-no-delay-calls']).toBe('1');
    await pool.close();
  });

  it('listen({ fd }): serves on a listening socket handed over by another process, and owns it', async () => {
    // A Python process binds and listens, and passes the socket as systemd or an old server would.
    const [mine, theirs] = Channel.pair();
    const binder = spawnPeer(
      python,
      ['-c', 'import socket; s = socket.create_server(("127.0.0.1", 0)); socket.send_fds(socket.socket(fileno=3), [b"\\0"], [s.fileno()])'],
      [theirs.fd],
    );
    await theirs.close();
    const { fd } = await mine.recv();
    await binder.exited;
    await mine.close();
    const pool = new WorkerPool(httpWorker, { workers: 1 });
    const address = await pool.listen({ fd });
    expect(address).toEqual({ address: '127.0.0.1', family: 'IPv4', port: expect.any(Number) as number });
    expect((await get(address!.port)).status).toBe(200);
    await pool.close(); // and the fd with it: the fd count around this test says so
    await expect(get(address!.port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('close(): requests under way finish, new clients are refused, the workers drain and exit', async () => {
    const { pool, port } = await startPool();
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    await get(port, agent); // a keep-alive connection, idle when close() comes
    const pids = pool.workers.map((worker) => worker.pid!);
    // Answered 500 ms after it comes, on a keep-alive connection: idle after its response, which
    // the drain must then close, not leave to the server's keep-alive timeout (5 s).
    const slowAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const slow = get(port, slowAgent, '/slow');
    await new Promise((resolve) => setTimeout(resolve, 200));
    const started = Date.now();
    await pool.close();
    expect(Date.now() - started).toBeLessThan(4500); // not the keep-alive timeout, nor close()'s
    expect((await slow).status).toBe(200);
    slowAgent.destroy();
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
    await expect(get(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    agent.destroy();
  });

  it.skipIf(!batchSchedulingWorks)(
    'batchScheduling: this thread runs under SCHED_BATCH while the pool accepts, its workers (a replacement too) under SCHED_OTHER; close() gives it back',
    async () => {
      expect(policyOf('thread-self')).toBe(SCHED_OTHER);
      const { pool, port } = await startPool();
      expect(policyOf('thread-self')).toBe(SCHED_BATCH);
      const pids = pool.workers.map((worker) => worker.pid!);
      for (const pid of pids) expect(policyOf(pid), `worker ${pid}`).toBe(SCHED_OTHER);
      // Started while this thread runs under SCHED_BATCH, which processes inherit.
      const replaced = new Promise<PoolWorker>((resolve) => pool.once('online', resolve));
      process.kill(pids[0]!, 'SIGKILL');
      const replacement = await within(replaced, 10_000, 'a replacement');
      expect(policyOf(replacement.pid!), 'the replacement').toBe(SCHED_OTHER);
      expect(policyOf('thread-self')).toBe(SCHED_BATCH);
      expect((await get(port)).status).toBe(200);
      await pool.close();
      expect(policyOf('thread-self')).toBe(SCHED_OTHER);

      const plain = new WorkerPool(httpWorker, { workers: 1, batchScheduling: false });
      await plain.listen({ port: 0, host: '127.0.0.1' });
      expect(policyOf('thread-self')).toBe(SCHED_OTHER);
      await plain.close();

      // A policy the thread had already is the caller's: the pool leaves it as it found it.
      expect(binding.setSchedulingPolicy(SCHED_BATCH)).toBe(0);
      try {
        const chosen = new WorkerPool(httpWorker, { workers: 1 });
        await chosen.listen({ port: 0, host: '127.0.0.1' });
        await chosen.close();
        expect(policyOf('thread-self')).toBe(SCHED_BATCH);
      } finally {
        binding.setSchedulingPolicy(SCHED_OTHER);
      }
    },
  );

  it.skipIf(!batchSchedulingWorks)(
    'batchScheduling: a worker thread started with spawnWorker while the pool accepts runs under SCHED_OTHER',
    async () => {
      // Threads inherit the policy of the thread that creates them, as processes do, and keep it
      // after close(), which gives back only this thread's.
      const { pool } = await startPool();
      expect(policyOf('thread-self')).toBe(SCHED_BATCH);
      const { worker, channel } = spawnWorker(
        `const { parentPort } = require('node:worker_threads');
       const stat = require('node:fs').readFileSync('/proc/thread-self/stat', 'utf8');
       parentPort.postMessage(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[41 - 3]));`,
        { eval: true },
      );
      try {
        const [policy] = (await within(once(worker, 'message'), 10_000, "the worker's policy")) as [number];
        expect(policy).toBe(SCHED_OTHER);
        expect(policyOf('thread-self')).toBe(SCHED_BATCH);
      } finally {
        await worker.terminate();
        await channel.close();
        await pool.close();
      }
    },
  );

  it('a worker script that fails at start: listen() rejects with ERR_FDPASS_WORKER_EXITED and closes the pool', async () => {
    const pool = new WorkerPool({ command: process.execPath, args: ['-e', 'process.exit(3)'] }, { workers: 2 });
    await expect(pool.listen({ port: 0, host: '127.0.0.1' })).rejects.toMatchObject({
      code: 'ERR_FDPASS_WORKER_EXITED',
      message: expect.stringContaining('code 3') as string,
    });
    await expect(pool.listen()).rejects.toMatchObject({ code: 'ERR_FDPASS_POOL_CLOSED' });
  });

  it('a worker that keeps dying soon after it joins is restarted, each time after a longer pause', async () => {
    const log = path.join(dir, 'short-lived.log');
    const pool = new WorkerPool(path.join(fixtures, 'pool-short-lived-worker.mjs'), { workers: 1, args: [log] });
    let online = 0;
    pool.on('online', () => online++);
    const delays: (number | undefined)[] = [];
    pool.on('exit', (exit) => delays.push(exit.restartDelay));
    await pool.listen({ port: 0, host: '127.0.0.1' });
    await eventually(() => expect(online).toBeGreaterThanOrEqual(5), 15_000);
    await pool.close();
    // From each exit to the next start, as the workers themselves logged them.
    const events = readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .map((line) => line.split(' '));
    const pauses: number[] = [];
    for (let i = 1; i + 1 < events.length && pauses.length < 4; i += 2) {
      expect([events[i]![0], events[i + 1]![0]]).toEqual(['exit', 'start']);
      pauses.push(Number(events[i + 1]![1]) - Number(events[i]![1]));
    }
    console.log(`restart pauses: ${pauses.join(', ')} ms`);
    expect(delays.slice(0, 4)).toEqual([100, 200, 400, 800]);
    // Measured by the workers: from one's exit to its replacement's start, at least the delay.
    [100, 200, 400, 800].forEach((least, i) => expect(pauses[i]).toBeGreaterThanOrEqual(least));
  }, 30_000);

  it('bad arguments are TypeErrors and RangeErrors with Node codes, and listen() reports what the kernel refused', async () => {
    expect(() => new WorkerPool(42 as unknown as string)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => new WorkerPool(httpWorker, { workers: 0 })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => new WorkerPool(httpWorker, { strategy: 'random' as PoolStrategy })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }),
    );
    expect(() => new WorkerPool(httpWorker, { batchScheduling: 'yes' as unknown as boolean })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }),
    );
    const pool = new WorkerPool(httpWorker, { workers: 1 });
    await expect(pool.listen({ port: 70_000 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(pool.listen({ host: '10.255.255.1', port: 0 })).rejects.toMatchObject({ code: 'EADDRNOTAVAIL', syscall: 'bind' });
    await expect(pool.listen({ fd: 0 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    await pool.close();
  });
});
