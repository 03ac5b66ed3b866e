import { describe, expect, it } from 'vitest';
import type { SandboxContext } from '../../machines/sandboxMachine.js';
import type { Sandboxer } from '../core/sandboxer.js';
import { checkNetworkChoice, wantsPodNetwork } from './networkPolicy.js';

const runc = { kind: 'runc', podNetwork: true } as Sandboxer;
const wasm = { kind: 'wasm' } as Sandboxer;
const pod = (fields: Partial<SandboxContext>) => ({ netnsPath: null, annotations: {}, ...fields }) as SandboxContext;

describe('which pods kts runs CNI for', () => {
  it('given a daemon that runs CNI, when a runc pod comes without a netns, then it gets a pod network', () => {
    expect(wantsPodNetwork(pod({}), runc, true)).toBe(true);
  });

  it('given a daemon that does not run CNI, when a pod comes without a netns, then it gets none (loopback only)', () => {
    expect(wantsPodNetwork(pod({}), runc, false)).toBe(false);
  });

  it('given a netns from containerd, when the pod starts, then kts never runs CNI for it', () => {
    expect(wantsPodNetwork(pod({ netnsPath: '/var/run/netns/cni-1' }), runc, true)).toBe(false);
  });

  it('given a pod annotated io.kts.network=none, when it starts on a CNI daemon, then it gets none', () => {
    expect(wantsPodNetwork(pod({ annotations: { 'io.kts.network': 'none' } }), runc, true)).toBe(false);
  });

  it('given a pod on the host network (CRI network NODE), when it starts on a CNI daemon, then kts runs no CNI for it', () => {
    expect(wantsPodNetwork(pod({ linux: { hostNetwork: true } }), runc, true)).toBe(false);
  });

  it('given a wasm pod, when it starts on a CNI daemon, then it gets none: it has no netns', () => {
    expect(wantsPodNetwork(pod({}), wasm, true)).toBe(false);
  });
});

describe('the io.kts.network annotation at creation', () => {
  it.each([
    [{ 'io.kts.network': 'bridge' }, 'runc', undefined, true, 'must be one of cni, none, not "bridge"'],
    [{ 'io.kts.network': 'cni' }, 'runc', '/var/run/netns/cni-1', true, 'conflicts with netns_path'],
    [{ 'io.kts.network': 'cni' }, 'runc', undefined, false, 'this daemon does not run CNI'],
    [{ 'io.kts.network': 'cni' }, 'wasm', undefined, true, 'wasm sandboxes have no network namespace'],
  ])('given annotations %j on a %s pod (netns %s, daemon runs CNI: %s), when created, then it is refused: %s', (annotations, kind, netnsPath, runsCni, message) => {
    expect(() => checkNetworkChoice({ kind, netnsPath, annotations }, kind === 'wasm' ? wasm : runc, runsCni)).toThrow(message);
  });

  it.each([
    [{}, false], [{ 'io.kts.network': 'none' }, false], [{ 'io.kts.network': 'cni' }, true],
  ])('given annotations %j (daemon runs CNI: %s), when created, then it is accepted', (annotations, runsCni) => {
    expect(() => checkNetworkChoice({ kind: 'runc', annotations }, runc, runsCni)).not.toThrow();
  });
});
