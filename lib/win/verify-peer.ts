// How a Windows channel learns, for certain, which process is at the other end of a connected
// socket before it pushes anything there, and whether that process may push into this one
// (docs/windows-channel-protocol.md, "Verifying the peer"). Each side claims its process id;
// each side then proves the other's claim by pushing a read-only section holding a fresh
// secret into the claimed process and sending only the handle's value: the genuine peer reads
// the secret in its own process and sends it back. A peer that claimed someone else's pid
// cannot read a handle in that process without already holding PROCESS_DUP_HANDLE on it. The
// section names both ends of this connection, so a man in the middle cannot have a process
// answer a challenge that was meant for another connection. The pushed handle is removed from
// the claimed process afterwards, whatever happened.
// The challenge a side finds in its own process is also its proof that the peer may push into
// it, and so already controls it (PROCESS_DUP_HANDLE can take any of its handles): only such a
// peer's handle values are taken. A side that may not open the peer (a more privileged one)
// says so with challenge 0; it then receives handles from the peer but sends it none.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { ChannelOptions } from '../channel-options';
import { errnoException, fdpassError } from '../errors';
import { validateInteger } from '../validators';
import { readExactly, sendWhole } from './read-exactly';
import { windowsTransport, type WinPollWrap } from './transport';
import { uvCode } from './uv-code';

/** Options of a Windows channel made over a connection (`Channel.connectTo()`, `new Channel(fd)`). */
export interface HandshakeOptions extends ChannelOptions {
  /** Milliseconds the peer may take to say hello, or to prove its process id. Default 5000. */
  handshakeTimeout?: number;
}

const DEFAULT_HANDSHAKE_TIMEOUT_MS = 5000;

export function handshakeTimeoutOf(options: HandshakeOptions | undefined): number {
  return validateInteger(options?.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT_MS, 'options.handshakeTimeout', 1, 0x7fff_ffff);
}

const MESSAGE_MAGIC = Buffer.from('FDPV', 'latin1');
const SECTION_MAGIC = Buffer.from('FDPS', 'latin1');
const VERSION = 1;
const STEP_CLAIM = 1;
const STEP_CHALLENGE = 2;
const STEP_ANSWER = 3;
const STEP_NAMES = ['', 'claim', 'challenge', 'answer'];
/** A challenge's value when its sender may not open the claimed process (no handle value is 0). */
const NO_CHALLENGE = 0;
/** Every message: magic, version, step, 2 zero bytes, a uint64 (pid or handle value), 32 bytes (the answer's secret). */
export const VERIFY_MESSAGE_BYTES = 48;
/** The section: magic, version, 3 zero, creator pid, target pid, the creator's local and remote address (6 bytes each), 4 zero, the secret. */
export const SECTION_BYTES = 64;
const SECRET_BYTES = 32;
/** Where a socket's addresses are, as socketOfFd writes them: local (ip, port), then remote. */
export const ADDRESSES_BYTES = 12;

export function encodeVerifyMessage(step: number, value: number, secret?: Uint8Array): Buffer {
  const message = Buffer.alloc(VERIFY_MESSAGE_BYTES);
  MESSAGE_MAGIC.copy(message, 0);
  message[4] = VERSION;
  message[5] = step;
  message.writeBigUInt64LE(BigInt(value), 8);
  if (secret !== undefined) message.set(secret, 16);
  return message;
}

/** The section a verifier pushes: who made it, for whom, over which connection, and the secret. */
export function encodeSection(creator: number, target: number, addresses: Uint8Array, secret: Uint8Array): Buffer {
  const section = Buffer.alloc(SECTION_BYTES);
  SECTION_MAGIC.copy(section, 0);
  section[4] = VERSION;
  section.writeUInt32LE(creator, 8);
  section.writeUInt32LE(target, 12);
  section.set(addresses.subarray(0, ADDRESSES_BYTES), 16);
  section.set(secret, 32);
  return section;
}

