// A small, one-process workout of the addon for valgrind (node bench/memcheck.mjs under
// valgrind --tool=memcheck; README "Soak and sanitizers"): Channels of each socket type
// passing bare fds and messages of data and fds both ways, the seed send/recv, a message
// over the receiver's limits, a server and a client, and every kind of close.
import { openSync, closeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Channel, closeFd, connect, listen, recv, send, setBlocking, socketpair } from 'fdpass';

const ROUNDS = Number(process.argv[2] ?? 200);
const file = openSync('/dev/null', 'r');

for (const type of ['stream', 'seqpacket', 'dgram']) {
  const [a, b] = Channel.pair(type, { maxFdsPerMessage: 8 });
  for (let i = 0; i < ROUNDS; i++) {
    const fds = Array.from({ length: i % 12 }, () => file);
    const sent = i % 3 === 0 ? a.send(file) : a.send({ data: Buffer.alloc((i * 97) % 5000, i), fds });
    const got = b.recv().then(
      (message) => b.send(message).then(() => message.close()),
      (error) => {
        // more than maxFdsPerMessage: dropped with its fds closed, reported here
        if (error.code !== 'ERR_FDPASS_TOO_MANY_FDS') throw error;
      },
    );
    await Promise.all([sent, got]);
    if (i % 12 <= 8 || i % 3 === 0) (await a.recv()).close();
  }
  void a.send(file); // left unread: closing must close it
  await a.close();
  await b.close();
}

const [x, y] = socketpair();
setBlocking(x, true);
setBlocking(y, true);
for (let i = 0; i < ROUNDS; i++) {
  if (!send(x, file)) throw new Error('send failed');
  closeFd(recv(y));
}
closeSync(x);
closeSync(y);

const socketPath = path.join(os.tmpdir(), `fdpass-memcheck-${process.pid}.sock`);
const server = await listen(socketPath);
const accepted = new Promise((resolve) => server.once('connection', resolve));
const client = await connect(socketPath);
const serverSide = await accepted;
await client.send({ data: 'hello', fds: [file, file] });
(await serverSide.recv()).close();
await client.close();
await serverSide.close();
await server.close();
closeSync(file);
console.log('done');
