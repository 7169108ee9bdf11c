// Children and workers with a channel: the parent starts a Python child, a Node child and a
// worker thread, each with one call that also gives it a Channel to the parent, hands each an
// open file over that channel, and each reads through the fd it received.
//
//   npx tsx examples/child-channel.ts
import { once } from 'node:events';
import { mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { isMainThread, threadId } from 'node:worker_threads';
import { forkWithChannel, parentChannel, spawnWithChannel, spawnWorker, type Channel } from 'fdpass';

// The Python child's end of the channel is the fd FDPASS_CHANNEL_FD names, in blocking mode:
// socket.recv_fds waits for the message, as it does not retry on EAGAIN.
const pythonChild = `
import json, os, socket
fd = int(os.environ['FDPASS_CHANNEL_FD'])
channel = socket.socket(fileno=fd)
_, fds, _, _ = socket.recv_fds(channel, 1, 1)
content = os.pread(fds[0], 256, 0).decode()
print(f"python child {os.getpid()}: read {json.dumps(content)} through fd {fds[0]}"
      f" (its channel: fd {fd}, FDPASS_CHANNEL_FD={fd}, blocking: {os.get_blocking(fd)})", flush=True)
os.close(fds[0])
`;

async function parent(): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-children-'));
  /** An open file written for `reader`: handed over with close, it is the reader's alone once sent. */
  function openFileFor(reader: string): number {
    const file = path.join(dir, `${reader.replace(/ /g, '-')}.txt`);
    writeFileSync(file, `written for the ${reader} by pid ${process.pid}\n`);
    return openSync(file, 'r');
  }
  async function handFile(reader: string, channel: Channel, exited: Promise<unknown>): Promise<void> {
    await channel.send(openFileFor(reader), { close: true });
    await exited;
    await channel.close();
  }

  const python = spawnWithChannel('python3', ['-c', pythonChild], { stdio: 'inherit' });
  await handFile('python child', python.channel, once(python.child, 'exit'));

  const node = forkWithChannel(__filename, ['child'], { stdio: 'inherit' });
  await handFile('node child', node.channel, once(node.child, 'exit'));

  // Node 20 does not run tsx's loader in a worker thread: preloading tsx/cjs there compiles this
  // file (compiled JavaScript needs no execArgv).
  const thread = spawnWorker(__filename, { execArgv: ['--require', require.resolve('tsx/cjs')] });
  await handFile('worker thread', thread.channel, once(thread.worker, 'exit'));

  rmSync(dir, { recursive: true });
}

/** The Node child's and the worker thread's side: one call opens the channel the parent started it with. */
async function readFromParent(who: string): Promise<void> {
  const channel = parentChannel();
  const message = await channel.recv();
  const buffer = Buffer.alloc(256);
  const content = buffer.toString('utf8', 0, readSync(message.fd, buffer, 0, buffer.length, 0));
  console.log(`${who}: read ${JSON.stringify(content)} through fd ${message.fd} (its channel: fd ${channel.fd})`);
  message.close(); // the received fd is ours to close (not with fs.closeSync in a worker, which warns)
  await channel.close();
}

const role = !isMainThread
  ? readFromParent(`worker thread ${threadId}`)
  : process.argv[2] === 'child'
    ? readFromParent(`node child ${process.pid}`)
    : parent();
role.catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
