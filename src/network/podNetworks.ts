import type { NetworkConfig } from './config.js';
import { bridgeNetworkConfig, loadCniConfigDir } from './cni.js';
import { CniPodNetworks } from './cniPodNetworks.js';

/**
 * The daemon's pod networks from `[network]`: the first config in cni_conf_dir, else kts's own
 * bridge network. With CNI off the directory is not read (a broken file there must not stop a
 * daemon that does not use it); teardown of earlier attachments uses their own recorded config.
 */
export async function openPodNetworks(config: NetworkConfig, stateDir: string, logger: { info(fields: object, message: string): void; warn(fields: object, message: string): void }): Promise<CniPodNetworks> {
  const found = config.cni ? await loadCniConfigDir(config.cniConfDir) : undefined;
  const cniConfig = found?.config ?? bridgeNetworkConfig(config.bridge);
  if (config.cni) {
    const source = found ? found.file : `the [network] bridge settings (${config.cniConfDir} has no config)`;
    logger.info({ network: cniConfig.name, plugins: cniConfig.plugins.map((plugin) => plugin.type), source }, 'pods without a netns get a CNI network');
  }
  return new CniPodNetworks({
    stateDir, config: cniConfig, interfaceName: config.interfaceName, logger,
    runner: { binDirs: config.cniBinDirs, timeoutMs: config.pluginTimeoutSeconds * 1000 },
  });
}
