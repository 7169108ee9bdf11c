// The socket types fdpass works with: one map between their names and the kernel's numbers.
import { constants } from './binding';
import { validateOneOf } from './validators';

/** A Unix socket's type: SOCK_STREAM, SOCK_SEQPACKET or SOCK_DGRAM. */
export type SocketType = 'stream' | 'seqpacket' | 'dgram';

const numbers: Record<SocketType, number> = {
  stream: constants.SOCK_STREAM,
  seqpacket: constants.SOCK_SEQPACKET,
  dgram: constants.SOCK_DGRAM,
};

/** The kernel's SOCK_* number for a type name, after checking it is one of `allowed`. */
export function socketTypeNumber(type: unknown, allowed: readonly SocketType[] = ['stream', 'seqpacket', 'dgram'], name = 'type'): number {
  return numbers[validateOneOf(type, name, allowed)];
}

/** The type name for the kernel's SOCK_* number, or undefined for another kind of socket. */
export function socketTypeName(number: number): SocketType | undefined {
  return (Object.keys(numbers) as SocketType[]).find((type) => numbers[type] === number);
}
