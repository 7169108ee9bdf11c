// The handshakes' reads on a non-blocking transport socket before its channel polls it: exactly
// n bytes, which may arrive in parts, within a time limit, never more (what follows is the
// channel's records).
import { errnoException, fdpassError } from '../errors';
import { windowsTransport } from './transport';
import { uvCode } from './uv-code';

const EAGAIN = uvCode('EAGAIN');
/** How often a handshake looks for its bytes (it runs once per connection, briefly). */
const POLL_MS = 2;

/**
 * Reads exactly `bytes` bytes from sock within timeoutMs. `what` names them in errors. Once
 * `signal` aborts (the socket is being closed, and its value may soon be another socket's),
 * the socket is not read again and the promise rejects with the signal's reason.
 */
export function readExactly(sock: number, bytes: number, timeoutMs: number, what: string, signal?: AbortSignal): Promise<Buffer> {
  const win = windowsTransport();
  const buffer = Buffer.alloc(bytes);
  let have = 0;
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const attempt = (): void => {
      if (signal?.aborted) return reject(signal.reason as Error);
      for (;;) {
        const n = win.recv(sock, buffer, have, bytes - have);
        if (n === EAGAIN) break;
        if (n === 0) return reject(fdpassError('ERR_FDPASS_HANDOVER_FAILED', `fdpass: the peer closed before its ${what}`));
        if (n < 0) return reject(errnoException(n, 'recv', what));
        have += n;
        if (have === bytes) return resolve(buffer);
      }
      if (Date.now() >= deadline) {
        return reject(fdpassError('ERR_FDPASS_HANDOVER_TIMEOUT', `fdpass: no ${what} within ${timeoutMs} ms`));
      }
      setTimeout(attempt, POLL_MS);
    };
    attempt();
  });
}

/** Sends a handshake message whole, or throws: it is small and goes on a new connection. */
export function sendWhole(sock: number, message: Buffer, what: string): void {
  const n = windowsTransport().send(sock, message, 0, message.length);
  if (n < 0) throw errnoException(n, 'send', what);
  if (n !== message.length) throw fdpassError('ERR_FDPASS_HANDOVER_FAILED', `fdpass: ${what} went in part`);
}
