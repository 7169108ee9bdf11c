// D-Bus with fds, for real: a private dbus-daemon, the service of examples/dbus-fd.ts (dbus-native
// on a RawStream) in a process of its own, and clients: dbus-native on a RawStream in this
// process, and python3-dbus (libdbus). fd counts in every process, the daemon's included.
import type { ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { MessageBus } from 'dbus-native';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OBJECT_PATH, SERVICE, call, connectBus, readThrough, startBus } from '../examples/dbus-fd.js';
import { countFds, expectNoFdLeakAroundEachTest, isCloexec, python, root, spawnPeer, within, type Peer } from './helpers.js';

expectNoFdLeakAroundEachTest();

const tsx = path.join(root, 'node_modules', '.bin', 'tsx');
let dir: string;
let socketPath: string;
let daemon: ChildProcess;
let service: Peer;

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'fdpass-dbus-'));
  socketPath = path.join(dir, 'bus.sock');
  writeFileSync(path.join(dir, 'motd.txt'), 'served through D-Bus\n');
  writeFileSync(path.join(dir, 'other.txt'), 'the other file\n');
  daemon = await startBus(socketPath);
  service = spawnPeer(tsx, [path.join(root, 'examples', 'dbus-fd.ts'), 'service', socketPath, dir]);
  expect(await within(service.line(), 30_000, 'the service')).toBe('ready');
}, 40_000);

afterAll(async () => {
  service?.child.kill();
  await service?.exited;
  if (daemon) {
    const exited = new Promise((resolve) => daemon.once('exit', resolve));
    daemon.kill(); // by its pid
    await exited;
  }
  rmSync(dir, { recursive: true, force: true });
});

/** Until the count of pid's fds is `count` (a peer closes what it closes in its own time). */
async function fdCountSettles(pid: number, count: number): Promise<void> {
  const giveUp = Date.now() + 3000;
  while (countFds(pid) !== count && Date.now() < giveUp) await new Promise((resolve) => setTimeout(resolve, 10));
  expect(countFds(pid)).toBe(count);
}

/** A client connection for one test; the daemon's and the service's fd counts are the same after it as before. */
async function withClient(test: (bus: MessageBus) => Promise<void>): Promise<void> {
  const daemonBefore = countFds(daemon.pid);
  const serviceBefore = countFds(service.child.pid);
  const bus = await connectBus(socketPath);
  const stream = bus.connection.stream;
  try {
    await test(bus);
  } finally {
    const closed = new Promise((resolve) => stream.once('close', resolve));
    bus.connection.end();
    await within(closed, 5000, "the client's stream closing");
  }
  await fdCountSettles(service.child.pid!, serviceBefore);
  await fdCountSettles(daemon.pid!, daemonBefore); // the daemon let go of the connection and every fd
}

describe('dbus-native over RawStream, through dbus-daemon', () => {
  it('Open() returns an fd (h) the client reads, close-on-exec; Take() passes one the service reads', () =>
    withClient(async (bus) => {
      const opened = await call(bus, 'Open', 's', ['motd.txt']);
      expect(bus.connection.unixFdsAgreed).toBe(true); // negotiated, as the stream has writeWithFds
      expect(opened.body).toEqual([0]);
      expect(opened.fds).toHaveLength(1);
      const fd = opened.fds[0]!;
      expect(readThrough(fd)).toBe('served through D-Bus\n');
      expect(isCloexec(fd)).toBe(true);
      const mine = openSync(path.join(dir, 'other.txt'), 'r');
      const taken = await call(bus, 'Take', 'h', [0], [mine]);
      expect(taken).toEqual({ body: ['the other file\n'], fds: [] });
      closeSync(mine);
      closeSync(fd);
    }));

  it('a (hh) reply maps each index to the right fd', () =>
    withClient(async (bus) => {
      const two = await call(bus, 'OpenTwo', 'ss', ['motd.txt', 'other.txt']);
      expect(two.body).toEqual([[1, 0]]);
      const [first, second] = (two.body[0] as number[]).map((index) => two.fds[index]!);
      expect(readThrough(first!)).toBe('served through D-Bus\n');
      expect(readThrough(second!)).toBe('the other file\n');
      for (const fd of two.fds) closeSync(fd);
    }));

  it('a reply without fds and a reply with one, read together in one read, each get the right fds', () =>
    withClient(async (bus) => {
      await call(bus, 'Ping'); // connected: the handshake's reads are over
      const stream = bus.connection.stream;
      // Every push is one read of the socket (small reads are never joined).
      const pushes: number[] = [];
      const push = stream.push.bind(stream);
      stream.push = (chunk: Buffer | null) => {
        if (chunk) pushes.push(chunk.length);
        return push(chunk);
      };
      const ping = call(bus, 'Ping');
      const open = call(bus, 'Open', 's', ['motd.txt']);
      await new Promise((resolve) => process.nextTick(resolve)); // dbus-native's cork lets go of both calls
      // Block this event loop while both replies arrive and queue in the socket.
      const until = Date.now() + 300;
      while (Date.now() < until);
      const [pong, opened] = await within(Promise.all([ping, open]), 5000, 'the replies');
      expect(pushes).toHaveLength(1);
      expect(pong).toEqual({ body: ['pong'], fds: [] });
      expect(opened.fds).toHaveLength(1);
      expect(readThrough(opened.fds[0]!)).toBe('served through D-Bus\n');
      closeSync(opened.fds[0]!);
    }));

  it('a 4 MiB argument with an fd round-trips (partial writes both ways)', () =>
    withClient(async (bus) => {
      const bytes = randomBytes(4 * 1024 * 1024);
      const mine = openSync(path.join(dir, 'other.txt'), 'r');
      const echoed = await within(call(bus, 'Echo', 'ayh', [bytes, 0], [mine]), 20_000, 'the echo');
      closeSync(mine);
      expect(Buffer.compare(Buffer.from(echoed.body[0] as Uint8Array), bytes)).toBe(0);
      expect(echoed.fds).toHaveLength(1);
      expect(readThrough(echoed.fds[echoed.body[1] as number]!)).toBe('the other file\n');
      closeSync(echoed.fds[0]!);
    }));

  it('python3-dbus (libdbus) takes an fd from the service and passes one to it', async () => {
    const serviceBefore = countFds(service.child.pid);
    const script = `
import dbus, os, sys
bus = dbus.bus.BusConnection(sys.argv[1])
obj = bus.get_object(${JSON.stringify(SERVICE)}, ${JSON.stringify(OBJECT_PATH)})
fd = obj.Open('motd.txt', dbus_interface=${JSON.stringify(SERVICE)}).take()
print(repr(os.pread(fd, 100, 0).decode()))
mine = os.open(sys.argv[2], os.O_RDONLY)
print(repr(str(obj.Take(dbus.types.UnixFd(mine), dbus_interface=${JSON.stringify(SERVICE)}))))
os.close(mine)
os.close(fd)
`;
    const peer = spawnPeer(python, ['-c', script, `unix:path=${socketPath}`, path.join(dir, 'other.txt')]);
    const result = await within(peer.exited, 20_000, 'python3-dbus');
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe("'served through D-Bus\\n'\n'the other file\\n'\n");
    await fdCountSettles(service.child.pid!, serviceBefore);
  });
});
