import { describe, expect, it } from 'vitest';
import { MAX_RESOURCES_JSON_BYTES, parseLinuxResources } from './linuxResources.js';

const refused = (body: unknown) => () => parseLinuxResources(typeof body === 'string' ? body : JSON.stringify(body));

describe('UpdateResources body as OCI LinuxResources', () => {
  it('accepts what containerd sends: memory, cpu, pids, hugepages, devices, blockIO, unified', () => {
    const resources = {
      memory: { limit: 67108864, reservation: -1, swap: -1, swappiness: 0, disableOOMKiller: false },
      cpu: { shares: 1024, quota: -1, period: 100000, cpus: '0-3,5', mems: '0' },
      pids: { limit: 512 },
      hugepageLimits: [{ pageSize: '2MB', limit: 0 }],
      devices: [{ allow: false, access: 'rwm' }, { allow: true, type: 'c', major: 1, minor: 3, access: 'rw' }],
      blockIO: { weight: 500, throttleReadBpsDevice: [{ major: 8, minor: 0, rate: 1048576 }] },
      unified: { 'memory.high': '100M' },
    };
    expect(parseLinuxResources(JSON.stringify(resources))).toEqual(resources);
    expect(parseLinuxResources('')).toEqual({});
  });

  it('refuses bodies over the size cap before parsing them', () => {
    expect(refused({ unified: { 'memory.x': 'y'.repeat(MAX_RESOURCES_JSON_BYTES) } })).toThrow(/limit is 65536/);
  });

  it('refuses what is not JSON, not an object, or has unknown fields, naming where', () => {
    expect(refused('[1')).toThrow(/not valid JSON/);
    expect(refused([1])).toThrow(/resources_json must be a JSON object/);
    expect(refused({ memory: { limit: 1, secret: 'x' } })).toThrow(/resources_json\.memory has an unknown field "secret"/);
    expect(refused({ padding: 'x' })).toThrow(/unknown field "padding"/);
  });

  it('refuses wrong types and values out of range', () => {
    expect(refused({ memory: { limit: '1G' } })).toThrow(/resources_json\.memory\.limit must be a whole number/);
    expect(refused({ memory: { swappiness: 101 } })).toThrow(/swappiness/);
    expect(refused({ cpu: { shares: 1.5 } })).toThrow(/cpu\.shares/);
    expect(refused({ cpu: { quota: 2 ** 60 } })).toThrow(/cpu\.quota/);
    expect(refused({ cpu: { cpus: '0-3; rm -rf /' } })).toThrow(/cpu\.cpus/);
    expect(refused({ pids: {} })).toThrow(/pids\.limit is required/);
    expect(refused({ devices: [{ allow: 'yes' }] })).toThrow(/devices\[0\]\.allow must be true or false/);
    expect(refused({ devices: Array.from({ length: 300 }, () => ({ allow: true })) })).toThrow(/limit is 256/);
    expect(refused({ unified: { '../../etc': 'x' } })).toThrow(/unified key/);
    expect(refused({ hugepageLimits: [{ pageSize: '2 MB', limit: 1 }] })).toThrow(/pageSize/);
  });
});
