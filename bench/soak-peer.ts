// The receiving side of npm run soak (bench/soak.ts): one Channel of each socket type on fds 3,
// 4 and 5. Checks every message against the plan, closes its fds or sends them back when the
// plan says so; at each checkpoint, once every channel has reached it, collects garbage and
// prints "checkpoint <i> <counts and the memory JS holds, as JSON>". Closes its channels and
// exits when stdin ends.
import { Channel } from 'fdpass';
import { collectGarbage, heldByJsKiB } from './heap';
import { Plan, SOCKET_TYPES, checkpointIndex, mismatch } from './soak-plan';

const identities = JSON.parse(process.argv[2]!) as string[];
const seed = Number(process.argv[3]);
const MAX_PROBLEMS = 10;

const channels = SOCKET_TYPES.map((_, type) => new Channel(3 + type));
const counts = { fdsReceived: SOCKET_TYPES.map(() => 0), messages: 0, echoedFds: 0, wrong: 0, problems: [] as string[] };
const reached = SOCKET_TYPES.map(() => -1);
let announced = -1;

async function serve(type: number): Promise<void> {
  const channel = channels[type]!;
  const plan = new Plan(seed, type, identities.length);
  for await (const message of channel) {
    const checkpoint = checkpointIndex(message);
    if (checkpoint >= 0) {
      reached[type] = checkpoint;
      if (checkpoint > announced && reached.every((index) => index >= checkpoint)) {
        announced = checkpoint;
        await collectGarbage();
        console.log(`checkpoint ${checkpoint} ${JSON.stringify({ ...counts, heldByJsKiB: heldByJsKiB() })}`);
      }
      continue;
    }
    const item = plan.next();
    counts.fdsReceived[type]! += message.fds.length;
    counts.messages++;
    const problem = mismatch(item, message, identities);
    if (problem) {
      counts.wrong++;
      if (counts.problems.length < MAX_PROBLEMS) counts.problems.push(`${SOCKET_TYPES[type]}: ${problem}`);
    }
    if (!item.echo) {
      message.close();
      continue;
    }
    await channel.send(item.bare ? message.fd : { data: message.data, fds: message.fds }, { close: true });
    counts.echoedFds += message.fds.length;
  }
}

process.stdin.on('end', () => {
  for (const channel of channels) void channel.close();
});
process.stdin.resume();
console.log('ready');
Promise.all(SOCKET_TYPES.map((_, type) => serve(type))).then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
