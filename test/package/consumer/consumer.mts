// An ESM user of fdpass, type-checked against the installed tarball's declarations. It names
// no Node module itself: what Node's types it needs come through fdpass's declarations.
import { Channel, spawnWithChannel, toSocket, type ReceivedMessage } from 'fdpass';

export async function echoFirstMessage(channel: Channel): Promise<string> {
  const message: ReceivedMessage = await channel.recv({ signal: AbortSignal.timeout(1000) });
  // A Buffer, and a net.Socket: both from @types/node, which the declarations must load.
  const text: string = message.data.toString('utf8');
  const socket = toSocket(message.fd);
  socket.end(text);
  // The declarations are strict, not any: a wrong call is an error.
  // @ts-expect-error -- a string is no fd
  await channel.send('not an fd');
  return text;
}

export function startWorker(): Channel {
  const { child, channel } = spawnWithChannel(process.execPath, ['worker.mjs'], { stdio: 'inherit' });
  child.unref();
  return channel;
}
