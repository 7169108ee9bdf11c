// D-Bus with file descriptors (UNIX_FD, signature 'h'): dbus-native, which has no fd transport
// of its own on Node, over fdpass's RawStream. A service opens files for its callers and reads
// files they pass it; a client calls it through a private dbus-daemon.
//
//   tsx examples/dbus-fd.ts                 starts a private dbus-daemon, the service (a second
//                                           process) and a client, then stops them
//   tsx examples/dbus-fd.ts service SOCKET  the service alone, on the bus listening at SOCKET
//
// The part a user writes is connectBus(): connect a RawStream and give it to dbus-native as
// opts.stream. dbus-native sees writeWithFds() and the 'fds' event, negotiates UNIX_FD, queues
// the fds as they arrive and gives each message as many as its UNIX_FDS header says.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import dbus from 'dbus-native';
import { RawStream } from 'fdpass';

export const SERVICE = 'org.fdpass.Example';
export const OBJECT_PATH = '/org/fdpass/Example';

/** A connection to the bus listening at socketPath that can carry fds. */
export async function connectBus(socketPath: string): Promise<dbus.MessageBus> {
  const stream = await RawStream.connect(socketPath);
  return dbus.createClient({ stream });
}

/** A received fd's file, read from its start: what a caller does with the fd. */
export function readThrough(fd: number): string {
  const buf = Buffer.alloc(4096);
  return buf.subarray(0, readSync(fd, buf, 0, buf.length, 0)).toString();
}

type Bus = dbus.MessageBus & { nextSerial(): number };

/**
 * dbus-native's exported methods answer with a body only (0.16.1): a reply with fds is sent
 * here, and the handler returns this never-settling promise, so the bus sends no reply of its
 * own. The fds stay the caller's: RawStream sends them now, or holds copies until it can.
 */
function replyWithFds(bus: Bus, call: dbus.Message, signature: string, body: unknown[], fds: number[]): Promise<never> {
  bus.connection.message({
    type: dbus.messageType.methodReturn,
    serial: bus.nextSerial(),
    replySerial: call.serial,
    destination: call.sender,
    signature,
    body,
    fds,
  });
  return new Promise<never>(() => {});
}

/** The service: Open(s) -> h, OpenTwo(ss) -> (hh), Take(h) -> s, Echo(ay, h) -> (ay, h), Ping() -> s. */
export async function serve(socketPath: string, dir: string): Promise<dbus.MessageBus> {
  const bus = (await connectBus(socketPath)) as Bus;
  const open = (name: string): number => openSync(path.join(dir, path.basename(name)), 'r');
  bus.exportInterface(
    {
      Open(name: string, call: dbus.Message) {
        const fd = open(name);
        try {
          return replyWithFds(bus, call, 'h', [0], [fd]);
        } finally {
          closeSync(fd); // ours to close: the reply has its own copy
        }
      },
      OpenTwo(first: string, second: string, call: dbus.Message) {
        const fds = [open(second), open(first)];
        try {
          // Index 1 is the first file: the caller must map indices, not take fds in order.
          return replyWithFds(bus, call, '(hh)', [[1, 0]], fds);
        } finally {
          for (const fd of fds) closeSync(fd);
        }
      },
      Take(index: number, call: dbus.Message) {
        const fds = call.fds ?? [];
        try {
          return readThrough(fds[index]!);
        } finally {
          for (const fd of fds) closeSync(fd); // received fds are the receiver's
        }
      },
      Echo(bytes: Buffer, index: number, call: dbus.Message) {
        const fds = call.fds ?? [];
        try {
          return replyWithFds(bus, call, 'ayh', [bytes, 0], [fds[index]!]);
        } finally {
          for (const fd of fds) closeSync(fd);
        }
      },
      // Answered at once, as Open is: replies leave in the order the calls came.
      Ping: (call: dbus.Message) => replyWithFds(bus, call, 's', ['pong'], []),
    },
    OBJECT_PATH,
    {
      name: SERVICE,
      // [in, out, in names, out names]
      methods: {
        Open: ['s', 'h', ['name'], ['fd']],
        OpenTwo: ['ss', '(hh)', ['first', 'second'], ['fds']],
        Take: ['h', 's', ['fd'], ['content']],
        Echo: ['ayh', 'ayh', ['bytes', 'fd'], ['bytes', 'fd']],
        Ping: ['', 's', [], ['pong']],
      },
    },
  );
  await bus.requestName(SERVICE, 0);
  return bus;
}

