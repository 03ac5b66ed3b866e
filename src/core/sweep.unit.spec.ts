import { describe, expect, it } from 'vitest';
import { Sweep, SweepIncomplete } from './sweep.js';

describe('Sweep', () => {
  it('given removals that succeed, then it lists each, leaving out one that had nothing to remove', async () => {
    const sweep = new Sweep();
    await sweep.attempt('dir a', async () => undefined);
    await sweep.attempt('process 7', async () => false);
    await sweep.attempt('dir b', async () => true);
    expect(sweep.finish()).toEqual(['dir a', 'dir b']);
  });

  it('given one removal that fails, then the others still run and finish throws both lists', async () => {
    const sweep = new Sweep();
    await sweep.attempt('busy mount', async () => {
      throw new Error('EBUSY: resource busy');
    });
    await sweep.attempt('dir c', async () => undefined);
    const error = (() => {
      try {
        sweep.finish();
      } catch (thrown) {
        return thrown;
      }
    })();
    expect(error).toBeInstanceOf(SweepIncomplete);
    expect((error as SweepIncomplete).removed).toEqual(['dir c']);
    expect((error as SweepIncomplete).failures).toEqual([{ resource: 'busy mount', reason: 'EBUSY: resource busy' }]);
    expect((error as SweepIncomplete).message).toContain('busy mount (EBUSY');
  });
});
