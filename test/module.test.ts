// The package as users load it: require() and import, by path and by package name (through
// package.json's "exports"), each in its own process; one class identity when both load in
// one process; and the public types.
import { closeSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, expectTypeOf, it } from 'vitest';
import type * as esmEntry from '../lib/index.mjs';
import {
  Channel,
  ReceivedMessage,
  lastError,
  recv,
  send,
  socketpair,
  type ChannelEvents,
  type FdLike,
  type Message,
  type RecvOptions,
  type SendOptions,
  type FdpassError,
  type SystemError,
} from '../lib/index.js';
import { expectNoFdLeakAroundEachTest, root, spawnNodePeer } from './helpers.js';

const dir = mkdtempSync(path.join(tmpdir(), 'fdpass-module-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = path.join(dir, 'payload.txt');
writeFileSync(file, 'loaded and passed');

expectNoFdLeakAroundEachTest();

const dist = path.join(root, 'dist');
const exportNames = [
  'CHANNEL_FD_VARIABLE',
  'Channel',
  'LISTEN_FDS_START',
  'ListenerOffer',
  'ListenerTakeover',
  'PoolConnection',
  'PoolMember',
  'RawStream',
  'ReceivedMessage',
  'Server',
  'WorkerPool',
  'closeFd',
  'connect',
  'describe',
  'forkWithChannel',
  'joinPool',
  'lastError',
  'listen',
  'listenFds',
  'notify',
  'offerListeners',
  'parentChannel',
  'recv',
  'send',
  'serveFromPool',
  'setBlocking',
  'socketpair',
  'spawnWithChannel',
  'spawnWorker',
  'storeFds',
  'takeOverListeners',
  'toReadStream',
  'toServer',
  'toSocket',
  'toUdpSocket',
  'toWriteStream',
];

/** Runs a fixture; kills it if it hangs; returns what it printed as JSON. */
async function runFixture(fixture: string, args: string[]): Promise<unknown> {
  const peer = spawnNodePeer(fixture, args);
  const killer = setTimeout(() => peer.child.kill('SIGKILL'), 20_000);
  const exit = await peer.exited.finally(() => clearTimeout(killer));
  expect({ code: exit.code, signal: exit.signal, stderr: exit.stderr }).toEqual({ code: 0, signal: null, stderr: '' });
  return JSON.parse(exit.stdout) as unknown;
}

const used = {
  exports: exportNames,
  channel: 'loaded and passed',
  sent: true,
  seed: 'loaded and passed',
  content: 'loaded and passed',
};

describe('loading the package', () => {
  it.each([
    ['by path', path.join(dist, 'index.js')],
    ["as require('fdpass')", 'fdpass'],
  ])('require() %s loads the CommonJS build, and it passes fds', async (_, spec) => {
    expect(await runFixture('lifecycle-module-require.cjs', [spec, file])).toEqual({ resolved: path.join(dist, 'index.js'), ...used });
  });

  it.each([
    ['by path', path.join(dist, 'index.mjs')],
    ["as import('fdpass')", 'fdpass'],
  ])('import %s loads the ESM entry, and it passes fds', async (_, spec) => {
    expect(await runFixture('lifecycle-module-import.mjs', [spec, file])).toEqual({ resolved: path.join(dist, 'index.mjs'), ...used });
  });

  it('import and require in one process give the very same Channel class and functions', async () => {
    const same = Object.fromEntries(exportNames.map((name) => [name, true]));
    expect(await runFixture('lifecycle-module-both.mjs', [])).toEqual({ names: exportNames, same, instance: true, lastError: 'EBADF' });
  });

  it('package.json\'s "exports" name files that exist, and each entry\'s types declare its runtime exports', () => {
    const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as {
      main: string;
      types: string;
      exports: { '.': Record<'import' | 'require', { types: string; default: string }> };
    };
    const entry = pkg.exports['.'];
    for (const target of [pkg.main, pkg.types, entry.import.types, entry.import.default, entry.require.types, entry.require.default]) {
      expect(existsSync(path.join(root, target)), target).toBe(true);
    }
    // The ESM entry re-exports a list by hand: its declarations must name every runtime export.
    for (const types of [entry.import.types, entry.require.types]) {
      const text = readFileSync(path.join(root, types), 'utf8');
      for (const name of exportNames) expect(text, `${types} declares ${name}`).toMatch(new RegExp(`\\b${name}\\b`));
    }
  });
});

describe('types', () => {
  // Checked by `npm run typecheck` (tsc over test/, part of `npm test`): a wrong type fails it.
  it('Channel: recv() resolves to a ReceivedMessage, send() to nothing, pair() to two channels', () => {
    expectTypeOf(Channel.prototype.recv).returns.toEqualTypeOf<Promise<ReceivedMessage>>();
    expectTypeOf(Channel.prototype.recv).parameters.toEqualTypeOf<[options?: RecvOptions]>();
    expectTypeOf(Channel.prototype.send).returns.toEqualTypeOf<Promise<void>>();
    expectTypeOf(Channel.prototype.send).parameters.toEqualTypeOf<[value: FdLike | Message, options?: SendOptions]>();
    expectTypeOf(Channel.pair).returns.toEqualTypeOf<[Channel, Channel]>();
    expectTypeOf(Channel.prototype.close).returns.toEqualTypeOf<Promise<void>>();
    expectTypeOf(Channel.prototype.ref).returns.toEqualTypeOf<Channel>();
    expectTypeOf(Channel.prototype.unref).returns.toEqualTypeOf<Channel>();
    expectTypeOf<ChannelEvents['message']>().toEqualTypeOf<[message: ReceivedMessage]>();
    expectTypeOf<ReceivedMessage['fds']>().toEqualTypeOf<readonly number[]>();
    expectTypeOf<ReceivedMessage['fd']>().toEqualTypeOf<number>();
    expectTypeOf<RecvOptions['signal']>().toEqualTypeOf<AbortSignal | undefined>();
  });

  it("IO::FDPass's calls: send() returns a boolean, recv() an fd number, lastError() an Error or null", () => {
    expectTypeOf(send).returns.toEqualTypeOf<boolean>();
    expectTypeOf(send).parameters.toEqualTypeOf<[socketFd: number, fd: FdLike]>();
    expectTypeOf(recv).returns.toEqualTypeOf<number>();
    expectTypeOf(lastError).returns.toEqualTypeOf<SystemError | FdpassError | null>();
    expectTypeOf(socketpair).returns.toEqualTypeOf<[number, number]>();
  });

  it('the ESM entry declares the same classes and functions as the CommonJS one', () => {
    expectTypeOf<typeof esmEntry.Channel>().toEqualTypeOf<typeof Channel>();
    expectTypeOf<typeof esmEntry.ReceivedMessage>().toEqualTypeOf<typeof ReceivedMessage>();
    expectTypeOf<typeof esmEntry.send>().toEqualTypeOf<typeof send>();
    expectTypeOf<typeof esmEntry.recv>().toEqualTypeOf<typeof recv>();
    expectTypeOf<esmEntry.FdLike>().toEqualTypeOf<FdLike>();
  });

  it('at run time too: send() gives a boolean, recv() a number, Channel#recv() a ReceivedMessage', async () => {
    const [x, y] = socketpair();
    const sent: unknown = send(x, 0);
    const got: unknown = recv(y);
    expect(typeof sent).toBe('boolean');
    expect(typeof got).toBe('number');
    expect(got).toBeGreaterThan(2);
    expect(new ReceivedMessage([got as number]).fd).toBe(got);
    for (const fd of [got as number, x, y]) closeSync(fd);
    const [a, b] = Channel.pair();
    const sending = a.send(0);
    expect(sending).toBeInstanceOf(Promise);
    expect(await sending).toBeUndefined();
    const message: unknown = await b.recv();
    expect(message).toBeInstanceOf(ReceivedMessage);
    (message as ReceivedMessage).close();
    await Promise.all([a.close(), b.close()]);
  });
});
