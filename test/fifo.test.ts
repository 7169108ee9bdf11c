// The queue a channel's inbox keeps its messages in: order kept through its compaction.
import { describe, expect, it } from 'vitest';
import { Fifo } from '../lib/fifo';

describe('Fifo', () => {
  it('gives items back in the order pushed, and undefined once empty', () => {
    const fifo = new Fifo<number>();
    expect(fifo.shift()).toBeUndefined();
    for (let i = 0; i < 5; i++) fifo.push(i);
    expect(fifo.length).toBe(5);
    expect([fifo.shift(), fifo.shift()]).toEqual([0, 1]);
    fifo.push(5);
    expect(fifo.length).toBe(4);
    expect([fifo.shift(), fifo.shift(), fifo.shift(), fifo.shift(), fifo.shift()]).toEqual([2, 3, 4, 5, undefined]);
    expect(fifo.length).toBe(0);
  });

  it('keeps the order of a queue that never empties, across the compactions of its taken slots', () => {
    const fifo = new Fifo<number>();
    let pushed = 0;
    let taken = 0;
    // Three pushes for every two shifts: the queue grows, and is never empty after the start.
    for (let round = 0; round < 5000; round++) {
      fifo.push(pushed++);
      fifo.push(pushed++);
      fifo.push(pushed++);
      expect(fifo.shift()).toBe(taken++);
      expect(fifo.shift()).toBe(taken++);
      expect(fifo.length).toBe(pushed - taken);
    }
    while (fifo.length > 0) expect(fifo.shift()).toBe(taken++);
    expect(taken).toBe(pushed);
  });

  it('clear() empties it', () => {
    const fifo = new Fifo<string>();
    fifo.push('a');
    fifo.push('b');
    fifo.shift();
    fifo.clear();
    expect(fifo.length).toBe(0);
    expect(fifo.shift()).toBeUndefined();
    fifo.push('c');
    expect(fifo.shift()).toBe('c');
  });
});