function unverified(message: string, cause?: unknown): Error {
  return fdpassError('ERR_FDPASS_PEER_UNVERIFIED', `fdpass: the peer is not verified: ${message}`, cause);
}

/** The message's uint64 if it is a well-formed message of this step (secret: its 32 bytes). */
function checkMessage(message: Buffer, step: number): { value: bigint; secret: Buffer } {
  if (!message.subarray(0, 4).equals(MESSAGE_MAGIC) || message[4] !== VERSION || message[6] !== 0 || message[7] !== 0)
    throw unverified('it sent no fdpass Windows verification message');
  if (message[5] !== step) throw unverified(`it sent message ${message[5]} where its ${STEP_NAMES[step]} was due`);
  return { value: message.readBigUInt64LE(8), secret: message.subarray(16, 48) };
}

/** Why the section the peer pushed is not a challenge we should answer, or undefined if it is. */
function sectionProblem(section: Buffer, claimed: number, addresses: Uint8Array, ownSecret: Buffer): string | undefined {
  if (!section.subarray(0, 4).equals(SECTION_MAGIC) || section[4] !== VERSION) return 'its challenge names no fdpass section';
  if (section.readUInt32LE(8) !== claimed) return `its challenge was made by process ${section.readUInt32LE(8)}, not ${claimed}`;
  if (section.readUInt32LE(12) !== process.pid) return `its challenge is for process ${section.readUInt32LE(12)}, not this one`;
  // The creator's local end is our remote end and the other way round: this connection.
  const local = Buffer.from(addresses.subarray(0, 6));
  const remote = Buffer.from(addresses.subarray(6, 12));
  if (!section.subarray(16, 22).equals(remote) || !section.subarray(22, 28).equals(local)) return 'its challenge is for another connection';
  // Covered by the addresses already (ours are not mirrored); kept as the plainest guard.
  if (section.subarray(32, 64).equals(ownSecret)) return 'it sent back our own challenge';
  return undefined;
}

/** OpenProcess's answer when this process may not open the peer (a more privileged process). */
const MAY_NOT_OPEN = new Set([uvCode('EPERM'), uvCode('EACCES')]);

export interface VerifiedPeer {
  /** The peer's process id, proven; 0 when this process may not open the peer (and so pushes nothing into it). */
  readonly pid: number;
  /** A handle to the peer's process that may duplicate handles into it (PROCESS_DUP_HANDLE), or 0 with pid 0; the caller owns it. */
  readonly process: number;
  /** Why this process may not push into the peer (OpenProcess's error), when pid is 0. */
  readonly pushError: Error | undefined;
  /**
   * Whether the peer proved it may push into this process: its challenge is a handle in this
   * process. Only then are the handle values it sends taken; a peer that may not open this
   * process pushes nothing, so any value it names is one of this process's own handles.
   */
  readonly pushesHere: boolean;
}

export interface VerifyOptions {
  /** Refuse any other claim, and a peer this process may not open (its pid would be unproven). */
  expectPid?: number;
  /** The channel's poll, whose cleanup hook undoes the verification if a worker ends under way. */
  poll?: Pick<WinPollWrap, 'holdVerification' | 'releaseVerification'>;
}

/**
 * Runs the verification on a connected transport socket that nothing else reads yet. addresses:
 * the socket's local and remote ends. Resolves with what each side proved: the peer's pid and
 * an open handle to its process (held from before the challenge, so the pid cannot change
 * owner), unless this process may not open the peer; and whether the peer pushed its challenge
 * into this process. Rejects with ERR_FDPASS_PEER_UNVERIFIED, a handshake timeout, or a system
 * error (OpenProcess's when neither side may open the other). Stops reading the socket once
 * signal aborts.
 */
