// Emitting from inside fdpass's own work (a batch, a handover): a listener that throws must
// not stop that work halfway, so its error is rethrown on its own tick, as an uncaught
// exception, where Node would have thrown it.
import type EventEmitter from 'eventemitter3';

export function emitSafely<Events extends EventEmitter.ValidEventTypes, T extends EventEmitter.EventNames<Events>>(
  emitter: EventEmitter<Events>,
  event: T,
  ...args: EventEmitter.EventArgs<Events, T>
): void {
  try {
    emitter.emit(event, ...args);
  } catch (error) {
    process.nextTick(() => {
      throw error;
    });
  }
}
