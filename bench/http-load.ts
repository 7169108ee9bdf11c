// The load generator of npm run bench:http, in a process of its own. It reads one run per
// line on stdin, `<port> <close|keep-alive> <seconds> <connections>`, runs autocannon against
// http://127.0.0.1:<port>/, and prints the result as one line of JSON, with the CPU time this
// process used per request. One process serves every run, so that each contender meets the
// same client, equally warm.
import { createInterface } from 'node:readline';
import autocannon from 'autocannon';

async function run(line: string): Promise<void> {
  const [port, mode, seconds, connections] = line.trim().split(' ');
  const cpu = process.cpuUsage();
  const result = await autocannon({
    url: `http://127.0.0.1:${port}/`,
    connections: Number(connections),
    duration: Number(seconds),
    // A new TCP connection per request: the server answers with Connection: close and closes.
    headers: mode === 'close' ? { connection: 'close' } : {},
  });
  const { average: requestsPerSecond, total } = result.requests;
  // The client's own CPU time per request: it shares the machine with the servers, so the
  // more of it a request takes, the closer to 1 any ratio of requests per second comes.
  const used = process.cpuUsage(cpu);
  const clientCpuMicroseconds = (used.user + used.system) / total;
  console.log(
    JSON.stringify({
      requestsPerSecond,
      total,
      errors: result.errors,
      timeouts: result.timeouts,
      non2xx: result.non2xx,
      clientCpuMicroseconds,
    }),
  );
}

async function main(): Promise<void> {
  for await (const line of createInterface({ input: process.stdin })) if (line.trim() !== '') await run(line);
}

void main();
