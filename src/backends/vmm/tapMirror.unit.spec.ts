import { describe, expect, it } from 'vitest';
import type { NetnsLink, NetnsRoute } from '../../host/netns.js';
import { describePlan, guestNetworkOf, mirrorPlan, vmNetworkOf } from './tapMirror.js';

const NETNS = '/var/lib/kts/network/pod-1/netns';
const link = (fields: Partial<NetnsLink>): NetnsLink => ({ name: 'eth0', mac: '0A:58:0A:58:00:05', mtu: 1500, linkType: 'ether', kind: 'veth', addresses: ['10.88.0.5/16'], ...fields });
const route = (fields: Partial<NetnsRoute>): NetnsRoute => ({ destination: 'default', gateway: '10.88.0.1', device: 'eth0', protocol: 'boot', family: 'inet', ...fields });

describe('what a VM mirrors of its pod netns', () => {
  it('given a CNI veth, loopback and a tap of ours, when planned, then only the veth is mirrored, on tap0_kts with its MAC', () => {
    const plan = mirrorPlan(NETNS, [
      link({ name: 'lo', mac: '00:00:00:00:00:00', linkType: 'loopback', kind: '', addresses: [] }),
      link({}),
      link({ name: 'tap0_kts', mac: '12:34:56:78:9a:bc', kind: 'tun', addresses: [] }),
    ], []);
    expect(plan.interfaces).toEqual([{ name: 'eth0', mac: '0a:58:0a:58:00:05', mtu: 1500, addresses: ['10.88.0.5/16'], tap: 'tap0_kts', netdevId: 'net0' }]);
    expect(vmNetworkOf(plan)).toEqual({ netnsPath: NETNS, nics: [{ id: 'net0', tap: 'tap0_kts', mac: '0a:58:0a:58:00:05' }] });
  });

  it('given routes, when planned, then the kernel\'s connected and link-local ones stay behind (the guest makes its own) and others go', () => {
    const plan = mirrorPlan(NETNS, [link({})], [
      route({}),
      route({ destination: '10.88.0.0/16', gateway: undefined, protocol: 'kernel' }),
      route({ destination: 'fe80::/64', gateway: undefined, protocol: 'boot', family: 'inet6' }),
      route({ destination: '192.0.2.0/24', device: 'eth9' }),
      route({ destination: '10.99.0.0/16', gateway: '10.88.0.254', protocol: 'static' }),
    ]);
    expect(guestNetworkOf(plan)).toEqual({
      interfaces: [{ name: 'eth0', mac: '0a:58:0a:58:00:05', mtu: 1500, addresses: ['10.88.0.5/16'] }],
      routes: [
        { destination: 'default', gateway: '10.88.0.1', device: 'eth0', family: 'inet' },
        { destination: '10.99.0.0/16', gateway: '10.88.0.254', device: 'eth0', family: 'inet' },
      ],
    });
  });

  it('given a netns with only loopback, when planned, then there is nothing to mirror', () => {
    expect(mirrorPlan(NETNS, [link({ name: 'lo', linkType: 'loopback', mac: '00:00:00:00:00:00' })], []).interfaces).toEqual([]);
  });

  it('describes the plan in one line per interface for the record', () => {
    expect(describePlan(mirrorPlan(NETNS, [link({})], []))).toBe('eth0 0a:58:0a:58:00:05 10.88.0.5/16 mtu 1500 via tap0_kts');
  });
});
