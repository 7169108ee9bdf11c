// An fd broker: a long-lived server on a Unix socket path opens what a client asks for and
// passes the open descriptor; the client awaits it. Here the broker serves files from its
// own directory, and TCP listening sockets it binds on the client's behalf. Only processes
// of the broker's own user get in (allow), and the socket file is 0600.
//
//   tsx examples/fd-broker.ts            runs the broker and a client in a second process
//   tsx examples/fd-broker.ts client P   a client of the broker listening at path P
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { connect, listen, type Channel } from 'fdpass';

/** What a client asks for, as the data of a message. */
type Request = { open: 'file'; name: string } | { open: 'tcp-listener' };

/** The broker's answer; the descriptor, if any, travels with it. */
type Reply = { ok: true; port?: number } | { ok: false; error: string };

async function broker(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-broker-'));
  writeFileSync(path.join(dir, 'motd.txt'), 'served by the broker\n');
  const socketPath = path.join(dir, 'broker.sock');

  const server = await listen({ path: socketPath, allow: (peer) => peer.uid === process.getuid?.() });
  server.on('refused', (peer) => console.log(`broker: refused pid ${peer.pid} (uid ${peer.uid})`));
  server.on('connection', (channel) => {
    console.log(`broker: client pid ${channel.peer.pid} connected`);
    serve(channel, dir).catch((error: unknown) => console.error('broker:', error));
  });
  console.log(`broker ${process.pid}: listening on ${socketPath}`);

  const client = spawn(process.execPath, [...process.execArgv, __filename, 'client', socketPath], { stdio: 'inherit' });
  await new Promise((resolve) => client.on('exit', resolve));
  await server.close({ waitForChannels: true });
  rmSync(dir, { recursive: true });
  console.log('broker: closed');
}

async function serve(channel: Channel, dir: string): Promise<void> {
  for await (const message of channel) {
    message.close(); // requests carry no fds; close any a client sent anyway
    const request = JSON.parse(message.data.toString()) as Request;
    try {
      if (request.open === 'file') {
        // Only names inside the broker's directory.
        const file = path.join(dir, path.basename(request.name));
        const fd = openSync(file, 'r');
        await channel.send({ data: JSON.stringify({ ok: true } satisfies Reply), fds: [fd] }, { close: true });
      } else {
        const listener = net.createServer();
        await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
        const { port } = listener.address() as net.AddressInfo;
        // close: the client owns the listening socket from here on; the broker keeps no copy.
        await channel.send({ data: JSON.stringify({ ok: true, port } satisfies Reply), fds: [listener] }, { close: true });
      }
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? String(error);
      await channel.send({ data: JSON.stringify({ ok: false, error: code } satisfies Reply) });
    }
  }
  await channel.close();
}

async function client(socketPath: string): Promise<void> {
  const broker = await connect(socketPath);
  console.log(`client ${process.pid}: connected to broker pid ${broker.peer.pid}`);

  async function ask(request: Request): Promise<{ reply: Reply; fd: number }> {
    await broker.send({ data: JSON.stringify(request) });
    const message = await broker.recv();
    return { reply: JSON.parse(message.data.toString()) as Reply, fd: message.fd };
  }

  const motd = await ask({ open: 'file', name: 'motd.txt' });
  const buf = Buffer.alloc(256);
  const n = readSync(motd.fd, buf, 0, buf.length, 0);
  console.log(`client: motd.txt reads ${JSON.stringify(buf.subarray(0, n).toString())}`);
  closeSync(motd.fd); // the client owns what it received

  const missing = await ask({ open: 'file', name: 'no-such-file' });
  console.log(`client: no-such-file -> ${JSON.stringify(missing.reply)}`);

  // A listening socket the broker bound: serve on it here.
  const tcp = await ask({ open: 'tcp-listener' });
  const port = tcp.reply.ok ? tcp.reply.port : undefined;
  const server = net.createServer((socket) => socket.end(`hello from client ${process.pid}`));
  await new Promise<void>((resolve) => server.listen({ fd: tcp.fd }, resolve));
  const answer = await new Promise<string>((resolve) => {
    let text = '';
    net
      .connect(port!, '127.0.0.1')
      .on('data', (chunk: Buffer) => (text += chunk.toString()))
      .on('end', () => resolve(text));
  });
  console.log(`client: port ${port}, bound by the broker, answered ${JSON.stringify(answer)}`);
  server.close();
  await broker.close();
}

if (process.argv[2] === 'client') void client(process.argv[3]!);
else void broker();
