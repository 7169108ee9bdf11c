// The receiving side of each benchmark case, run as its own process with the socket on fd 3
// (or, for Node's handle passing, the IPC channel). Prints "ready", then "done" once the
// N-th fd has been received and closed (or, for echo, sent back).
import { closeSync } from 'node:fs';
import type { Server } from 'node:net';
import { Channel, closeFd, lastError, recv, send, setBlocking } from 'fdpass';

const [role, count, warmCount = '0'] = process.argv.slice(2);
const n = Number(count);
/** Messages received before the timed ones (recv-channel): "warm" is printed once they are in. */
const warm = Number(warmCount);

async function main(): Promise<void> {
  switch (role) {
    case 'recv-sync':
    case 'recv-sync-fs-close': {
      // Closing with fdpass's closeFd, or with fs.closeSync, which costs more per call.
      const close = role === 'recv-sync' ? closeFd : closeSync;
      setBlocking(3, true);
      console.log('ready');
      for (let i = 0; i < n; i++) {
        const fd = recv(3);
        if (fd < 0) throw lastError() ?? new Error('recv failed');
        close(fd);
      }
      break;
    }
    case 'echo-sync': {
      setBlocking(3, true);
      console.log('ready');
      for (let i = 0; i < n; i++) {
        const fd = recv(3);
        if (fd < 0 || !send(3, fd)) throw lastError() ?? new Error('recv or send failed');
        closeSync(fd);
      }
      break;
    }
    case 'recv-channel':
    case 'recv-channel-wide': {
      // Wide: budgets a whole batch of the largest messages fits in (64 x 253 fds, 64 MiB), so
      // that what is measured is the receiving, not the defaults' backpressure.
      const channel = new Channel(
        3,
        role === 'recv-channel-wide' ? { maxBufferedFds: 64 * 253, maxBufferedBytes: 64 * 1024 * 1024 } : undefined,
      );
      console.log('ready');
      let received = 0;
      if (warm === 0) console.log('warm');
      for await (const message of channel) {
        message.close();
        if (++received === warm) console.log('warm');
        if (received === warm + n) break;
      }
      break;
    }
    case 'echo-channel': {
      const channel = new Channel(3);
      console.log('ready');
      let echoed = 0;
      for await (const message of channel) {
        await channel.send(message.fd, { close: true });
        if (++echoed === n) break;
      }
      break;
    }
    case 'recv-node-ipc': {
      let received = 0;
      await new Promise<void>((resolve) => {
        process.on('message', (_message, handle) => {
          (handle as Server).close();
          if (++received === n) resolve();
        });
        console.log('ready');
      });
      process.disconnect();
      break;
    }
    default:
      throw new Error(`unknown role ${role}`);
  }
  console.log('done');
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
