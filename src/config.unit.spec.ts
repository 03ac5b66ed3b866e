import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from './config.js';

const dir = mkdtempSync(path.join(tmpdir(), 'kts-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const configFile = (text: string) => {
  const file = path.join(dir, `c-${Math.random().toString(16).slice(2)}.toml`);
  writeFileSync(file, text);
  return file;
};

describe('daemon config', () => {
  it('given no file, when loaded, then every default works: runc default kind, vmm and wasm served, guest under the root', () => {
    const config = loadConfig(undefined, { root: '/srv/kts' });
    expect(config.defaultSandboxKind).toBe('runc');
    expect(config.sandboxerKinds['kuasar-vmm']).toBe('vmm');
    expect([config.sandboxerKinds.wasm, config.sandboxerKinds['kts-wasm'], config.sandboxerKinds['kuasar-wasm']]).toEqual(['wasm', 'wasm', 'wasm']);
    expect(config.hypervisor).toMatchObject({ machine: 'microvm', accelerator: 'auto', kernel: '/srv/kts/guest/vmlinuz', initrd: '/srv/kts/guest/initrd.img' });
  });

  it('reads a [hypervisor] section; guest_dir moves kernel and initrd unless they are named', () => {
    const config = loadConfig(configFile('[hypervisor]\nguest_dir = "/opt/guest"\naccelerator = "tcg"\nvcpus = 2\nmemory_mb = 512\nkernel_params = "foo=1"\ndebug = true\n'));
    expect(config.hypervisor).toMatchObject({ kernel: '/opt/guest/vmlinuz', initrd: '/opt/guest/initrd.img', accelerator: 'tcg', vcpus: 2, memoryMb: 512, kernelParams: 'foo=1', debug: true });
  });

  it('given task_relay, when loaded, then it is a boolean, off unless set; anything else is refused by name', () => {
    expect(loadConfig(undefined, { root: '/srv/kts' }).taskRelay).toBe(false);
    expect(loadConfig(configFile('task_relay = true\n')).taskRelay).toBe(true);
    expect(() => loadConfig(configFile('task_relay = "yes"\n'))).toThrow(/task_relay must be true or false/);
  });

  it('given no [metrics] section or an empty listen, when loaded, then no metrics endpoint is served', () => {
    expect(loadConfig(undefined, { root: '/srv/kts' }).metrics.listen).toBeNull();
    expect(loadConfig(configFile('[metrics]\nlisten = ""\n')).metrics.listen).toBeNull();
  });

  it.each([
    ['127.0.0.1:9464', { host: '127.0.0.1', port: 9464 }],
    ['localhost:1', { host: 'localhost', port: 1 }],
    ['[::1]:65535', { host: '::1', port: 65535 }],
    ['0.0.0.0:9464', { host: '0.0.0.0', port: 9464 }],
  ])('given [metrics] listen = %j, when loaded, then the endpoint address is %j', (listen, address) => {
    expect(loadConfig(configFile(`[metrics]\nlisten = "${listen}"\n`)).metrics.listen).toEqual(address);
  });

  it('takes sweep_interval_seconds (default 60) and refuses one that is not a positive number', () => {
    expect(loadConfig(configFile('')).sweepIntervalSeconds).toBe(60);
    expect(loadConfig(configFile('sweep_interval_seconds = 5\n')).sweepIntervalSeconds).toBe(5);
    expect(() => loadConfig(configFile('sweep_interval_seconds = 0\n'))).toThrow(/sweep_interval_seconds must be a positive number/);
  });

  it.each([
    ['[metrics]\nlisten = "9464"', 'metrics.listen "9464" must be'],
    ['[metrics]\nlisten = ":9464"', 'metrics.listen ":9464" must be'],
    ['[metrics]\nlisten = "127.0.0.1:0"', 'with a port from 1 to 65535'],
    ['[metrics]\nlisten = "127.0.0.1:70000"', 'with a port from 1 to 65535'],
    ['[metrics]\nlisten = "metrics.example:9464"', 'metrics.listen "metrics.example:9464" must be'],
    ['[metrics]\nlisten = "::1:9464"', 'metrics.listen "::1:9464" must be'],
    ['[metrics]\nlisten = "[127.0.0.1]:9464"', 'metrics.listen "[127.0.0.1]:9464" must be'],
    ['[metrics]\nlisten = 9464', 'metrics.listen must be a string'],
    ['[metrics]\nport = 9464', 'unknown key "metrics.port"'],
  ])('refuses the metrics address in %j with a message naming it', (text, message) => {
    expect(() => loadConfig(configFile(text))).toThrow(message);
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
    ['[runc]\nmax_concurrent_starts = -1', 'runc.max_concurrent_starts must be a whole number (0: no limit)'],
    ['[runc]\nbinnary = "runc"', 'unknown key "runc.binnary"'],
  ])('refuses %j with a message naming the problem', (text, message) => {
    expect(() => loadConfig(configFile(text))).toThrow(message);
  });

  it('given no [network] section, when loaded, then CNI is off and the bridge network has its documented defaults', () => {
    const network = loadConfig(undefined, { root: '/srv/kts' }).network;
    expect(network).toMatchObject({ cni: false, cniConfDir: '/etc/cni/net.d', cniBinDirs: ['/usr/lib/cni', '/opt/cni/bin'], interfaceName: 'eth0' });
    expect(network.bridge).toEqual({ name: 'kts', bridge: 'kts0', subnet: '10.88.0.0/16', mtu: 0, ipMasq: false, ipamDataDir: '' });
  });

  it('reads a [network] section: bin dirs split on ":", paths made absolute, the bridge settings', () => {
    const network = loadConfig(configFile([
      '[network]', 'cni = true', 'cni_conf_dir = "/srv/cni/conf"', 'cni_bin_dir = "/srv/cni/bin:/opt/cni/bin"', 'interface = "net0"',
      'network_name = "pods"', 'bridge = "pods0"', 'subnet = "10.88.7.0/24"', 'mtu = 1400', 'ip_masq = true', 'ipam_data_dir = "/srv/ipam"',
    ].join('\n'))).network;
    expect(network).toMatchObject({ cni: true, cniConfDir: '/srv/cni/conf', cniBinDirs: ['/srv/cni/bin', '/opt/cni/bin'], interfaceName: 'net0' });
    expect(network.bridge).toEqual({ name: 'pods', bridge: 'pods0', subnet: '10.88.7.0/24', mtu: 1400, ipMasq: true, ipamDataDir: '/srv/ipam' });
  });

  it('given network.mtu = 0, when loaded, then the kernel chooses the MTU', () => {
    expect(loadConfig(configFile('[network]\nmtu = 0\n')).network.bridge.mtu).toBe(0);
  });

  it.each([
    ['[network]\ncni = "yes"', 'network.cni must be true or false'],
    ['[network]\nsubnet = "10.88.0.0"', 'network.subnet "10.88.0.0" must be an IPv4 CIDR'],
    ['[network]\nsubnet = "fd00::/64"', 'network.subnet "fd00::/64" must be an IPv4 CIDR'],
    ['[network]\nbridge = "a-bridge-name-too-long"', 'network.bridge "a-bridge-name-too-long" must be a device name'],
    ['[network]\ninterface = "eth 0"', 'network.interface "eth 0" must be a device name'],
    ['[network]\nmtu = 100', 'network.mtu must be 0 (the kernel\'s choice) or from 576 to 65535'],
    ['[network]\nmtu = -1', 'network.mtu must be 0 (the kernel\'s choice) or from 576 to 65535'],
    ['[network]\nmtu = "1500"', 'network.mtu must be an integer'],
    ['[network]\ncni_dir = "/x"', 'unknown key "network.cni_dir"'],
  ])('refuses the network setting in %j with a message naming it', (text, message) => {
    expect(() => loadConfig(configFile(text))).toThrow(message);
  });
});

describe('[images] layer caps', () => {
  it('given no [images] caps, when loaded, then a layer may hold 8 GiB and a million entries; given caps, then they are used', () => {
    expect(loadConfig(undefined, { root: '/srv/kts' }).images).toEqual({ dir: '/srv/kts/images', maxLayerBytes: 8 * 1024 ** 3, maxLayerEntries: 1_000_000 });
    expect(loadConfig(configFile('[images]\nmax_layer_bytes = 1048576\nmax_layer_entries = 5000\n')).images).toMatchObject({ maxLayerBytes: 1 << 20, maxLayerEntries: 5000 });
  });

  it.each(['max_layer_bytes = 0', 'max_layer_entries = -1', 'max_layer_bytes = "1G"', 'max_layer_size = 1'])('refuses [images] %s', (line) => {
    expect(() => loadConfig(configFile(`[images]\n${line}\n`))).toThrow(/config: .*images\.max_layer/);
  });
});
