// systemd's fd protocol, from the service's side: the sockets systemd (or
// systemd-socket-activate) opened for this process, found through LISTEN_PID, LISTEN_FDS and
// LISTEN_FDNAMES (sd_listen_fds(3)).
import { debuglog } from 'node:util';
import { binding } from './binding';
import { errnoException, fdpassError, unavailableOnPlatform } from './errors';
import { validateBoolean, validateOptions } from './validators';

const debug = debuglog('fdpass');

/** The first fd systemd passes (SD_LISTEN_FDS_START): the rest follow it, in order. */
export const LISTEN_FDS_START = 3;

/** What listenFds() reads, and by default removes from process.env (LISTEN_PIDFDID: systemd 257 and later). */
const LISTEN_VARIABLES = ['LISTEN_PID', 'LISTEN_PIDFDID', 'LISTEN_FDS', 'LISTEN_FDNAMES'] as const;

/** systemd's name for an fd when LISTEN_FDNAMES is absent. */
const UNNAMED = 'unknown';

/** An fd systemd passed to this process, and its name (a socket unit's FileDescriptorName=, or --fdname=). */
export interface ListenFd {
  readonly fd: number;
  readonly name: string;
}

export interface ListenFdsOptions {
  /**
   * Remove LISTEN_PID, LISTEN_PIDFDID, LISTEN_FDS and LISTEN_FDNAMES from process.env, whatever
   * the outcome (sd_listen_fds(unset_environment)), so that a child cannot mistake them for
   * its own. Default true.
   */
  unsetEnvironment?: boolean;
}

/**
 * The fds systemd passed to this process, in order from fd 3, with their names (from
 * LISTEN_FDNAMES; 'unknown' without it): sd_listen_fds_with_names(3) for Node. Each is made
 * close-on-exec, so this process's children do not inherit it. They are yours from here on:
 * hand a listening socket to `net.createServer().listen({ fd })`, which then owns it.
 *
 * An empty array when the process was not socket-activated: no LISTEN_PID, or a LISTEN_PID
 * that is another process's (as under a wrapper that forks: npx, npm start, tsx's own CLI; run
 * `node --import tsx` instead). LISTEN_PIDFDID, when set, is not checked.
 * Malformed variables throw ERR_FDPASS_INVALID_ENVIRONMENT; an fd that LISTEN_FDS counts but
 * is not open throws EBADF (syscall 'fcntl').
 *
 * Take them once: a second call returns [] if the first unset the variables (the default), or
 * the same fd numbers again if it kept them; it never opens anything.
 */
export function listenFds(options?: ListenFdsOptions): ListenFd[] {
  const { unsetEnvironment = true } = validateOptions(options, 'options');
  validateBoolean(unsetEnvironment, 'options.unsetEnvironment');
  if (process.platform === 'win32') throw unavailableOnPlatform('listenFds(): systemd socket activation exists only on Linux');
  try {
    return takeListenFds();
  } finally {
    if (unsetEnvironment) for (const name of LISTEN_VARIABLES) delete process.env[name];
  }
}

function takeListenFds(): ListenFd[] {
  const pidValue = process.env.LISTEN_PID;
  if (pidValue === undefined) return [];
  const pid = positiveInteger('LISTEN_PID', pidValue, 0x7fff_ffff);
  if (pid !== process.pid) {
    debug('listenFds: LISTEN_PID=%d is not this process (%d): no fds taken', pid, process.pid);
    return [];
  }
  const countValue = process.env.LISTEN_FDS;
  if (countValue === undefined) return [];
  const count = positiveInteger('LISTEN_FDS', countValue, 0x7fff_ffff - LISTEN_FDS_START);
  const fds: number[] = [];
  for (let fd = LISTEN_FDS_START; fd < LISTEN_FDS_START + count; fd++) {
    const err = binding.setCloseOnExec(fd, true);
    if (err < 0) throw errnoException(err, 'fcntl', `LISTEN_FDS=${count}, but fd ${fd} is not open`);
    fds.push(fd);
  }
  // As systemd does: the fds are close-on-exec before a wrong count of names is an error.
  const namesValue = process.env.LISTEN_FDNAMES;
  const names = namesValue === undefined ? fds.map(() => UNNAMED) : namesValue.split(':');
  if (names.length !== count) {
    throw fdpassError(
      'ERR_FDPASS_INVALID_ENVIRONMENT',
      `LISTEN_FDNAMES has ${names.length} name(s) for LISTEN_FDS=${count}: '${excerpt(namesValue ?? '')}'`,
    );
  }
  return fds.map((fd, i) => Object.freeze({ fd, name: names[i]! }));
}

function positiveInteger(variable: string, value: string, max: number): number {
  const number = /^[1-9]\d{0,9}$/.test(value) ? Number(value) : NaN;
  if (!(number <= max)) {
    throw fdpassError('ERR_FDPASS_INVALID_ENVIRONMENT', `${variable} must be an integer from 1 to ${max}, not '${excerpt(value)}'`);
  }
  return number;
}

function excerpt(value: string): string {
  return value.length > 40 ? `${value.slice(0, 37)}...` : value;
}
