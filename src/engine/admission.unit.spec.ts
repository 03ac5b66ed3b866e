import { describe, expect, it } from 'vitest';
import { PriorityGate } from './admission.js';

const tick = () => new Promise((resolve) => setTimeout(resolve, 1));

describe('PriorityGate', () => {
  it('given a limit of 2, then never more than 2 run at once, and every task runs', async () => {
    const gate = new PriorityGate(2);
    let running = 0;
    let most = 0;
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) => gate.run(1, async () => {
      running += 1;
      most = Math.max(most, running);
      await tick();
      running -= 1;
      return i;
    })));
    expect(most).toBe(2);
    expect(results).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('given waiters, then a higher priority goes first and equal priorities keep their order', async () => {
    const gate = new PriorityGate(1);
    const order: string[] = [];
    let release!: () => void;
    const holding = gate.run(1, () => new Promise<void>((resolve) => (release = resolve)));
    const waiters = [
      gate.run(1, async () => void order.push('start sandbox a')),
      gate.run(1, async () => void order.push('start sandbox b')),
      gate.run(3, async () => void order.push('start container x')),
      gate.run(2, async () => void order.push('create container x')),
      gate.run(3, async () => void order.push('start container y')),
    ];
    release();
    await Promise.all([holding, ...waiters]);
    expect(order).toEqual(['start container x', 'start container y', 'create container x', 'start sandbox a', 'start sandbox b']);
  });

  it('given a task that fails, then its slot is released for the next', async () => {
    const gate = new PriorityGate(1);
    await expect(gate.run(1, async () => { throw new Error('runc create failed'); })).rejects.toThrow('runc create failed');
    await expect(gate.run(1, async () => 'next')).resolves.toBe('next');
  });

  it('refuses a limit below 1', () => {
    expect(() => new PriorityGate(0)).toThrow(RangeError);
  });
});
