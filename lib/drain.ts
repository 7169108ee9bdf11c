// Stopping a server that has handed its listening socket over, and draining its connections
// without closing one under a client's feet.
//
// Why not Node's own `server.close()` followed by `closeIdleConnections()` (which http.Server's
// close() itself calls since Node 19)? Under load, a keep-alive connection is "idle" only for
// the moment between a response and the client's next request, and the client does not wait:
// it sends its next request as soon as it has read the response. Closing such a connection
// races with that request. Whichever way the race goes, the client loses: its request arrives
// after the close (the kernel answers with a reset: ECONNRESET), or it is sent after the
// client read the server's FIN but before it noticed it ("socket hang up"). A request already
// sent cannot safely be retried by the client, since it cannot know whether it was processed.
// In a trial under load the easy way reset 20 requests. In test/restart.test.ts (three swaps)
// it failed 30 to 82 of autocannon's keep-alive requests per run, and 12 of Node's own
// keep-alive client: every connection that client had, at each swap (ECONNRESET).
//
// What the drain does instead: only the server that answers a request can close a keep-alive
// connection without that race, by saying so in the response (`Connection: close`): the
// client reads it before it sends again, and opens a new connection for its next request,
// which the replacement accepts. So after the handover
//   - each request is answered with `Connection: close`, and Node closes the connection once
//     that response is sent; a request in flight finishes the same way;
//   - an idle connection is left open for `drainTimeout` ms, in which a client that uses it
//     gets its answer and the close together; after that it is closed. Only a client that
//     stayed silent for the whole timeout and sends at that very moment can still meet the
//     race, as it can with every keep-alive server's own idle timeout (Node's
//     keepAliveTimeout closes idle connections after 5 s, the default here too).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Server as NetServer } from 'node:net';

/** An HTTP or HTTPS server: Node's http layer keeps track of its connections and requests. */
interface HttpServer extends NetServer {
  closeIdleConnections(): void;
}

function isHttpServer(server: NetServer): server is HttpServer {
  return typeof (server as Partial<HttpServer>).closeIdleConnections === 'function';
}

/**
 * Stops `server` accepting at once (its copy of the listening socket is closed before this
 * returns), and resolves once every connection it had has closed. An HTTP server's
 * connections are drained as said above; others are left to the application to end.
 */
export function stopAndDrain(server: NetServer, drainTimeout: number): Promise<void> {
  const closed = new Promise<void>((resolve) => server.once('close', () => resolve()));
  if (!isHttpServer(server)) {
    server.close();
    return closed;
  }
  // Runs before the application's own 'request' listener, so before any header is written.
  const answerWithClose = (_request: IncomingMessage, response: ServerResponse): void => {
    response.shouldKeepAlive = false;
  };
  server.prependListener('request', answerWithClose);
  closeListenerOnly(server);
  const idleTimer = setTimeout(() => server.closeIdleConnections(), drainTimeout).unref();
  return closed.finally(() => {
    clearTimeout(idleTimer);
    server.off('request', answerWithClose);
  });
}

/**
 * http.Server's close(), which also closes every idle connection (Node 19 and later), with
 * that step left out for now: the rest of it (closing the listening handle, stopping the
 * request-timeout checks, 'close' once the connections are gone) is still wanted. Node calls
 * `server.closeIdleConnections()` through the instance, so an own property shadows it for the
 * length of the call. The restart test fails with resets if a Node version stops honouring it.
 */
function closeListenerOnly(server: HttpServer): void {
  const own = Object.getOwnPropertyDescriptor(server, 'closeIdleConnections');
  Object.defineProperty(server, 'closeIdleConnections', { value: () => {}, configurable: true, writable: true });
  try {
    server.close();
  } finally {
    if (own) Object.defineProperty(server, 'closeIdleConnections', own);
    else delete (server as Partial<HttpServer>).closeIdleConnections;
  }
}
