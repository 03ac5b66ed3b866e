import { describe, expect, it } from 'vitest';
import { bracket } from './bracket.js';

// Given an effect, when it is bracketed, then what is recorded around it and in which order.
type Event = { type: string; detail?: unknown };

function recorder() {
  const log: string[] = [];
  return { log, record: (event: Event) => log.push(event.detail === undefined ? event.type : `${event.type}(${String(event.detail)})`) };
}

describe('bracket', () => {
  it('records the intent before the effect, then the outcome, then runs what follows it', async () => {
    const { log, record } = recorder();
    const result = await bracket(record, {
      intent: { type: 'Requested' },
      effect: async () => { log.push('effect'); return 7; },
      finishEffect: async () => { log.push('finish'); },
      outcome: (n) => ({ type: 'Done', detail: n }),
      afterOutcome: () => { log.push('after'); },
      failure: (reason) => ({ type: 'Failed', detail: reason }),
    });
    expect(result).toBe(7);
    expect(log).toEqual(['Requested', 'effect', 'finish', 'Done(7)', 'after']);
  });

  it('records the failure with the error\'s text after undoing, and rethrows the error', async () => {
    const { log, record } = recorder();
    const failing = bracket(record, {
      intent: { type: 'Requested' },
      effect: async () => { throw new Error('boom'); },
      outcome: () => ({ type: 'Done' }),
      undo: async () => { log.push('undo'); },
      failure: (reason) => ({ type: 'Failed', detail: reason }),
    });
    await expect(failing).rejects.toThrow('boom');
    expect(log).toEqual(['Requested', 'undo', 'Failed(boom)']);
  });

  it('without an intent (the log already holds it) or an outcome (the caller records it), records only what happens', async () => {
    const { log, record } = recorder();
    await bracket(record, { effect: async () => { log.push('effect'); }, failure: (reason) => ({ type: 'Failed', detail: reason }) });
    expect(log).toEqual(['effect']);
  });

  it('records a failure after the outcome (a watch that cannot start) as the operation\'s', async () => {
    const { log, record } = recorder();
    const failing = bracket(record, {
      effect: async () => 1,
      outcome: () => ({ type: 'Done' }),
      afterOutcome: () => { throw new Error('watch'); },
      failure: (reason) => ({ type: 'Failed', detail: reason }),
    });
    await expect(failing).rejects.toThrow('watch');
    expect(log).toEqual(['Done', 'Failed(watch)']);
  });
});
