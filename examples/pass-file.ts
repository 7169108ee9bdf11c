// Demo: a parent process opens a file and accepts a TCP connection, then hands both
// descriptors to a child process, which reads and writes through them.
//
//   npm run demo        (tsx examples/pass-file.ts)
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Channel, socketpair } from 'fdpass';

async function parent(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-demo-'));
  const file = path.join(dir, 'notes.txt');
  writeFileSync(file, 'written by the parent\n');

  // A TCP server whose accepted connection the child will serve.
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect(port, '127.0.0.1');
  const connection = await accepted;

  // The child gets the other end of a socketpair as its fd 3.
  const [mine, theirs] = socketpair();
  const child = spawn(process.execPath, [...process.execArgv, __filename, 'child'], {
    stdio: ['ignore', 'inherit', 'inherit', theirs],
  });
  const exited = new Promise((resolve) => child.once('exit', resolve)); // it may exit before we wait
  closeSync(theirs);
  const channel = new Channel(mine);

  const fileFd = openSync(file, 'r+');
  await channel.send(fileFd, { close: true }); // the child owns the file now
  await channel.send(connection);
  connection.destroy(); // the child has its own copy of the connection
  console.log(`parent ${process.pid}: sent the file and the TCP connection to child ${child.pid}`);

  let reply = '';
  client.on('data', (chunk: Buffer) => (reply += chunk.toString()));
  client.write('hello, who is there?');
  await new Promise((resolve) => client.on('end', resolve));
  console.log(`parent ${process.pid}: the TCP client got: ${JSON.stringify(reply)}`);

  await exited;
  console.log(`parent ${process.pid}: the file now reads:\n${readFileSync(file, 'utf8').trimEnd().replace(/^/gm, '  | ')}`);
  await channel.close();
  client.destroy();
  server.close();
  rmSync(dir, { recursive: true });
}

async function child(): Promise<void> {
  const channel = new Channel(3);

  const { fd: fileFd } = await channel.recv();
  const buf = Buffer.alloc(256);
  const n = readSync(fileFd, buf, 0, buf.length, null);
  console.log(`child ${process.pid}: read ${JSON.stringify(buf.subarray(0, n).toString())} through the received fd`);
  writeSync(fileFd, `appended by the child, pid ${process.pid}\n`);
  closeSync(fileFd);

  const { fd: socketFd } = await channel.recv();
  const socket = new net.Socket({ fd: socketFd, readable: true, writable: true });
  const question = await new Promise<string>((resolve) => socket.once('data', (d) => resolve(d.toString())));
  console.log(`child ${process.pid}: the TCP client asked ${JSON.stringify(question)}`);
  socket.end(`child ${process.pid} answering on the connection the parent accepted`);
  await new Promise((resolve) => socket.on('close', resolve));
  await channel.close();
}

(process.argv[2] === 'child' ? child() : parent()).catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
