// The load generator of npm run bench:http, in a process of its own: autocannon against
// http://127.0.0.1:<port>/, a warm-up, then the measured run; prints the result as JSON.
//   node --import tsx bench/http-load.ts <port> <close|keep-alive> <seconds> <connections>
import autocannon from 'autocannon';

const [port, mode, seconds, connections] = process.argv.slice(2);

async function run(duration: number): Promise<autocannon.Result> {
  return autocannon({
    url: `http://127.0.0.1:${port}/`,
    connections: Number(connections),
    duration,
    // A new TCP connection per request: the server answers with Connection: close and closes.
    headers: mode === 'close' ? { connection: 'close' } : {},
  });
}

async function main(): Promise<void> {
  await run(1);
  const result = await run(Number(seconds));
  const { average: requestsPerSecond, total } = result.requests;
  console.log(JSON.stringify({ requestsPerSecond, total, errors: result.errors, timeouts: result.timeouts, non2xx: result.non2xx }));
}

void main();
