/**
 * Pod networks made by kts itself (standalone pods, no containerd): one netns per sandbox under
 * `<stateDir>/<sandboxId>/netns`, attached with the CNI plugins. Beside it, `attachment.json`
 * records the config used for ADD (and its result), written *before* ADD runs, so a DEL after
 * a crash or a config change uses exactly what ADD did.
 */
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { validateId } from '../core/ids.js';
import type { PodNetworkPlan, PodNetworks, PodNetworkStatus } from '../core/podNetwork.js';
import { Sweep, type KnownIds } from '../core/sweep.js';
import { writeFileAtomic } from '../host/files.js';
import { isObject } from '../oci/json.js';
import { withSpan } from '../telemetry/tracing.js';
import { cniAdd, cniDel, parseCniConfig, parseCniResult, type CniConfigList, type CniPluginRunner } from './cni.js';
import { createNetns, isNetnsMounted, removeNetns } from '../host/netns.js';

export interface CniPodNetworksOptions {
  /** Per-sandbox netns files and attachment records live below it. */
  stateDir: string;
  config: CniConfigList;
  /** CNI_IFNAME of every pod. */
  interfaceName: string;
  runner: CniPluginRunner;
  logger: { warn(fields: object, message: string): void };
}

interface AttachmentRecord {
  config: CniConfigList;
  interfaceName: string;
  /** The raw ADD result, once there is one (handed back to DEL as prevResult). */
  result?: unknown;
}

export class CniPodNetworks implements PodNetworks {
  constructor(private readonly options: CniPodNetworksOptions) {}

  plan(sandboxId: string): PodNetworkPlan {
    return { netnsPath: this.netnsFile(sandboxId), network: this.options.config.name, interfaceName: this.options.interfaceName };
  }

  async setUp(sandboxId: string): Promise<PodNetworkStatus> {
    return withSpan('network.setup', { attributes: { 'sandbox.id': sandboxId, 'cni.network': this.options.config.name } }, async () => {
      const record: AttachmentRecord = { config: this.options.config, interfaceName: this.options.interfaceName };
      try {
        await mkdir(this.dir(sandboxId), { recursive: true });
        await writeFileAtomic(this.recordFile(sandboxId), JSON.stringify(record));
        await createNetns(this.netnsFile(sandboxId));
        const result = await cniAdd(record.config, this.attachment(sandboxId, record), this.options.runner);
        await writeFileAtomic(this.recordFile(sandboxId), JSON.stringify({ ...record, result }));
        return parseCniResult(result);
      } catch (error) {
        await this.tearDown(sandboxId).catch((cleanup: unknown) =>
          this.options.logger.warn({ sandbox_id: sandboxId, err: cleanup }, 'tearing down a failed pod network failed; removal or the orphan sweep retries it'));
        throw error;
      }
    });
  }

  async tearDown(sandboxId: string): Promise<void> {
    await withSpan('network.teardown', { attributes: { 'sandbox.id': sandboxId } }, async () => {
      const record = await this.readRecord(sandboxId);
      if (record) {
        const netnsPath = await this.netnsIfPresent(sandboxId);
        await cniDel(record.config, { ...this.attachment(sandboxId, record), netnsPath }, this.options.runner, record.result);
      }
      await removeNetns(this.netnsFile(sandboxId));
      await rm(this.dir(sandboxId), { recursive: true, force: true });
    });
  }

  async sweepOrphans(knownSandboxIds: KnownIds): Promise<string[]> {
    const sweep = new Sweep();
    for (const sandboxId of await readdir(this.options.stateDir).catch(() => [] as string[])) {
      if (knownSandboxIds.has(sandboxId)) continue;
      await sweep.attempt(`pod network of ${sandboxId} (netns ${this.netnsFile(sandboxId)}, CNI DEL)`, () => this.tearDown(sandboxId));
    }
    return sweep.finish();
  }

  private attachment(sandboxId: string, record: AttachmentRecord) {
    return { containerId: sandboxId, netnsPath: this.netnsFile(sandboxId), interfaceName: record.interfaceName };
  }

  /** DEL is told the netns only while it exists: the spec lets a runtime pass none for one already gone. */
  private async netnsIfPresent(sandboxId: string): Promise<string> {
    const file = this.netnsFile(sandboxId);
    return (await isNetnsMounted(file)) ? file : '';
  }

  private async readRecord(sandboxId: string): Promise<AttachmentRecord | undefined> {
    const text = await readFile(this.recordFile(sandboxId), 'utf8').catch(() => undefined);
    if (text === undefined) return undefined;
    const json: unknown = JSON.parse(text);
    if (!isObject(json) || typeof json.interfaceName !== 'string') return undefined;
    return { config: parseCniConfig(json.config, this.recordFile(sandboxId)), interfaceName: json.interfaceName, result: json.result };
  }

  private dir(sandboxId: string): string {
    return path.join(this.options.stateDir, validateId('sandbox id', sandboxId));
  }

  private netnsFile(sandboxId: string): string {
    return path.join(this.dir(sandboxId), 'netns');
  }

  private recordFile(sandboxId: string): string {
    return path.join(this.dir(sandboxId), 'attachment.json');
  }
}
