// An emitter that hears every change of its listeners. eventemitter3 has no 'newListener',
// and a channel's 'message' listener changes who receives and what keeps the process alive,
// so every way of adding or removing one calls listenersChanged().
import EventEmitter from 'eventemitter3';

export abstract class ListenerWatchingEmitter<Events extends EventEmitter.ValidEventTypes> extends EventEmitter<Events> {
  /** Called after any listener was added or removed. */
  protected abstract listenersChanged(): void;

  override on<T extends EventEmitter.EventNames<Events>>(event: T, fn: EventEmitter.EventListener<Events, T>, context?: unknown): this {
    super.on(event, fn, context);
    this.listenersChanged();
    return this;
  }

  /** The same as `on()`. */
  override addListener<T extends EventEmitter.EventNames<Events>>(
    event: T,
    fn: EventEmitter.EventListener<Events, T>,
    context?: unknown,
  ): this {
    return this.on(event, fn, context);
  }

  override once<T extends EventEmitter.EventNames<Events>>(event: T, fn: EventEmitter.EventListener<Events, T>, context?: unknown): this {
    super.once(event, fn, context);
    this.listenersChanged();
    return this;
  }

  override removeListener<T extends EventEmitter.EventNames<Events>>(
    event: T,
    fn?: EventEmitter.EventListener<Events, T>,
    context?: unknown,
    once?: boolean,
  ): this {
    super.removeListener(event, fn, context, once);
    this.listenersChanged();
    return this;
  }

  /** The same as `removeListener()`. */
  override off<T extends EventEmitter.EventNames<Events>>(
    event: T,
    fn?: EventEmitter.EventListener<Events, T>,
    context?: unknown,
    once?: boolean,
  ): this {
    return this.removeListener(event, fn, context, once);
  }

  override removeAllListeners(event?: EventEmitter.EventNames<Events>): this {
    super.removeAllListeners(event);
    this.listenersChanged();
    return this;
  }
}
