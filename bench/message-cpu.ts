// CPU time per message on each side of a Channel, from process.cpuUsage(): N messages of
// BYTES bytes with one fd each, after WARM untimed ones, sent 256 at a time as bench/run.ts does.
//   tsx bench/message-cpu.ts [BYTES] [N]     (prints sender and receiver µs per message)
//   internal: tsx bench/message-cpu.ts receive N WARM   (the receiving process, socket on fd 3)
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { Channel, socketpair } from 'fdpass';
import { watchLines } from './peer-process';

const WARM = 10_000;

function micros(used: NodeJS.CpuUsage, n: number): string {
  return `${((used.user + used.system) / n).toFixed(2)} µs (${(used.user / n).toFixed(2)} user)`;
}

async function receive(n: number, warm: number): Promise<void> {
  const channel = new Channel(3);
  console.log('ready');
  let received = 0;
  let cpu = process.cpuUsage();
  for await (const message of channel) {
    message.close();
    if (++received === warm) cpu = process.cpuUsage();
    if (received === warm + n) break;
  }
  console.log(`receiver ${micros(process.cpuUsage(cpu), n)}`);
}

async function sendAll(bytes: number, n: number): Promise<void> {
  const [mine, theirs] = socketpair();
  const child = spawn(process.execPath, [...process.execArgv, __filename, 'receive', String(n), String(WARM)], {
    stdio: ['ignore', 'pipe', 'inherit', theirs],
  });
  closeSync(theirs);
  const peer = watchLines(child);
  await peer.printed('ready');
  const fd = openSync('/dev/null', 'r');
  const channel = new Channel(mine);
  const message = { data: Buffer.alloc(bytes), fds: [fd] };
  const window = async (count: number): Promise<void> => {
    for (let sent = 0; sent < count;) {
      const batch: Promise<void>[] = [];
      for (let i = 0; i < 256 && sent < count; i++, sent++) batch.push(channel.send(message));
      await Promise.all(batch);
    }
  };
  await window(WARM);
  const cpu = process.cpuUsage();
  await window(n);
  const used = process.cpuUsage(cpu);
  const line = await peer.reported('receiver ');
  console.log(`${bytes} B + 1 fd: sender ${micros(used, n)}, receiver ${line}`);
  await channel.close();
}

if (process.argv[2] === 'receive') void receive(Number(process.argv[3]), Number(process.argv[4]));
else void sendAll(Number(process.argv[2] ?? 64), Number(process.argv[3] ?? 300_000));
