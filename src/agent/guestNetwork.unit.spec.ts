import { describe, expect, it } from 'vitest';
import type { ConfigureNetworkRequest } from '../agentProtocol/agentProto.js';
import { networkCommands, validateGuestNetwork, type GuestNetwork } from './guestNetwork.js';

const eth0 = { name: 'eth0', mac: '0a:58:0a:58:00:05', mtu: 1500, addresses: ['10.88.0.5/16'] };
const defaultRoute = { destination: 'default', gateway: '10.88.0.1', device: 'eth0', family: 'inet' };
const request = (fields: Partial<ConfigureNetworkRequest>): ConfigureNetworkRequest => ({ interfaces: [eth0], routes: [defaultRoute], ...fields });

describe('the guest network the host asks for', () => {
  it('given a veth\'s interface and its default route, when validated, then it is kept as given (MAC lower-cased)', () => {
    expect(validateGuestNetwork(request({ interfaces: [{ ...eth0, mac: '0A:58:0A:58:00:05' }] }))).toEqual({
      interfaces: [eth0], routes: [{ destination: 'default', gateway: '10.88.0.1', device: 'eth0', family: 'inet' }],
    });
  });

  it('given an on-link route (no gateway) and an IPv6 address, when validated, then both are accepted', () => {
    const network = validateGuestNetwork(request({
      interfaces: [{ ...eth0, addresses: ['10.88.0.5/16', 'fd00:88::5/64'] }],
      routes: [{ destination: '10.99.0.0/16', gateway: '', device: 'eth0', family: 'inet' }],
    }));
    expect(network.routes).toEqual([{ destination: '10.99.0.0/16', device: 'eth0', family: 'inet' }]);
    expect(network.interfaces[0]!.addresses).toEqual(['10.88.0.5/16', 'fd00:88::5/64']);
  });

  it.each([
    [{ interfaces: [{ ...eth0, name: 'eth0; reboot' }] }, 'interface name "eth0; reboot" must be'],
    [{ interfaces: [{ ...eth0, mac: 'not-a-mac' }] }, 'is not aa:bb:cc:dd:ee:ff'],
    [{ interfaces: [{ ...eth0, mtu: 20 }] }, 'mtu 20 must be 68-65535'],
    [{ interfaces: [{ ...eth0, addresses: ['10.88.0.5'] }] }, 'is not an address/prefix'],
    [{ interfaces: [{ ...eth0, addresses: ['10.88.0.5/33'] }] }, 'is not an address/prefix'],
    [{ interfaces: [eth0, { ...eth0, mac: '0a:58:0a:58:00:06' }] }, 'names and macs must be unique'],
    [{ routes: [{ ...defaultRoute, device: 'eth1' }] }, 'names device "eth1", which is none of the interfaces'],
    [{ routes: [{ ...defaultRoute, gateway: 'router' }] }, 'route gateway "router" is not an address'],
    [{ routes: [{ ...defaultRoute, destination: '-f' }] }, 'route destination "-f" is not an address/prefix'],
    [{ routes: [{ ...defaultRoute, family: 'link' }] }, 'route family "link" must be inet or inet6'],
    [{ interfaces: Array.from({ length: 9 }, (_, i) => ({ ...eth0, name: `eth${i}` })) }, 'at most 8 interfaces'],
  ])('given %j, when validated, then it is refused: %s', (fields, message) => {
    expect(() => validateGuestNetwork(request(fields as Partial<ConfigureNetworkRequest>))).toThrow(message);
  });
});

describe('the ip commands that apply it', () => {
  const network: GuestNetwork = { interfaces: [eth0], routes: [{ destination: 'default', gateway: '10.88.0.1', device: 'eth0', family: 'inet' }] };

  it('given the NIC already named eth0, when planned, then it is sized, addressed, brought up, then routed', () => {
    expect(networkCommands(network, new Map([['0a:58:0a:58:00:05', 'eth0']]))).toEqual([
      ['link', 'set', 'dev', 'eth0', 'down'],
      ['link', 'set', 'dev', 'eth0', 'mtu', '1500'],
      ['-4', 'addr', 'add', '10.88.0.5/16', 'dev', 'eth0'],
      ['link', 'set', 'dev', 'eth0', 'up'],
      ['-4', 'route', 'add', 'default', 'via', '10.88.0.1', 'dev', 'eth0'],
    ]);
  });

  it('given two NICs whose guest names are swapped, when planned, then each is renamed through a temporary name first', () => {
    const eth1 = { name: 'eth1', mac: '0a:58:0a:59:00:07', mtu: 9000, addresses: [] };
    const commands = networkCommands({ interfaces: [eth0, eth1], routes: [] }, new Map([['0a:58:0a:58:00:05', 'eth1'], ['0a:58:0a:59:00:07', 'eth0']]));
    expect(commands.slice(0, 6)).toEqual([
      ['link', 'set', 'dev', 'eth1', 'down'], ['link', 'set', 'dev', 'eth1', 'name', 'ktsnic0'],
      ['link', 'set', 'dev', 'eth0', 'down'], ['link', 'set', 'dev', 'eth0', 'name', 'ktsnic1'],
      ['link', 'set', 'dev', 'ktsnic0', 'name', 'eth0'], ['link', 'set', 'dev', 'ktsnic1', 'name', 'eth1'],
    ]);
  });

  it('given an on-link IPv6 route, when planned, then it has no via and uses -6', () => {
    const v6: GuestNetwork = { interfaces: [eth0], routes: [{ destination: 'fd00:99::/64', device: 'eth0', family: 'inet6' }] };
    expect(networkCommands(v6, new Map([['0a:58:0a:58:00:05', 'eth0']])).at(-1)).toEqual(['-6', 'route', 'add', 'fd00:99::/64', 'dev', 'eth0']);
  });

  it('given a MAC the guest has no NIC for, when planned, then it fails naming the MAC', () => {
    expect(() => networkCommands(network, new Map())).toThrow('the guest has no NIC with mac 0a:58:0a:58:00:05');
  });
});
