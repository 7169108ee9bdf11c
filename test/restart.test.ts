// Zero-downtime restart: server processes hand their listening socket down the generations
// under continuous HTTP load; and, in this process, each step of the handover and the drain.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connect, offerListeners, takeOverListeners, type OfferListenersOptions } from '../lib/index';
import { countFds, expectNoFdLeakAroundEachTest, python, spawnNodePeer, within, type Peer } from './helpers';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), 'fdpass-restart-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let serial = 0;
const socketPath = (): string => path.join(dir, `restart${serial++}.sock`);

/** One GET on a new connection: the body (the pid or name of the server that answered) and headers. */
function get(port: number, urlPath = '/'): Promise<{ body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    // Resolves once the connection has closed, so that fd counts taken next are settled.
    http
      .get({ host: '127.0.0.1', port, path: urlPath, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.socket.once('close', () => resolve({ body, headers: res.headers }));
      })
      .on('error', reject);
  });
}

async function bodies(port: number, count: number): Promise<Set<string>> {
  const seen = new Set<string>();
  for (let i = 0; i < count; i++) seen.add((await get(port)).body);
  return seen;
}

/**
 * pid's fd count once it holds still: a server closes its side of a connection a moment after
 * the client has seen it close. A leaked fd holds still too.
 */
async function settledFdCount(pid: number): Promise<number> {
  let last = countFds(pid);
  for (let i = 0; i < 20; i++) {
    await sleep(50);
    const now = countFds(pid);
    if (now === last) return now;
    last = now;
  }
  return last;
}

describe('generations of server processes', () => {
  const started: Peer[] = [];
  const start = (args: string[], env: NodeJS.ProcessEnv = {}, stdin: 'ignore' | 'pipe' = 'ignore'): Peer => {
    const peer = spawnNodePeer('restart-server.mjs', args, [], env, stdin);
    started.push(peer);
    return peer;
  };
  afterEach(async () => {
    for (const peer of started.splice(0)) {
      if (peer.child.exitCode === null && peer.child.signalCode === null) peer.child.kill('SIGKILL');
      await peer.exited.catch(() => {});
    }
  });

  it('three swaps under keep-alive and connection-per-request load: no request fails, no connection is refused, each old generation exits', async () => {
    const path = socketPath();
    const first = start([path]);
    const port = Number(/^listening (\d+)$/.exec(await first.line())?.[1]);
    expect(await first.line()).toBe('offering');

    // 30 + 20 autocannon connections, and 4 + 4 of Node's own client.
    const load = spawnNodePeer('restart-load.mjs', [String(port), '30', '20', '4'], [], {}, 'pipe');
    started.push(load);
    expect(await load.line()).toBe('started');
    await sleep(600);

    const generations = [first];
    for (let generation = 2; generation <= 4; generation++) {
      const previous = generations.at(-1)!;
      const next = start([path]);
      expect(await next.line()).toBe(`took-over ${port} ${previous.child.pid}`);
      expect(await next.line()).toBe('offering');
      expect(await previous.line()).toBe(`handover ${next.child.pid}`);
      expect(await previous.line()).toBe('drained');
      expect(await within(previous.exited, 10_000, `generation ${generation - 1} exiting`)).toMatchObject({
        code: 0,
        signal: null,
        stderr: '',
      });
      generations.push(next);
      await sleep(600);
    }
    load.child.stdin!.end();
    const report = JSON.parse(await load.line()) as Record<string, Record<string, unknown> & { ok: number; pids: number[] }>;
    const pids = generations.map((peer) => peer.child.pid);
    console.log(`restart under load: ${JSON.stringify(report)}`);

    const failures = { errors: 0, timeouts: 0, non2xx: 0, mismatches: 0 };
    expect(report.autocannonKeepAlive).toMatchObject(failures);
    expect(report.autocannonPerRequest).toMatchObject(failures);
    expect(report.nodeKeepAlive).toMatchObject({ failed: 0, errors: [] });
    expect(report.nodePerRequest).toMatchObject({ failed: 0, errors: [] });
    for (const client of Object.values(report)) {
      expect(client.ok).toBeGreaterThan(10); // continuous load, even on a busy machine
      expect(client.pids.sort()).toEqual([...pids].sort()); // every generation served every kind of client
    }
  }, 60_000);

  it('a replacement that never says ready: the old generation goes on serving and offering, and its fd count comes back', async () => {
    const path = socketPath();
    const old = start([path], { READY_TIMEOUT: '500' });
    const port = Number(/^listening (\d+)$/.exec(await old.line())?.[1]);
    expect(await old.line()).toBe('offering');
    const oldPid = String(old.child.pid);
    expect(await bodies(port, 20)).toEqual(new Set([oldPid])); // libuv's lazily opened fds are open now
    const fdsBefore = await settledFdCount(old.child.pid!);

    const holder = start([path, 'hold'], {}, 'pipe');
    expect(await holder.line()).toBe('holding 1');
    expect(await old.line()).toBe('handover-error ERR_FDPASS_HANDOVER_TIMEOUT');
    expect(await bodies(port, 20)).toEqual(new Set([oldPid]));
    holder.child.stdin!.end();
    expect(await holder.exited).toMatchObject({ code: 0, stderr: '' });
    expect(await bodies(port, 20)).toEqual(new Set([oldPid]));
    expect(await settledFdCount(old.child.pid!)).toBe(fdsBefore);

    // The offer stands: a replacement that does say ready takes over.
    const next = start([path]);
    expect(await next.line()).toBe(`took-over ${port} ${oldPid}`);
    expect(await old.line()).toBe(`handover ${next.child.pid}`);
    expect(await old.line()).toBe('drained');
    expect(await old.exited).toMatchObject({ code: 0, stderr: '' });
    expect(await bodies(port, 5)).toEqual(new Set([String(next.child.pid)]));
  });
});

