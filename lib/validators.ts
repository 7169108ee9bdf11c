// Argument validation, after Node's lib/internal/validators.js: each check throws Node's own
// error (TypeError ERR_INVALID_ARG_TYPE, RangeError ERR_OUT_OF_RANGE, TypeError
// ERR_INVALID_ARG_VALUE) naming the argument, before anything is done or taken.
import { invalidArgType, invalidArgValue, outOfRange } from './errors';

/** The largest fd number the kernel hands out (an int). */
export const MAX_FD = 0x7fff_ffff;

/** options, or {} when omitted; a TypeError when it is not an object. */
export function validateOptions<T extends object>(options: T | undefined, name: string): Partial<T> {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null) throw invalidArgType(name, 'of type object', options);
  return options;
}

export function validateInteger(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value);
  if (!Number.isInteger(value) || value < min || value > max) throw outOfRange(name, `an integer >= ${min} and <= ${max}`, value);
  return value;
}

export function validateFd(value: unknown, name: string): number {
  return validateInteger(value, name, 0, MAX_FD);
}

/** Whether value is a valid fd number: the check of validateFd, for hot paths that name the value only when it fails. */
export function isFdNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= MAX_FD;
}

export function validateBoolean(value: unknown, name: string): boolean {
  if (typeof value !== 'boolean') throw invalidArgType(name, 'of type boolean', value);
  return value;
}

export function validateString(value: unknown, name: string): string {
  if (typeof value !== 'string') throw invalidArgType(name, 'of type string', value);
  return value;
}

export function validateFunction<T extends (...args: never[]) => unknown>(value: unknown, name: string): T {
  if (typeof value !== 'function') throw invalidArgType(name, 'of type function', value);
  return value as T;
}

export function validateAbortSignal(value: unknown, name: string): AbortSignal | undefined {
  if (value !== undefined && !(value instanceof AbortSignal)) throw invalidArgType(name, 'an instance of AbortSignal', value);
  return value;
}

/** value, if it is one of `allowed`; else a TypeError listing them. */
export function validateOneOf<T extends string>(value: unknown, name: string, allowed: readonly T[]): T {
  if (!allowed.includes(value as T)) throw invalidArgValue(name, `must be one of ${allowed.map((a) => `'${a}'`).join(', ')}`, value);
  return value as T;
}
