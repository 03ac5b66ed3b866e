import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from './config.js';

const dir = mkdtempSync(path.join(tmpdir(), 'kts-config-'));
const configFile = (text: string) => {
  const file = path.join(dir, `c-${Math.random().toString(16).slice(2)}.toml`);
  writeFileSync(file, text);
  return file;
};

describe('daemon config', () => {
  it('given no file, when loaded, then every default works: runc default kind, vmm served, guest under the root', () => {
    const config = loadConfig(undefined, { root: '/srv/kts' });
    expect(config.defaultSandboxKind).toBe('runc');
    expect(config.sandboxerKinds['kuasar-vmm']).toBe('vmm');
    expect(config.hypervisor).toMatchObject({ machine: 'microvm', accelerator: 'auto', kernel: '/srv/kts/guest/vmlinuz', initrd: '/srv/kts/guest/initrd.img' });
  });

  it('reads a [hypervisor] section; guest_dir moves kernel and initrd unless they are named', () => {
    const config = loadConfig(configFile('[hypervisor]\nguest_dir = "/opt/guest"\naccelerator = "tcg"\nvcpus = 2\nmemory_mb = 512\nkernel_params = "foo=1"\ndebug = true\n'));
    expect(config.hypervisor).toMatchObject({ kernel: '/opt/guest/vmlinuz', initrd: '/opt/guest/initrd.img', accelerator: 'tcg', vcpus: 2, memoryMb: 512, kernelParams: 'foo=1', debug: true });
  });

  it.each([
    ['[hypervisor]\nmachine = "pc"', 'hypervisor.machine must be one of microvm, q35'],
    ['[hypervisor]\nvcpus = 0', 'hypervisor.vcpus must be a positive integer'],
    ['[hypervisor]\nmemory_mb = 64', 'memory_mb must be at least 128'],
    ['[hypervisor]\nkernal = "/x"', 'unknown key "hypervisor.kernal"'],
    ['[hypervisor]\ndebug = "yes"', 'hypervisor.debug must be true or false'],
    ['colour = "blue"', 'unknown key "colour"'],
    ['default_sandbox_kind = "lxc"', 'default_sandbox_kind "lxc" is not one of runc, vmm'],
    ['listen = ', 'is not valid TOML'],
  ])('refuses %j with a message naming the problem', (text, message) => {
    expect(() => loadConfig(configFile(text))).toThrow(message);
  });
});
