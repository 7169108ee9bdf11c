// Validation of options objects, with Node's error codes.
import { invalidArgType, outOfRange } from './errors';

/** options, or {} when omitted; a TypeError when it is not an object. */
export function validateOptions<T extends object>(options: T | undefined, name: string): T | Record<string, never> {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null) throw invalidArgType(name, 'of type object', options);
  return options;
}

export function integerOption(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value);
  if (!Number.isInteger(value) || value < min || value > max) throw outOfRange(name, `an integer >= ${min} and <= ${max}`, value);
  return value;
}
