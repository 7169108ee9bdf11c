// Node objects in and out: a parent hands a child a TCP connection, a listening socket, a UDP
// socket and a file, as the Node objects it has; the child turns each received fd back into
// a Node object with one call (toSocket, toServer, toUdpSocket, toWriteStream) and uses it.
//
//   npx tsx examples/convert.ts
import dgram from 'node:dgram';
import { once } from 'node:events';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, forkWithChannel, parentChannel, toServer, toSocket, toUdpSocket, toWriteStream } from 'fdpass';

async function parent(): Promise<void> {
  const { child, channel } = forkWithChannel(__filename, ['child'], { stdio: ['ignore', 'inherit', 'inherit'] });
  const childExited = once(child, 'exit');

  // 1. A TCP connection. pauseOnConnect: Node never reads from it here, so what the client
  //    sends before the handoff waits in the kernel for the child.
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  client.write('sent before the handoff');
  const [connection] = await accepted;
  // close: true: once the kernel has the fd, fdpass destroys this copy; the child owns it.
  await channel.send({ data: 'connection', fds: [connection] }, { close: true });
  const [reply] = (await once(client, 'data')) as [Buffer];
  console.log(`parent: the TCP client got ${JSON.stringify(reply.toString())}`);
  client.end();

  // A socket Node reads from is refused: its buffered bytes would be lost.
  const eager = net.createServer();
  await new Promise<void>((resolve) => eager.listen(0, '127.0.0.1', resolve));
  const eagerAccepted = once(eager, 'connection') as Promise<[net.Socket]>;
  const eagerClient = net.connect((eager.address() as net.AddressInfo).port, '127.0.0.1');
  const [read] = await eagerAccepted;
  try {
    await channel.send(read);
  } catch (error) {
    console.log(`parent: sending a socket Node reads from: ${(error as { code: string }).code}`);
  }
  read.destroy();
  eagerClient.destroy();
  eager.close();

  // 2. The listening socket itself. The parent closes its copy once sent, so only the child
  //    accepts from here on.
  const { port } = server.address() as net.AddressInfo;
  await channel.send({ data: 'listener', fds: [server] });
  await new Promise((resolve) => server.close(resolve));
  await channel.recv(); // the child says it listens
  const response = await fetch(`http://127.0.0.1:${port}/hello`);
  console.log(`parent: GET /hello on port ${port}: ${JSON.stringify(await response.text())}`);

  // 3. A UDP socket, sent as the dgram.Socket it is.
  const udp = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
  const udpPort = udp.address().port;
  await channel.send({ data: 'udp', fds: [udp] });
  await new Promise<void>((resolve) => udp.close(resolve));
  const udpClient = dgram.createSocket('udp4');
  udpClient.send('ping', udpPort, '127.0.0.1');
  const [datagram] = (await once(udpClient, 'message')) as [Buffer];
  console.log(`parent: UDP port ${udpPort} answered ${JSON.stringify(datagram.toString())}`);
  udpClient.close();

  // 4. A file. The parent keeps its copy: the two share one file offset.
  const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-convert-'));
  const file = path.join(dir, 'log.txt');
  const fd = openSync(file, 'w+');
  writeSync(fd, 'line 1, by the parent\n');
  await channel.send({ data: 'file', fds: [fd] });
  await channel.recv(); // the child has written
  writeSync(fd, 'line 3, by the parent, after the child at the shared offset\n');
  closeSync(fd);
  console.log(`parent: the file reads:\n${readFileSync(file, 'utf8').trimEnd().replace(/^/gm, '  | ')}`);
  rmSync(dir, { recursive: true });

  await channel.close();
  await childExited;
}

async function child(): Promise<void> {
  const channel = parentChannel();
  const me = `child ${process.pid}`;

  // Each conversion takes its fd out of the message: message.close() leaves it to the object.
  const connection = await channel.recv();
  console.log(`${me}: received ${describe(connection.fd).kind}`);
  const socket = toSocket(connection);
  const [first] = (await once(socket, 'data')) as [Buffer];
  socket.end(`${me} read ${JSON.stringify(first.toString())}`);

  const listener = await channel.recv();
  const description = describe(listener.fd);
  if (description.kind === 'tcp-listener') console.log(`${me}: received ${description.kind} (${description.family})`);
  try {
    toSocket(listener); // the wrong kind: an error, and the fd stays in the message
  } catch (error) {
    console.log(`${me}: toSocket() of it: ${(error as Error).message}; still in the message: ${listener.fds[0] !== -1}`);
  }
  const server = await toServer(listener, {
    server: http.createServer((request, response) => {
      response.setHeader('connection', 'close'); // no keep-alive: the demo exits at once
      response.end(`served ${request.url} by ${me}`);
      server.close(); // one request is enough for the demo
    }),
  });
  await channel.send({ data: 'listening' });

  const udp = toUdpSocket(await channel.recv());
  const [ping, from] = (await once(udp, 'message')) as [Buffer, dgram.RemoteInfo];
  udp.send(`pong to ${ping.toString()} from ${me}`, from.port, from.address, () => udp.close());

  const file = await channel.recv();
  const stream = toWriteStream(file); // writes at the offset the parent left
  await new Promise<void>((resolve) => stream.end(`line 2, by ${me}\n`, resolve));
  await channel.send({ data: 'written' });
  await channel.close();
}

(process.argv[2] === 'child' ? child() : parent()).catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
