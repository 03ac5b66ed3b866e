import { describe, expect, it } from 'vitest';
import { chainFromVerifyResponse, describeChain } from './chainReport.js';

/** A Verify response as proto-loader decodes it (defaults filled in, uint64 as numbers). */
const brokenResponse = {
  ok: false, eventCount: 41, brokenAtSequence: 42, reason: 'stored hash aa does not match the recomputed bb: the event was altered',
  brokenStreamId: 'sandbox-7f3a', brokenType: 'SandboxStopped', problem: 'hash_mismatch',
};

describe('chainFromVerifyResponse', () => {
  it('given an intact chain, when read, then it is ok with its event count', () => {
    expect(chainFromVerifyResponse({ ok: true, eventCount: 12, brokenAtSequence: 0, reason: '', brokenStreamId: '', brokenType: '', problem: '' }))
      .toEqual({ ok: true, eventCount: 12 });
  });

  it('given a broken chain, when read, then the first bad row comes back with its stream, type and problem', () => {
    expect(chainFromVerifyResponse(brokenResponse)).toEqual({
      ok: false, eventCount: 41, brokenAtSequence: 42, streamId: 'sandbox-7f3a', type: 'SandboxStopped', problem: 'hash_mismatch',
      reason: brokenResponse.reason,
    });
  });

  it('given a broken chain with a problem this CLI does not know, when read, then it refuses rather than guess', () => {
    expect(() => chainFromVerifyResponse({ ...brokenResponse, problem: 'gremlins' })).toThrow(/unknown problem "gremlins"/);
  });
});

describe('describeChain', () => {
  it('given an intact chain, when described, then it is the line scripts already match', () => {
    expect(describeChain({ ok: true, eventCount: 12 })).toBe('ok: 12 events, hash chain intact');
  });

  it('given a hash mismatch, when described, then one line names the sequence, stream, event type and what is wrong', () => {
    expect(describeChain(chainFromVerifyResponse(brokenResponse))).toBe(
      'BROKEN at sequence 42 (stream sandbox-7f3a, event SandboxStopped): hash mismatch: ' +
        'stored hash aa does not match the recomputed bb: the event was altered (the 41 events before it verify)',
    );
  });

  it('given a broken link, when described, then it says the link to the previous hash is broken', () => {
    const line = describeChain({ ok: false, eventCount: 1, brokenAtSequence: 2, streamId: 'container-c', type: 'ContainerCreated', problem: 'broken_link', reason: 'prev_hash …' });

    expect(line).toMatch(/^BROKEN at sequence 2 \(stream container-c, event ContainerCreated\): broken link to the previous hash: prev_hash …/);
  });
});
