// A pool worker makes its TCP sockets without Node's type check of each fd, with the handle
// class Node made for the first one (lib/tcp-socket.ts). These tests tell when a Node version
// changes what that relies on (socket._handle, its class named TCP, open(fd)), and show that
// such a socket is a whole net.Socket that owns its fd.
import { once } from 'node:events';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { binding } from '../lib/binding.js';
import { toFd } from '../lib/fd.js';
import { skipsTypeCheck, tcpSocket } from '../lib/tcp-socket.js';
import { countFds, expectNoFdLeakAroundEachTest } from './helpers.js';

expectNoFdLeakAroundEachTest();

let server: net.Server;
let port: number;
beforeAll(async () => {
  server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as net.AddressInfo).port;
});
afterAll(() => new Promise((resolve) => server.close(resolve)));

/** A connected client, and a copy of the server side's fd that is ours (Node's own is closed). */
async function connection(): Promise<{ client: net.Socket; fd: number }> {
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const client = net.connect(port, '127.0.0.1');
  await once(client, 'connect');
  const [socket] = await accepted;
  const fd = binding.dupCloseOnExec(toFd(socket, 'socket'));
  expect(fd).toBeGreaterThanOrEqual(0);
  socket.destroy();
  await once(socket, 'close');
  return { client, fd };
}

async function echoOnce(client: net.Socket, socket: net.Socket): Promise<void> {
  client.write('ping');
  const [request] = (await once(socket, 'data')) as [Buffer];
  expect(request.toString()).toBe('ping');
  socket.write('pong');
  const [reply] = (await once(client, 'data')) as [Buffer];
  expect(reply.toString()).toBe('pong');
}

async function closeBoth(...sockets: net.Socket[]): Promise<void> {
  await Promise.all(
    sockets.map(async (socket) => {
      if (socket.closed) return;
      socket.destroy();
      await once(socket, 'close');
    }),
  );
}

describe('tcpSocket()', () => {
  it("learns Node's TCP handle class from the first socket, and makes the next ones with it: whole net.Sockets that own their fds", async () => {
    const before = countFds();
    const first = await connection();
    const made = tcpSocket(first.fd, {});
    // What this relies on, checked on this Node: a Node that changes it fails here.
    expect(skipsTypeCheck()).toBe(true);
    await echoOnce(first.client, made);
    await closeBoth(first.client, made);

    for (let i = 0; i < 3; i++) {
      const { client, fd } = await connection();
      const socket = tcpSocket(fd, { allowHalfOpen: true });
      expect(socket.remotePort).toBe(client.localPort);
      expect(socket.remoteAddress).toBe('127.0.0.1');
      expect(socket.allowHalfOpen).toBe(true);
      await echoOnce(client, socket);
      // The client ends: the socket sees the end and, half-open, can still answer.
      client.end();
      await once(socket, 'end');
      socket.end('bye');
      const [bye] = (await once(client, 'data')) as [Buffer];
      expect(bye.toString()).toBe('bye');
      await closeBoth(client, socket);
    }
    expect(countFds()).toBe(before); // each socket closed its fd
  });

  it('an fd Node cannot open is an error, and is still the caller’s', async () => {
    expect(skipsTypeCheck()).toBe(true);
    const { client, fd } = await connection();
    binding.close(fd);
    // A closed fd: the fast path's open fails, and the public way says why.
    expect(() => tcpSocket(fd, {})).toThrow(expect.objectContaining({ code: 'ERR_INVALID_FD_TYPE' }));
    await closeBoth(client);
  });
});
