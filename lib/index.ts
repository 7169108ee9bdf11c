// fdpass: pass open file descriptors between processes over Unix domain sockets.
// The declarations use Node's types (Buffer, net.Socket...): this line, kept in the emitted
// .d.ts, loads them for a user whose tsconfig does not list "types" (from TypeScript 6 on, no
// @types package is loaded unless listed or referenced). @types/node is an optional peer.
/// <reference types="node" preserve="true" />
export { send, recv, lastError } from './send-recv-fd';
export { socketpair, setBlocking } from './socketpair';
export { closeFd } from './fd';
export type { SocketType } from './socket-type';
export { Channel, type ChannelOptions, type ChannelEvents, type SendOptions, type RecvOptions } from './channel';
export type { ChannelOffer, HandshakeOptions, AcceptOptions, RejectedPeer } from './win/handshake';
export { ReceivedMessage } from './message';
export { listen, Server, type ListenOptions, type ServerCloseOptions, type ServerEvents } from './server';
export type { ServerSocketType, SocketPathOptions } from './socket-address';
export { connect, type ConnectOptions } from './connect';
export { RawStream, type RawStreamOptions, type RawConnectOptions, type RawWrite } from './raw-stream';
export {
  spawnWithChannel,
  forkWithChannel,
  spawnWorker,
  parentChannel,
  CHANNEL_FD_VARIABLE,
  type SpawnWithChannelOptions,
  type ForkWithChannelOptions,
  type SpawnWorkerOptions,
  type ChildWithChannel,
  type WorkerWithChannel,
} from './child';
export {
  listenFds,
  notify,
  storeFds,
  LISTEN_FDS_START,
  type ListenFd,
  type ListenFdsOptions,
  type NotifyState,
  type NotifyOptions,
  type StoreFdsOptions,
} from './systemd';
export {
  offerListeners,
  takeOverListeners,
  ListenerOffer,
  ListenerTakeover,
  type OfferListenersOptions,
  type TakeOverListenersOptions,
  type ListenerOfferEvents,
} from './restart';
export { describe, type FdDescription, type FdKind, type IpFamily, type SocketFamily } from './describe';
export type { IpSocketDescription, UnixSocketDescription, OtherSocketDescription, NonSocketDescription, OpenFileFlags } from './describe';
export {
  toSocket,
  toServer,
  toUdpSocket,
  toReadStream,
  toWriteStream,
  type FdSource,
  type ConvertOptions,
  type ToSocketOptions,
  type ToServerOptions,
  type ToUdpSocketOptions,
  type ToReadStreamOptions,
  type ToWriteStreamOptions,
} from './convert';
export {
  WorkerPool,
  type WorkerPoolOptions,
  type WorkerPoolEvents,
  type WorkerScript,
  type PoolStrategy,
  type PoolListenOptions,
  type PoolCloseOptions,
  type PoolConnectionInfo,
  type PoolWorker,
  type WorkerExit,
} from './pool';
export { joinPool, serveFromPool, PoolMember, PoolConnection, type PoolMemberEvents, type PoolSocketOptions } from './pool-worker';
export type { InetAddress, TcpListenOptions } from './tcp-listener';
export type { PeerCredentials } from './peer';
export type { FdLike } from './fd';
export type { Message } from './outgoing';
export type { SystemError, FdpassError, FdpassErrorCode } from './errors';