/** Calls a method; resolves with the reply's body and fds (h values index into them). */
export function call(
  bus: dbus.MessageBus,
  member: string,
  signature = '',
  body: unknown[] = [],
  fds: number[] = [],
): Promise<{ body: unknown[]; fds: number[] }> {
  return new Promise((resolve, reject) => {
    bus.invoke(
      { destination: SERVICE, path: OBJECT_PATH, interface: SERVICE, member, signature, body, ...(fds.length > 0 ? { fds } : {}) },
      function (this: { message: dbus.Message }, error: Error | null, ...values: unknown[]) {
        if (error) reject(error);
        else resolve({ body: values, fds: this.message.fds ?? [] });
      },
    );
  });
}

/** A private bus: dbus-daemon listening at socketPath, stopped by killing its pid. */
export async function startBus(socketPath: string): Promise<ChildProcess> {
  const daemon = spawn('dbus-daemon', ['--session', '--nofork', '--print-address', `--address=unix:path=${socketPath}`], {
    // Its stderr says only that it may not raise its own fd limit, when not allowed to.
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  await new Promise<void>((resolve, reject) => {
    daemon.once('error', reject);
    daemon.once('exit', (code) => reject(new Error(`dbus-daemon exited with ${code}`)));
    daemon.stdout.once('data', () => resolve()); // it prints its address once it listens
  });
  daemon.removeAllListeners('exit');
  return daemon;
}

async function demo(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-dbus-'));
  const socketPath = path.join(dir, 'bus.sock');
  writeFileSync(path.join(dir, 'motd.txt'), 'served through D-Bus\n');
  writeFileSync(path.join(dir, 'other.txt'), 'the other file\n');
  const daemon = await startBus(socketPath);
  const service = spawn(process.execPath, [...process.execArgv, __filename, 'service', socketPath, dir], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise((resolve) => service.stdout.once('data', resolve)); // "ready"

  const bus = await connectBus(socketPath);
  const opened = await call(bus, 'Open', 's', ['motd.txt']);
  const fd = opened.fds[opened.body[0] as number]!;
  console.log(`client: Open("motd.txt") gave fd ${fd}, which reads ${JSON.stringify(readThrough(fd))}`);
  const two = await call(bus, 'OpenTwo', 'ss', ['motd.txt', 'other.txt']);
  const [first, second] = (two.body[0] as number[]).map((index) => two.fds[index]!);
  console.log(
    `client: OpenTwo: the first reads ${JSON.stringify(readThrough(first!))}, the second ${JSON.stringify(readThrough(second!))}`,
  );
  const taken = await call(bus, 'Take', 'h', [0], [fd]);
  console.log(`client: Take(fd) -> the service read ${JSON.stringify(taken.body[0])}`);
  for (const received of [fd, ...two.fds]) closeSync(received); // received fds are ours to close

  bus.connection.end();
  service.kill();
  await new Promise((resolve) => service.on('exit', resolve));
  daemon.kill();
  await new Promise((resolve) => daemon.on('exit', resolve));
  rmSync(dir, { recursive: true });
  console.log('client: done');
}

if (process.argv[2] === 'service') {
  void serve(process.argv[3]!, process.argv[4]!).then(() => console.log('ready'));
} else if (require.main === module) {
  void demo();
}
