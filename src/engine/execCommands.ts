import { alreadyExists, failedPrecondition, invalidArgument, notFound } from '../core/errors.js';
import { validateId } from '../core/ids.js';
import type { OciProcess, StdioPaths } from '../core/sandboxer.js';
import { containerBracket } from './containerCommands.js';
import type { EngineCore } from './engineCore.js';
import type { CommandMeta } from './entity.js';
import { watchExec } from './exitWatchers.js';

export async function createExec(core: EngineCore, containerId: string, execId: string, process: OciProcess, stdio: StdioPaths, meta: CommandMeta): Promise<void> {
  validateId('exec id', execId);
  const args = process.args;
  if (!Array.isArray(args) || args.length === 0 || !args.every((a) => typeof a === 'string')) {
    throw invalidArgument('exec process: args must be a non-empty array of strings');
  }
  const sandboxId = core.container(containerId).context.sandboxId;
  if (process.terminal === true && !core.sandboxerFor(core.sandbox(sandboxId)).resizeTerminal) {
    throw invalidArgument(`exec ${execId}: ${core.sandbox(sandboxId).context.kind} sandboxes give execs no terminal (tty); run it without one`);
  }
  await core.serial(sandboxId, async () => {
    const container = core.container(containerId);
    if (container.state !== 'running') throw failedPrecondition(`container ${containerId} is ${container.state}; exec needs a running container`);
    if (container.context.execs[execId]) throw alreadyExists(`exec ${execId} already exists in container ${containerId}`);
    // The spec first: an ExecCreated whose spec was lost could never start.
    await core.execSpecs.put(containerId, execId, process);
    core.recordContainer(container, { type: 'ExecCreated', execId, args: args as string[], stdio }, meta);
  });
}

export async function startExec(core: EngineCore, containerId: string, execId: string, meta: CommandMeta): Promise<{ pid: number }> {
  const sandboxId = core.container(containerId).context.sandboxId;
  return core.serial(sandboxId, async () => {
    const container = core.container(containerId);
    const exec = container.context.execs[execId];
    if (!exec) throw notFound(`exec ${execId} not found in container ${containerId}`);
    if (exec.pid !== null) throw failedPrecondition(`exec ${execId} was already started`);
    const process = await core.execSpecs.get(containerId, execId);
    if (!process) throw failedPrecondition(`exec ${execId} has no process spec left; create it again`);
    const sandbox = core.sandbox(sandboxId);
    const { pid } = await containerBracket(core, container, meta, {
      intent: { type: 'ExecStartRequested', execId },
      span: { name: 'sandboxer.exec', attributes: { 'container.id': containerId, 'exec.id': execId } },
      effect: () => core.sandboxerFor(sandbox).execProcess(sandboxId, containerId, execId, process, exec.stdio),
      outcome: ({ pid }) => ({ type: 'ExecStarted', execId, pid }),
      afterOutcome: async ({ pid }) => {
        await core.execSpecs.remove(containerId, execId);
        watchExec(core, sandbox, container, execId, pid);
      },
      failure: (reason) => ({ type: 'ExecStartFailed', execId, reason }),
    });
    return { pid };
  });
}

export async function waitExec(core: EngineCore, containerId: string, execId: string): Promise<{ exitStatus: number; exitedAt: string }> {
  const container = core.container(containerId);
  if (!container.context.execs[execId]) throw notFound(`exec ${execId} not found in container ${containerId}`);
  return core.waiters.waitUntil(
    container.streamId,
    () => { const exec = container.context.execs[execId]; return !exec || exec.exitedAt !== null; },
    () => {
      const exec = container.context.execs[execId];
      return { exitStatus: exec?.exitStatus ?? 255, exitedAt: exec?.exitedAt ?? new Date().toISOString() };
    },
  );
}

/** Sets the size of an exec's terminal. */
export async function resizeTerminal(core: EngineCore, containerId: string, execId: string, width: number, height: number): Promise<void> {
  const container = core.container(containerId);
  if (!execId) throw invalidArgument(`container ${containerId} has no terminal: only execs get one`);
  if (!container.context.execs[execId]) throw notFound(`exec ${execId} not found in container ${containerId}`);
  const sandboxId = container.context.sandboxId;
  const sandboxer = core.sandboxerFor(core.sandbox(sandboxId));
  if (!sandboxer.resizeTerminal) throw invalidArgument(`${core.sandbox(sandboxId).context.kind} sandboxes have no terminals to resize`);
  await sandboxer.resizeTerminal(sandboxId, containerId, execId, width, height);
}

/** Task CloseIO of stdin: no transition, the backend ends the stream (a no-op where the FIFO reaches the process itself). */
export async function closeStdin(core: EngineCore, containerId: string, execId?: string): Promise<void> {
  const { sandboxId, execs } = core.container(containerId).context;
  if (execId && !execs[execId]) throw notFound(`exec ${execId} not found in container ${containerId}`);
  await core.sandboxerFor(core.sandbox(sandboxId)).closeStdin?.(sandboxId, containerId, execId || undefined);
}

export async function killExec(core: EngineCore, containerId: string, execId: string, signal: number): Promise<void> {
  const { sandboxId, execs } = core.container(containerId).context;
  const exec = execs[execId];
  if (!exec) throw notFound(`exec ${execId} not found in container ${containerId}`);
  if (exec.pid === null || exec.exitedAt !== null) return;
  const sandboxer = core.sandboxerFor(core.sandbox(sandboxId));
  if (sandboxer.killExec) return sandboxer.killExec(sandboxId, containerId, execId, signal, exec.pid);
  try {
    process.kill(exec.pid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

export async function deleteExec(core: EngineCore, containerId: string, execId: string, meta: CommandMeta): Promise<{ pid: number; exitStatus: number; exitedAt: string | null }> {
  const sandboxId = core.container(containerId).context.sandboxId;
  return core.serial(sandboxId, async () => {
    const container = core.container(containerId);
    const exec = container.context.execs[execId];
    if (!exec) throw notFound(`exec ${execId} not found in container ${containerId}`);
    if (exec.pid !== null && exec.exitedAt === null) throw failedPrecondition(`exec ${execId} is still running; kill it before deleting it`);
    core.recordContainer(container, { type: 'ExecDeleted', execId }, meta);
    await core.execSpecs.remove(containerId, execId);
    return { pid: exec.pid ?? 0, exitStatus: exec.exitStatus ?? 0, exitedAt: exec.exitedAt };
  });
}