describe('the handover, step by step', () => {
  expectNoFdLeakAroundEachTest();

  /** An HTTP server on 127.0.0.1 answering its name, listening. */
  async function namedServer(name: string): Promise<http.Server> {
    const server = http.createServer((_req, res) => res.end(name));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return server;
  }
  /** An HTTP server answering 'old' that offers its socket at a new path, and the errors the offer reports. */
  async function offering(options?: OfferListenersOptions) {
    const path = socketPath();
    const old = await namedServer('old');
    const offer = await offerListeners(path, [old], options);
    const errors: Array<Error & { code?: string }> = [];
    offer.on('error', (error) => errors.push(error));
    return { path, old, offer, errors };
  }
  const portOf = (server: net.Server): number => (server.address() as net.AddressInfo).port;
  const closeServer = (server: net.Server): Promise<void> =>
    new Promise((resolve) => {
      server.close(() => resolve());
      if (server instanceof http.Server) server.closeAllConnections();
    });

  it('nobody offering: takeOverListeners resolves to null, for a missing path and for a file left by a dead process', async () => {
    const path = socketPath();
    expect(await takeOverListeners(path)).toBeNull();
    const bound = spawnSync(python, ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(path)})`]);
    expect(bound.status).toBe(0);
    expect(existsSync(path)).toBe(true);
    expect(await takeOverListeners(path)).toBeNull();
  });

  it('takes over: the new server listens on the same socket, the old one stops accepting only then, and drains', async () => {
    const path = socketPath();
    const old = await namedServer('old');
    const port = portOf(old);
    const offer = await offerListeners(path, [old]);
    const handovers: number[] = [];
    offer.on('handover', (peer) => handovers.push(peer.pid));

    const takeover = await takeOverListeners(path);
    expect(takeover).not.toBeNull();
    expect(takeover!.count).toBe(1);
    expect(takeover!.previous.pid).toBe(process.pid);
    expect(takeover!.addresses).toEqual([{ address: '127.0.0.1', family: 'IPv4', port }]);
    const replacement = http.createServer((_req, res) => res.end('new'));
    await takeover!.listen(replacement);
    expect(portOf(replacement)).toBe(port);
    expect(old.listening).toBe(true); // not before ready()
    await takeover!.ready();
    expect(old.listening).toBe(false);
    expect(existsSync(path)).toBe(false); // free for the new process's own offer
    expect(handovers).toEqual([process.pid]);
    await within(offer.drained, 5000, 'drained');
    expect(await bodies(port, 5)).toEqual(new Set(['new']));
    await closeServer(replacement);
  });

  it('drains without closing a connection under a client: an idle one is answered once more with Connection: close, a request in flight finishes, one idle past drainTimeout is closed', async () => {
    const path = socketPath();
    let finishSlow: () => void = () => {};
    const old = http.createServer((req, res) => {
      if (req.url === '/slow') finishSlow = () => res.end('old, slow');
      else res.end('old');
    });
    await new Promise<void>((resolve) => old.listen(0, '127.0.0.1', resolve));
    const port = portOf(old);
    const drainTimeout = 1000;
    const offer = await offerListeners(path, [old], { drainTimeout });

    const idle = await rawClient(port); // will send its next request during the drain
    expect(await idle.request('/')).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*Connection: keep-alive\r\n[^]*\r\n\r\nold$/);
    const quiet = await rawClient(port); // will say nothing more
    expect(await quiet.request('/')).toMatch(/Connection: keep-alive\r\n[^]*old$/);
    const slow = await rawClient(port);
    const slowResponse = slow.request('/slow');
    await sleep(50); // the request is in the server's hands

    const replacement = http.createServer((_req, res) => res.end('new'));
    const handedOverAt = performance.now();
    expect(await takeOverListeners(path, { servers: [replacement] })).not.toBeNull();
    expect(old.listening).toBe(false);

    await sleep(200);
    expect(idle.closedAt).toBeUndefined();
    expect(await idle.request('/')).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*Connection: close\r\n[^]*\r\n\r\nold$/);
    await within(idle.ended, 1000, 'the idle connection ending after its last response');

    // A request in flight at the handover finishes as it began (its 'request' event is past);
    // the connection's next request is the one answered with Connection: close.
    finishSlow();
    expect(await slowResponse).toMatch(/Connection: keep-alive\r\n[^]*old, slow$/);
    expect(await slow.request('/')).toMatch(/Connection: close\r\n[^]*old$/);
    await within(slow.ended, 1000, 'the slow connection ending after its last response');

    expect(quiet.closedAt).toBeUndefined();
    await within(offer.drained, 3000, 'drained');
    await Promise.all([idle.closed, slow.closed, quiet.closed]);
    expect(quiet.closedAt! - handedOverAt).toBeGreaterThanOrEqual(drainTimeout - 20);
    expect(idle.reset || slow.reset || quiet.reset).toBe(false);
    expect(await bodies(port, 3)).toEqual(new Set(['new']));
    await closeServer(replacement);
  });

  it('a replacement too slow to say ready is refused (its ready() rejects), and the old server goes on serving and offering', async () => {
    const { path, old, offer, errors } = await offering({ readyTimeout: 200 });
    const port = portOf(old);

    const late = await takeOverListeners(path);
    const replacement = http.createServer((_req, res) => res.end('late'));
    await late!.listen(replacement);
    await sleep(400);
    await expect(late!.ready()).rejects.toMatchObject({ code: 'ERR_FDPASS_HANDOVER_TIMEOUT' });
    expect(errors).toMatchObject([{ code: 'ERR_FDPASS_HANDOVER_TIMEOUT' }]);
    expect(old.listening).toBe(true);
    await closeServer(replacement);
    expect(await bodies(port, 5)).toEqual(new Set(['old']));

    const next = http.createServer((_req, res) => res.end('next'));
    expect(await takeOverListeners(path, { servers: [next] })).not.toBeNull();
    await within(offer.drained, 5000, 'drained');
    expect(await bodies(port, 5)).toEqual(new Set(['next']));
    await closeServer(next);
  });

  it('a handover that fails after takeOverListeners listened its servers: it closes them again, and the old server serves on', async () => {
    const path = socketPath();
    const old = await namedServer('old');
    const offer = await offerListeners(path, [old]);
    const replacement = http.createServer((_req, res) => res.end('new'));
    replacement.once('listening', () => void offer.close()); // withdrawn between listen() and ready()
    await expect(takeOverListeners(path, { servers: [replacement] })).rejects.toMatchObject({
      code: 'ERR_FDPASS_HANDOVER_FAILED',
      message: expect.stringMatching(/the offer was withdrawn/),
    });
    expect(replacement.listening).toBe(false);
    expect(old.listening).toBe(true);
    expect(await bodies(portOf(old), 5)).toEqual(new Set(['old']));
    await closeServer(old);
  });

  it('one replacement at a time: a second gets ERR_FDPASS_HANDOVER_BUSY; one that gives up leaves the old server offering', async () => {
    const { path, old, offer, errors } = await offering();

    const first = await takeOverListeners(path);
    await expect(takeOverListeners(path)).rejects.toMatchObject({ code: 'ERR_FDPASS_HANDOVER_BUSY' });
    await first!.close(); // closes the socket it never handed to a server
    await sleep(50);
    expect(errors).toMatchObject([
      { code: 'ERR_FDPASS_HANDOVER_FAILED', message: expect.stringMatching(/left before it said it listens/) },
    ]);
    expect(old.listening).toBe(true);
    const second = await takeOverListeners(path);
    expect(second).not.toBeNull();
    await second!.close();
    await offer.close();
    expect(existsSync(path)).toBe(false);
    expect(await takeOverListeners(path)).toBeNull();
    await closeServer(old);
  });

  it('a replacement that speaks out of turn is refused with the reason, and the offer goes on', async () => {
    const { path, old, offer, errors } = await offering();

    const peer = await connect(path);
    const listeners = await peer.recv();
    expect(JSON.parse(listeners.data.toString())).toMatchObject({ v: 1, type: 'listeners', addresses: [{ port: portOf(old) }] });
    expect(listeners.fds).toHaveLength(1);
    listeners.close();
    await peer.send({ data: 'ready, more or less' });
    const refusal = await peer.recv();
    expect(JSON.parse(refusal.data.toString())).toMatchObject({ v: 1, type: 'refused', code: 'ERR_FDPASS_HANDOVER_FAILED' });
    await expect(peer.recv()).rejects.toMatchObject({ code: 'EOF' });
    await peer.close();
    expect(errors).toMatchObject([{ code: 'ERR_FDPASS_HANDOVER_FAILED', message: expect.stringMatching(/which is no handover message/) }]);

    expect(old.listening).toBe(true);
    const next = await takeOverListeners(path);
    expect(next?.count).toBe(1);
    await next!.close();
    await offer.close();
    await closeServer(old);
  });

  it('ready() before every socket listens is refused, and so is a mismatched servers list; the old server keeps its socket', async () => {
    const path = socketPath();
    const old = await namedServer('old');
    const offer = await offerListeners(path, [old]);
    const takeover = await takeOverListeners(path);
    await expect(takeover!.ready()).rejects.toMatchObject({ code: 'ERR_INVALID_STATE' });
    await takeover!.close();
    const servers = [http.createServer(), http.createServer()];
    await expect(takeOverListeners(path, { servers })).rejects.toMatchObject({
      code: 'ERR_FDPASS_HANDOVER_FAILED',
      message: expect.stringMatching(/hands over 1 listening socket\(s\), and 2 server\(s\)/),
    });
    expect(servers.some((server) => server.listening)).toBe(false);
    expect(old.listening).toBe(true);
    await offer.close();
    await closeServer(old);
  });

  it('allow() on either side turns the other away', async () => {
    const path = socketPath();
    const old = await namedServer('old');
    const offer = await offerListeners(path, [old], { allow: () => false });
    await expect(takeOverListeners(path)).rejects.toMatchObject({
      code: 'ERR_FDPASS_HANDOVER_FAILED',
      message: expect.stringMatching(/closed the connection before handing anything over/),
    });
    await offer.close();
    const open = await offerListeners(path, [old]);
    await expect(takeOverListeners(path, { allow: () => false })).rejects.toMatchObject({
      code: 'ERR_FDPASS_HANDOVER_FAILED',
      message: expect.stringMatching(/runs as uid \d+, which allow\(\) refuses/),
    });
    await open.close();
    await closeServer(old);
  });

  it('bad arguments are TypeErrors with Node codes, before anything is bound', async () => {
    const path = socketPath();
    const idle = http.createServer();
    await expect(offerListeners(path, [])).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(offerListeners(path, [{} as net.Server])).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(offerListeners(path, [idle])).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE', message: /is not listening/ });
    const unix = net.createServer();
    await new Promise<void>((resolve) => unix.listen(`${path}.http`, resolve));
    await expect(offerListeners(path, [unix])).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
      message: /a Unix socket: only TCP listeners/,
    });
    await closeServer(unix);
    await expect(offerListeners(path, [await namedServer('x').then(async (s) => (await closeServer(s), s))])).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
    });
    const old = await namedServer('old');
    await expect(offerListeners(path, [old], { readyTimeout: 0 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(takeOverListeners(path, { servers: [old] })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_VALUE',
      message: /listening already/,
    });
    await expect(takeOverListeners(42 as unknown as string)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    expect(existsSync(path)).toBe(false);
    await closeServer(old);
  });
});

/** A keep-alive HTTP/1.1 client on one raw TCP connection: what the server sends, byte for byte. */
async function rawClient(port: number): Promise<{
  request(path: string): Promise<string>;
  ended: Promise<void>;
  closed: Promise<void>;
  closedAt: number | undefined;
  reset: boolean;
}> {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise((resolve) => socket.once('connect', resolve));
  let buffered = '';
  let waiting: ((response: string) => void) | undefined;
  const client = {
    closedAt: undefined as number | undefined,
    reset: false,
    ended: new Promise<void>((resolve) => socket.once('end', resolve)),
    closed: new Promise<void>((resolve) => socket.once('close', () => resolve())),
    request(path: string): Promise<string> {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: localhost\r\n\r\n`);
      return new Promise((resolve) => (waiting = resolve));
    },
  };
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buffered += chunk;
    const response = /^HTTP\/1\.1 [^]*?\r\n\r\n/.exec(buffered);
    const length = Number(/Content-Length: (\d+)/i.exec(response?.[0] ?? '')?.[1] ?? NaN);
    if (response && buffered.length >= response[0].length + length) {
      const whole = buffered.slice(0, response[0].length + length);
      buffered = buffered.slice(whole.length);
      waiting?.(whole);
      waiting = undefined;
    }
  });
  socket.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'ECONNRESET') client.reset = true;
  });
  socket.on('close', () => (client.closedAt = performance.now()));
  return client;
}
