import { describe, expect, it } from 'vitest';
import { SweepIncomplete } from '../core/sweep.js';
import { givenClosedAfterEach } from './engine.testkit.js';

// Given what the backends find on the host, when recovery sweeps, then what the node stream records.
const given = givenClosedAfterEach();

describe('orphan sweep', () => {
  it('given a resource no sandbox owns, when the daemon starts, then it is removed and OrphanRemoved recorded', async () => {
    const spec = given();
    spec.sandboxer.orphans = ['/run/kts/fake/p9'];
    await spec.whenRestarted();
    spec.thenEvents([['node', 'OrphanRemoved']]);
    expect(spec.payloadOf('OrphanRemoved')).toEqual({ kind: 'fake', resource: '/run/kts/fake/p9', reason: 'no live sandbox or container in the event log owns it' });
  });

  it('given a resource that cannot be removed, when the daemon starts, then CleanupFailed with the reason', async () => {
    const spec = given();
    spec.sandboxer.orphans = new SweepIncomplete([], [{ resource: '/run/kts/fake/p9', reason: 'EBUSY' }]);
    await spec.whenRestarted();
    spec.thenEvents([['node', 'CleanupFailed']]);
  });
});