export async function verifyPeer(
  sock: number,
  addresses: Uint8Array,
  timeoutMs: number,
  signal: AbortSignal,
  { expectPid, poll }: VerifyOptions = {},
): Promise<VerifiedPeer> {
  const win = windowsTransport();
  const deadline = Date.now() + timeoutMs;
  const read = async (step: number): Promise<{ value: bigint; secret: Buffer }> => {
    const message = await readExactly(sock, VERIFY_MESSAGE_BYTES, Math.max(1, deadline - Date.now()), STEP_NAMES[step]!, signal);
    return checkMessage(message, step);
  };
  const send = (message: Buffer, what: string): void => {
    signal.throwIfAborted();
    sendWhole(sock, message, what);
  };

  send(encodeVerifyMessage(STEP_CLAIM, process.pid), 'the claim');
  const claim = await read(STEP_CLAIM);
  if (claim.value === 0n || claim.value > 0xffff_ffffn) throw unverified(`it claimed process id ${claim.value}`);
  const pid = Number(claim.value);
  if (expectPid !== undefined && pid !== expectPid) throw unverified(`it claimed process ${pid}, not the expected ${expectPid}`);
  let processHandle = win.openProcess(pid);
  let pushError: Error | undefined;
  if (processHandle < 0) {
    pushError = errnoException(processHandle, 'OpenProcess', `the peer's claimed process ${pid}`);
    // Only a process we push into is proven: the expected one must be.
    if (!MAY_NOT_OPEN.has(processHandle) || expectPid !== undefined) throw pushError;
    // A more privileged peer: say so with challenge 0, and push nothing into it.
    processHandle = 0;
  }
  // If a worker ends with this under way, no JS runs again: the poll's cleanup hook undoes it.
  if (processHandle !== 0) poll?.holdVerification(processHandle, 0);
  const secret = randomBytes(SECRET_BYTES);
  let pushed: number | undefined;
  let verified = false;
  try {
    if (processHandle !== 0) {
      const value = win.pushChallenge(processHandle, encodeSection(process.pid, pid, addresses, secret));
      if (value < 0) throw errnoException(value, 'DuplicateHandle', `a challenge into process ${pid}`);
      pushed = value;
      poll?.holdVerification(processHandle, value);
    }
    send(encodeVerifyMessage(STEP_CHALLENGE, pushed ?? NO_CHALLENGE), 'the challenge');

    const challenge = await read(STEP_CHALLENGE);
    const pushesHere = challenge.value !== BigInt(NO_CHALLENGE);
    if (!pushesHere && pushed === undefined) throw pushError!;
    if (pushesHere) {
      if (challenge.value > 0x7fff_ffffn) throw unverified(`its challenge names handle value ${challenge.value}`);
      const section = Buffer.alloc(SECTION_BYTES);
      const err = win.readChallenge(Number(challenge.value), section);
      if (err < 0)
        throw unverified(`its challenge (handle value ${challenge.value}) could not be read`, errnoException(err, 'MapViewOfFile'));
      const problem = sectionProblem(section, pid, addresses, secret);
      if (problem !== undefined) throw unverified(problem);
      send(encodeVerifyMessage(STEP_ANSWER, 0, section.subarray(32, 64)), 'the answer');
    } else {
      send(encodeVerifyMessage(STEP_ANSWER, 0), 'the answer');
    }

    const answer = await read(STEP_ANSWER);
    if (pushed !== undefined && !timingSafeEqual(answer.secret, secret)) throw unverified(`it did not prove that it is process ${pid}`);
    verified = true;
    return pushed === undefined
      ? { pid: 0, process: 0, pushError, pushesHere }
      : { pid, process: processHandle, pushError: undefined, pushesHere };
  } finally {
    poll?.releaseVerification(); // first: the cleanup hook must not undo it a second time
    // Ours to remove, read or not: the genuine peer never closes a challenge it was given.
    if (pushed !== undefined) win.unpush(processHandle, pushed);
    if (!verified && processHandle !== 0) win.closeProcess(processHandle);
  }
}
