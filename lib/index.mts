// ESM entry: the CommonJS build's exports, so both module systems share one Channel class.
export { send, recv, closeFd, lastError, socketpair, setBlocking, Channel, ReceivedMessage, listen, connect, Server } from './index.js';
export { spawnWithChannel, forkWithChannel, spawnWorker, parentChannel, CHANNEL_FD_VARIABLE } from './index.js';
export { offerListeners, takeOverListeners, ListenerOffer, ListenerTakeover } from './index.js';
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
} from './index.js';
export { listenFds, notify, storeFds, LISTEN_FDS_START } from './index.js';
export type { ListenFd, ListenFdsOptions, NotifyState, NotifyOptions, StoreFdsOptions } from './index.js';
