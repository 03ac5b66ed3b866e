import type { ContainerContext } from '../../machines/containerMachine.js';
import type { SandboxContext } from '../../machines/sandboxMachine.js';
import type { Projection } from '../core/store.js';
import type { EntitySnapshot } from './entity.js';

type SandboxSnapshot = EntitySnapshot<SandboxContext>;
type ContainerSnapshot = EntitySnapshot<ContainerContext>;

/** The read-model row of a sandbox, written in the same transaction as its event. */
export function sandboxProjection(snapshot: SandboxSnapshot, version: number): Projection {
  const c = snapshot.context;
  const now = new Date().toISOString();
  return {
    table: 'sandboxes',
    row: {
      id: c.sandboxId,
      name: c.name,
      namespace: c.namespace,
      kind: c.kind,
      state: String(snapshot.value),
      pid: c.pid,
      taskAddress: c.taskAddress,
      createdAt: c.createdAt,
      updatedAt: now,
      version,
      metadata: {
        uid: c.uid,
        hostname: c.hostname,
        labels: c.labels,
        annotationCount: Object.keys(c.annotations).length,
        exitStatus: c.exitStatus,
        exitedAt: c.exitedAt,
        lastError: c.lastError,
        // Snapshots from before pod networks have no `network`.
        netnsPath: c.netnsPath ?? c.network?.netnsPath ?? null,
        ips: (c.network?.status?.ips ?? []).map((ip) => ip.address.split('/')[0]),
      },
    },
  };
}

export function containerProjection(snapshot: ContainerSnapshot, version: number): Projection {
  const c = snapshot.context;
  return {
    table: 'containers',
    row: {
      id: c.containerId,
      sandboxId: c.sandboxId,
      name: c.name,
      state: String(snapshot.value),
      pid: c.pid,
      exitStatus: c.exitStatus,
      exitedAt: c.exitedAt,
      createdAt: c.createdAt,
      updatedAt: new Date().toISOString(),
      version,
      metadata: { image: c.image ?? null, args: c.args, logPath: c.logPath ?? null, logFormat: c.logFormat ?? null, bundleDir: c.bundleDir, lastError: c.lastError, labels: c.labels },
    },
  };
}
