// A CommonJS user of fdpass, type-checked against the "require" condition's declarations.
import fdpass = require('fdpass');

async function passOne(fd: number): Promise<number> {
  const [a, b] = fdpass.Channel.pair();
  await a.send(fd);
  const message = await b.recv();
  const received: number = message.fd;
  const sent: boolean = fdpass.send(0, 0);
  // @ts-expect-error -- recv() returns a number, not a promise
  await fdpass.recv(0).then(() => sent);
  await Promise.all([a.close(), b.close()]);
  return received;
}

export = passOne;
