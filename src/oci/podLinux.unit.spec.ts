import { describe, expect, it } from 'vitest';
import { resolvConf, sandboxInitArgs, sysctlNamespace, validatePodLinux } from './podLinux.js';

describe('validatePodLinux', () => {
  it('accepts namespaced sysctls of the pod\'s own namespaces, slashes read as dots', () => {
    expect(validatePodLinux({ sysctls: { 'kernel.shm_rmid_forced': '1', 'net/ipv4/ip_unprivileged_port_start': '0', 'fs.mqueue.msg_max': '100' } }).sysctls)
      .toEqual({ 'kernel.shm_rmid_forced': '1', 'net.ipv4.ip_unprivileged_port_start': '0', 'fs.mqueue.msg_max': '100' });
  });

  it.each([
    ['kernel.hostname', 'is not namespaced'],
    ['vm.swappiness', 'is not namespaced'],
    ['kernel.core_pattern', 'is not namespaced'],
    ['net..ipv4', 'not a sysctl name'],
    ['net.ipv4.ip_forward/../../../kernel/core_pattern', 'not a sysctl name'],
    ['NET.ipv4.ip_forward', 'not a sysctl name'],
    ['net', 'not a sysctl name'],
  ])('refuses the sysctl %s (%s)', (name, reason) => {
    expect(() => validatePodLinux({ sysctls: { [name]: '1' } })).toThrow(reason);
  });

  it('refuses a sysctl of a namespace the pod shares with the host', () => {
    expect(() => validatePodLinux({ hostNetwork: true, sysctls: { 'net.ipv4.ip_forward': '1' } })).toThrow('host\'s network namespace would change the host');
    expect(() => validatePodLinux({ hostIpc: true, sysctls: { 'kernel.shmmax': '1' } })).toThrow('host\'s IPC namespace would change the host');
    expect(validatePodLinux({ hostNetwork: true, sysctls: { 'kernel.shmmax': '1' } }).sysctls).toEqual({ 'kernel.shmmax': '1' });
  });

  it('refuses a value with a newline, and resolver entries with spaces', () => {
    expect(() => validatePodLinux({ sysctls: { 'net.ipv4.ip_forward': '1\n0' } })).toThrow('one line');
    expect(() => validatePodLinux({ dns: { servers: ['1.1.1.1 evil'], searches: [], options: [] } })).toThrow('dns_config.servers');
  });
});

describe('resolvConf', () => {
  it('writes search, nameserver and options lines as containerd does', () => {
    expect(resolvConf({ servers: ['10.10.10.10', '10.10.10.11'], searches: ['a.b', 'c'], options: ['ndots:5'] }))
      .toBe('search a.b c\nnameserver 10.10.10.10\nnameserver 10.10.10.11\noptions ndots:5\n');
    expect(resolvConf(undefined)).toBeUndefined();
    expect(resolvConf({ servers: [], searches: [], options: [] })).toBeUndefined();
  });
});

describe('sandboxInitArgs', () => {
  it('passes host namespaces and sysctls to kts-sandbox-init', () => {
    expect(sandboxInitArgs({ hostNetwork: true, hostPid: true, sysctls: { 'kernel.sem': '250 32000 32 128' } }))
      .toEqual(['--host-network', '--host-pid', '--sysctl', 'kernel.sem=250 32000 32 128']);
    expect(sandboxInitArgs(undefined)).toEqual([]);
    expect(sysctlNamespace('net.core.somaxconn')).toBe('network');
  });
});
