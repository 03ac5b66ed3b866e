import { isIP } from 'node:net';
import path from 'node:path';
import { invalidArgument } from '../core/errors.js';
import { optionalBoolean, optionalPositiveInteger, optionalString, rejectUnknownKeys, type ConfigTable } from '../core/configTable.js';

/** `[network]`: how pods created without a netns get one (containerd always passes its own). */
export interface NetworkConfig {
  /** Run CNI for such pods; false (the default) gives them a fresh netns with loopback only. */
  cni: boolean;
  /** The first .conf/.conflist/.json here by name is the pod network; none means the bridge network below. */
  cniConfDir: string;
  /** Where the plugin binaries are, searched in order (CNI_PATH). */
  cniBinDirs: string[];
  /** The pod's interface (CNI_IFNAME). */
  interfaceName: string;
  pluginTimeoutSeconds: number;
  /** kts's own bridge network, used when cniConfDir has no config. */
  bridge: BridgeNetworkSettings;
}

export interface BridgeNetworkSettings {
  /** The CNI network name (host-local keeps its allocations under it). */
  name: string;
  /** The host bridge device, made by the bridge plugin on first use. */
  bridge: string;
  /** IPv4 CIDR the pods' addresses come from; the bridge (the pods' gateway) gets the first. */
  subnet: string;
  /** 0 lets the kernel choose. */
  mtu: number;
  /** Masquerade pod traffic leaving the subnet (needs iptables). */
  ipMasq: boolean;
  /** host-local's dataDir; empty for its default, /var/lib/cni/networks. */
  ipamDataDir: string;
}

export function defaultNetworkConfig(): NetworkConfig {
  return {
    cni: false,
    cniConfDir: '/etc/cni/net.d',
    // Debian's containernetworking-plugins, then the upstream tarball's place.
    cniBinDirs: ['/usr/lib/cni', '/opt/cni/bin'],
    interfaceName: 'eth0',
    pluginTimeoutSeconds: 60,
    bridge: { name: 'kts', bridge: 'kts0', subnet: '10.88.0.0/16', mtu: 0, ipMasq: false, ipamDataDir: '' },
  };
}

const NETWORK_KEYS = [
  'cni', 'cni_conf_dir', 'cni_bin_dir', 'interface', 'plugin_timeout_seconds', 'network_name', 'bridge', 'subnet', 'mtu', 'ip_masq', 'ipam_data_dir',
];
const INTERFACE_NAME_PATTERN = /^[A-Za-z0-9_.-]{1,15}$/;

/** `[network]`, applied to `network` in place, then checked whole. */
export function applyNetworkToml(network: NetworkConfig, table: ConfigTable): void {
  rejectUnknownKeys(table, 'network', NETWORK_KEYS);
  network.cni = optionalBoolean(table, 'cni', 'network.') ?? network.cni;
  const confDir = optionalString(table, 'cni_conf_dir', 'network.');
  if (confDir) network.cniConfDir = path.resolve(confDir);
  const binDir = optionalString(table, 'cni_bin_dir', 'network.');
  if (binDir) network.cniBinDirs = binDir.split(':').filter(Boolean).map((dir) => path.resolve(dir));
  network.interfaceName = optionalString(table, 'interface', 'network.') ?? network.interfaceName;
  network.pluginTimeoutSeconds = optionalPositiveInteger(table, 'plugin_timeout_seconds', 'network.') ?? network.pluginTimeoutSeconds;
  const bridge = network.bridge;
  bridge.name = optionalString(table, 'network_name', 'network.') ?? bridge.name;
  bridge.bridge = optionalString(table, 'bridge', 'network.') ?? bridge.bridge;
  bridge.subnet = optionalString(table, 'subnet', 'network.') ?? bridge.subnet;
  if (table.mtu !== undefined) {
    if (typeof table.mtu !== 'number' || !Number.isInteger(table.mtu)) throw invalidArgument('config: network.mtu must be an integer (0: the kernel\'s choice)');
    bridge.mtu = table.mtu;
  }
  bridge.ipMasq = optionalBoolean(table, 'ip_masq', 'network.') ?? bridge.ipMasq;
  const dataDir = optionalString(table, 'ipam_data_dir', 'network.');
  if (dataDir) bridge.ipamDataDir = path.resolve(dataDir);
  validateNetwork(network);
}

function validateNetwork(network: NetworkConfig): void {
  for (const [key, name] of [['interface', network.interfaceName], ['bridge', network.bridge.bridge]] as const) {
    if (!INTERFACE_NAME_PATTERN.test(name)) throw invalidArgument(`config: network.${key} "${name}" must be a device name of 1-15 characters of [A-Za-z0-9_.-]`);
  }
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(network.bridge.name)) throw invalidArgument(`config: network.network_name "${network.bridge.name}" must be 1-128 characters of [A-Za-z0-9_.-]`);
  const [address = '', prefix = ''] = network.bridge.subnet.split('/');
  const prefixLength = Number(prefix);
  if (isIP(address) !== 4 || !/^\d{1,2}$/.test(prefix) || prefixLength < 8 || prefixLength > 30) {
    throw invalidArgument(`config: network.subnet "${network.bridge.subnet}" must be an IPv4 CIDR with a prefix from /8 to /30, e.g. "10.88.0.0/16"`);
  }
  if (network.bridge.mtu !== 0 && (network.bridge.mtu < 576 || network.bridge.mtu > 65535)) throw invalidArgument('config: network.mtu must be 0 (the kernel\'s choice) or from 576 to 65535');
  if (network.cniBinDirs.length === 0) throw invalidArgument('config: network.cni_bin_dir must name at least one directory');
}
