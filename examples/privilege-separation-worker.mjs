// The unprivileged side of examples/privilege-separation.ts (test/privsep.test.ts runs it too):
// it tries what its uid may not do, then serves HTTP on the listening socket root hands it,
// answering with the content of the file root hands it. Plain JavaScript, so that node runs it
// under another uid with no loader (tsx) to read: all it loads from disk is this file and fdpass.
//
//   node privilege-separation-worker.mjs SECRET_PATH PORT [--drop-to=UID:GID]
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { parentChannel } from 'fdpass';

const [secretPath, port, dropTo] = process.argv.slice(2);
if (dropTo !== undefined) {
  // Started as root, because the worker's uid cannot read this code: it is loaded now, so
  // become that uid before anything else, the groups first (setgroups needs root).
  const [uid, gid] = dropTo.replace('--drop-to=', '').split(':').map(Number);
  process.setgroups([]);
  process.setgid(gid);
  process.setuid(uid);
}
const channel = parentChannel();

// What this uid cannot do for itself: read the root-only file, bind the low port.
const refused = { open: errorCode(() => closeSync(openSync(secretPath, 'r'))), bind: await bindError(Number(port)) };
await channel.send({ data: JSON.stringify({ uid: process.getuid(), gid: process.getgid(), refused }) });

// Root's answer: the listening socket and the open file. Both are this process's now: the
// HTTP server owns the first (server.close() closes it), this code the second. Not
// message.close(): it would close the listener under the server's feet.
const message = await channel.recv();
const [listenerFd, fileFd] = message.fds;
const server = http.createServer((request, response) => response.end(contentOf(fileFd)));
await new Promise((resolve) => server.listen({ fd: listenerFd }, resolve));
await channel.send({ data: 'serving' });

// Serve until root closes the channel.
await channel.recv().catch((error) => {
  if (error.code !== 'EOF') throw error;
});
server.close();
closeSync(fileFd);

function errorCode(attempt) {
  try {
    attempt();
    return null;
  } catch (error) {
    return error.code;
  }
}

function bindError(port) {
  const probe = net.createServer();
  return new Promise((resolve) => {
    probe.once('error', (error) => resolve(error.code));
    probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(null)));
  });
}

/** The whole file, read at offset 0: the file offset this fd shares with root's open stays put. */
function contentOf(fd) {
  const content = Buffer.alloc(fstatSync(fd).size);
  readSync(fd, content, 0, content.length, 0);
  return content;
}
