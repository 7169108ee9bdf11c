// ESM entry: the CommonJS build's exports, so both module systems share one Channel class.
// The declarations use Node's types (Buffer, net.Socket...): this line, kept in the emitted
// .d.ts, loads them for a user whose tsconfig does not list "types" (from TypeScript 6 on, no
// @types package is loaded unless listed or referenced). @types/node is an optional peer.
/// <reference types="node" preserve="true" />
export { send, recv, closeFd, lastError, socketpair, setBlocking, Channel, ReceivedMessage, listen, connect, Server } from './index.js';
export { spawnWithChannel, forkWithChannel, spawnWorker, parentChannel, CHANNEL_FD_VARIABLE } from './index.js';
export { offerListeners, takeOverListeners, ListenerOffer, ListenerTakeover } from './index.js';
export { describe, toSocket, toServer, toUdpSocket, toReadStream, toWriteStream } from './index.js';
export { WorkerPool, joinPool, serveFromPool, PoolMember, PoolConnection } from './index.js';
export type {
  ListenOptions,
  ServerCloseOptions,
  ServerEvents,
  ServerSocketType,
  SocketPathOptions,
  ConnectOptions,
  PeerCredentials,
  SocketType,
  ChannelOptions,
  ChannelEvents,
  SendOptions,
  RecvOptions,
  ChannelOffer,
  HandshakeOptions,
  AcceptOptions,
  RejectedPeer,
  FdLike,
  Message,
  SystemError,
  FdpassError,
  FdpassErrorCode,
  SpawnWithChannelOptions,
  ForkWithChannelOptions,
  SpawnWorkerOptions,
  ChildWithChannel,
  WorkerWithChannel,
  OfferListenersOptions,
  TakeOverListenersOptions,
  ListenerOfferEvents,
  FdDescription,
  FdKind,
  IpFamily,
  SocketFamily,
  IpSocketDescription,
  UnixSocketDescription,
  OtherSocketDescription,
  NonSocketDescription,
  OpenFileFlags,
  FdSource,
  ConvertOptions,
  ToSocketOptions,
  ToServerOptions,
  ToUdpSocketOptions,
  ToReadStreamOptions,
  ToWriteStreamOptions,
  WorkerPoolOptions,
  WorkerPoolEvents,
  WorkerScript,
  PoolStrategy,
  PoolListenOptions,
  PoolCloseOptions,
  PoolConnectionInfo,
  PoolWorker,
  WorkerExit,
  PoolMemberEvents,
  PoolSocketOptions,
  InetAddress,
  TcpListenOptions,
} from './index.js';
export { listenFds, notify, storeFds, LISTEN_FDS_START } from './index.js';
export type { ListenFd, ListenFdsOptions, NotifyState, NotifyOptions, StoreFdsOptions } from './index.js';
