import type { ProcessExit } from '../core/sandboxer.js';
import { exitFields, isLive, isRunning, type ContainerEntity, type EngineCore, type SandboxEntity } from './engineCore.js';
import type { CommandMeta } from './entity.js';

const EXIT_AFTER_STOP_DEADLINE_MS = 5000;
/** 128 + SIGKILL: how a process the kernel's OOM killer ended exits. */
const OOM_EXIT_STATUS = 137;
const OOM_CHECK_DEADLINE_MS = 2000;

/** Records the sandbox's exit when its holder process dies on its own. */
export function watchSandbox(core: EngineCore, sandbox: SandboxEntity): void {
  const sandboxId = sandbox.context.sandboxId;
  core.observe(() => core.sandboxerFor(sandbox).waitSandboxExit(sandboxId),
    (exit) => core.serial(sandboxId, async () => {
      if (core.closed || !isRunning(sandbox)) return;
      core.logger.warn({ sandbox_id: sandboxId, exit_status: exit.exitStatus }, 'sandbox exited on its own');
      await recordContainerExitsAfterStop(core, sandbox, { caller: 'sandbox-exit-watch' });
      core.recordSandbox(sandbox, { type: 'SandboxExited', exitStatus: exit.exitStatus, exitedAt: exit.exitedAt.toISOString() }, { caller: 'sandbox-exit-watch' });
    }),
    (error) => core.logger.error({ sandbox_id: sandboxId, err: error }, 'watching sandbox exit failed'),
  );
}

/** After the pod's processes are killed, every live container's exit is recorded before the sandbox's. */
export async function recordContainerExitsAfterStop(core: EngineCore, sandbox: SandboxEntity, meta: CommandMeta): Promise<void> {
  const sandboxer = core.sandboxerFor(sandbox);
  for (const container of core.containersOf(sandbox.context.sandboxId)) {
    if (!isLive(container) || container.context.pid === null) continue;
    const exit = await Promise.race([
      sandboxer.waitProcessExit(sandbox.context.sandboxId, container.context.pid),
      new Promise<ProcessExit>((resolve) => setTimeout(() => resolve({ exitStatus: 137, exitedAt: new Date() }), EXIT_AFTER_STOP_DEADLINE_MS).unref()),
    ]);
    core.recordContainer(container, { type: 'ContainerExited', ...exitFields(exit) }, meta);
  }
}

/** Records a container's exit when its init process ends, even one that ended while the daemon was down. */
export function watchContainer(core: EngineCore, sandbox: SandboxEntity, container: ContainerEntity, pid: number): void {
  const { sandboxId, containerId, stdio } = container.context;
  if (core.sandboxerFor(sandbox).containersWriteStdio) holdOutput(core, containerId, [stdio.stdout, stdio.stderr]);
  core.observe(() => core.sandboxerFor(sandbox).waitProcessExit(sandboxId, pid),
    (exit) => core.serial(sandboxId, async () => {
      core.options.outputHolds?.release(containerId);
      if (core.closed || !isLive(container) || container.context.pid !== pid) return;
      await core.sandboxerFor(sandbox).processExited?.(sandboxId, containerId).catch((error: unknown) =>
        core.logger.warn({ sandbox_id: sandboxId, container_id: containerId, err: error }, 'cleaning up after the container\'s exit failed'));
      const reason = exit.reason ?? (exit.exitStatus === OOM_EXIT_STATUS ? await oomKillReason(core, sandbox, containerId) : undefined);
      core.recordContainer(container, { type: 'ContainerExited', ...exitFields({ ...exit, ...(reason !== undefined && { reason }) }) }, { caller: 'container-exit-watch' });
    }),
    (error) => core.logger.error({ sandbox_id: sandboxId, container_id: containerId, err: error }, 'watching container exit failed'),
  );
}

/** "OOMKilled: …" when the memory cgroup of a container that ended with 137 counts an OOM kill (as containerd's CRI decides). */
async function oomKillReason(core: EngineCore, sandbox: SandboxEntity, containerId: string): Promise<string | undefined> {
  // Bounded: the sandbox's queue waits on it, and a guest that no longer answers must not hold it.
  const stats = await Promise.race([
    core.sandboxerFor(sandbox).stats(sandbox.context.sandboxId, containerId).catch(() => undefined),
    new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), OOM_CHECK_DEADLINE_MS).unref()),
  ]);
  if (!stats?.oomKills) return undefined;
  return `OOMKilled: the kernel's OOM killer ended ${stats.oomKills} process(es) in the container's memory cgroup (its memory limit)`;
}

function holdOutput(core: EngineCore, containerId: string, paths: Array<string | undefined>): void {
  const fifos = paths.filter((path): path is string => path !== undefined);
  core.options.outputHolds?.hold(containerId, fifos).catch((error: unknown) =>
    core.logger.warn({ container_id: containerId, err: error }, 'holding the container\'s output FIFOs open failed; a containerd restart may end it with SIGPIPE'));
}

/** Records an exec's exit when its process ends. */
export function watchExec(core: EngineCore, sandbox: SandboxEntity, container: ContainerEntity, execId: string, pid: number): void {
  const { sandboxId } = container.context;
  core.observe(() => core.sandboxerFor(sandbox).waitProcessExit(sandboxId, pid),
    (exit) => core.serial(sandboxId, async () => {
      const exited = { type: 'ExecExited', execId, ...exitFields(exit) } as const;
      // The machine takes ExecExited only for a running exec of a container not being deleted; the pid tells this start from a later one.
      if (core.closed || container.context.execs[execId]?.pid !== pid || !container.can(exited)) return;
      await core.sandboxerFor(sandbox).processExited?.(sandboxId, container.context.containerId, execId).catch((error: unknown) =>
        core.logger.warn({ sandbox_id: sandboxId, exec_id: execId, err: error }, 'cleaning up after the exec\'s exit failed'));
      core.recordContainer(container, exited, { caller: 'exec-exit-watch' });
    }),
    (error) => core.logger.error({ sandbox_id: sandboxId, exec_id: execId, err: error }, 'watching exec exit failed'),
  );
}
