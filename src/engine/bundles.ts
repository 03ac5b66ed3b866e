import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { chmod, mkdir, open, readdir, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { alreadyExists, failedPrecondition, invalidArgument } from '../core/errors.js';
import { validateId } from '../core/ids.js';
import type { KnownResources, MountSpec } from '../core/sandboxer.js';
import type { EventStore } from '../core/store.js';
import { Sweep } from '../core/sweep.js';
import { removeTree } from '../host/mounts.js';
import type { ImageStore } from '../images/imageStore.js';
import { buildContainerSpec, overlayRootfsMount, type OciSpec } from '../oci/containerSpec.js';
import type { ContainerMount, ContainerResources } from '../oci/podConfig.js';
import { withSpan } from '../telemetry/tracing.js';
import type { CommandMeta, Engine } from './engine.js';
import { isLive } from './engineCore.js';
import { isActive, isDeleted } from './queries.js';

/** `kts run`: a container from a local image, in a ready pod. */
export interface RunContainerInput {
  sandboxId: string;
  name: string;
  /** A local image's name; busybox when empty. */
  image: string;
  command: string[];
  args: string[];
  env: Record<string, string>;
  workingDir: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  resources: ContainerResources;
  mounts: ContainerMount[];
  /** Started too, not only created. */
  start: boolean;
}

/** Kuasar's Prepare: a bundle from the caller's OCI spec and rootfs mounts. */
export interface PrepareContainerInput { sandboxId: string; containerId: string; spec: OciSpec; rootfsMounts: MountSpec[] }

/** `kts exec`: a command run to its end in a running container, its output collected. */
export interface ExecInput { containerId: string; args: string[]; env: Record<string, string>; stdin?: Buffer }

/** Each stream of `kts exec` output is cut here: it is the container's, and the reply must fit a gRPC message. */
const MAX_EXEC_OUTPUT_BYTES = 1024 * 1024;
const SIGTERM = 15;
const SIGKILL = 9;

/**
 * The containers kts makes itself (`kts run`, Kuasar's Prepare, `kts exec`'s processes): their
 * directories under `<root>` (bundle, overlay upper and work dirs, log), the OCI config.json it
 * writes, and their removal once deleted. The API hands requests here; it touches no file itself.
 */
export class ContainerBundles {
  /** Container directories a Prepare or RunContainer of this process is filling in (no record names them yet). */
  private readonly inUse = new Set<string>();

  constructor(private readonly options: { engine: Engine; images: ImageStore; rootDir: string; logger: Logger }) {}

  /** Where a container kts made keeps its bundle, writable layer and log. */
  dir(sandboxId: string, containerId: string): string {
    return containerDir(this.options.rootDir, sandboxId, containerId);
  }

  async run(input: RunContainerInput, meta: CommandMeta): Promise<{ containerId: string; pid: number; logPath: string }> {
    const { engine, images } = this.options;
    const sandbox = engine.sandbox(input.sandboxId);
    if (sandbox.state !== 'ready' || sandbox.context.pid === null) throw failedPrecondition(`sandbox ${input.sandboxId} is ${sandbox.state}; containers need a ready sandbox`);
    if (!input.name) throw invalidArgument('container name must not be empty');
    await requireHostPaths(input.mounts);
    const image = await images.resolve(input.image || 'busybox');
    const containerId = `${validateId('container name', input.name).slice(0, 40)}-${randomBytes(6).toString('hex')}`;
    const dir = this.dir(input.sandboxId, containerId);
    const bundleDir = path.join(dir, 'bundle');
    const logPath = path.join(dir, 'container.log');
    const holderPid = sandbox.context.pid;
    const created = await this.withContainerDir(dir, containerId, async () => {
      const spec = await withSpan('bundle.prepare', { attributes: { 'container.id': containerId } }, async () => {
        await mkdir(path.join(bundleDir, 'rootfs'), { recursive: true });
        await mkdir(path.join(dir, 'upper'), { recursive: true });
        // The upper dir's mode is the container's `/`; only the daemon's state around it is private.
        await chmod(path.join(dir, 'upper'), 0o755);
        await mkdir(path.join(dir, 'work'), { recursive: true });
        const built = buildContainerSpec({
          containerId, sandboxId: input.sandboxId, holderPid, hostname: sandbox.context.hostname,
          cgroupsPath: `/kts/${input.sandboxId}/${containerId}`, image: image.config,
          container: {
            metadata: { name: input.name }, command: input.command, args: input.args,
            envs: Object.entries(input.env).map(([key, value]) => ({ key, value })), workingDir: input.workingDir || undefined,
            annotations: input.annotations, mounts: input.mounts, linux: { resources: input.resources },
          },
        });
        await writeBundleFiles(bundleDir, built, logPath);
        return built;
      });
      return engine.createContainer(
        {
          sandboxId: input.sandboxId, containerId, name: input.name, bundleDir, image: input.image || 'busybox', logPath, labels: input.labels,
          rootfsMounts: [overlayRootfsMount(image.rootfsDir, path.join(dir, 'upper'), path.join(dir, 'work'))],
          stdio: {}, args: spec.process.args,
        },
        meta,
      );
    });
    const started = input.start ? await engine.startContainer(containerId, meta) : created;
    return { containerId, pid: started.pid, logPath };
  }

  /** The container's bundle and rootfs are prepared in the sandbox (created, not started), as Task Create does. */
  async prepare(input: PrepareContainerInput, meta: CommandMeta): Promise<{ bundle: string }> {
    const containerId = validateId('container id', input.containerId);
    this.options.engine.sandbox(input.sandboxId);
    const dir = this.dir(input.sandboxId, containerId);
    const bundleDir = path.join(dir, 'bundle');
    const logPath = path.join(dir, 'container.log');
    await this.withContainerDir(dir, containerId, async () => {
      await mkdir(path.join(bundleDir, 'rootfs'), { recursive: true });
      await writeBundleFiles(bundleDir, input.spec, logPath);
      await this.options.engine.createContainer(
        { sandboxId: input.sandboxId, containerId, name: containerId, bundleDir, logPath, rootfsMounts: input.rootfsMounts, stdio: {}, args: input.spec.process.args },
        meta,
      );
    });
    return { bundle: bundleDir };
  }

  /** Runs a command in a running container to its end; its exit status and (the head of) its output. */
  async exec(input: ExecInput, meta: CommandMeta): Promise<{ exitStatus: number; stdout: Buffer; stderr: Buffer }> {
    const { engine } = this.options;
    if (input.args.length === 0) throw invalidArgument('exec needs a command');
    const { containerId } = engine.container(input.containerId).context;
    const execId = `kts-exec-${randomBytes(6).toString('hex')}`;
    const dir = path.join(this.options.rootDir, 'exec', execId);
    await mkdir(dir, { recursive: true });
    const stdout = path.join(dir, 'stdout');
    const stderr = path.join(dir, 'stderr');
    // The whole input as a file the process reads to its end; without one its stdin is /dev/null.
    const stdin = input.stdin?.length ? path.join(dir, 'stdin') : undefined;
    try {
      if (stdin) await writeFile(stdin, input.stdin!, { mode: 0o600 });
      const env = Object.entries(input.env).map(([key, value]) => `${key}=${value}`);
      const process = { args: input.args, cwd: '/', env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', ...env], user: { uid: 0, gid: 0 }, terminal: false };
      await engine.createExec(containerId, execId, process, { stdout, stderr, ...(stdin && { stdin }) }, meta);
      await engine.startExec(containerId, execId, meta);
      const exit = await engine.waitExec(containerId, execId);
      await engine.deleteExec(containerId, execId, meta);
      return { exitStatus: exit.exitStatus, stdout: await readHead(stdout, MAX_EXEC_OUTPUT_BYTES), stderr: await readHead(stderr, MAX_EXEC_OUTPUT_BYTES) };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** crictl's stop of one container: SIGTERM, SIGKILL when it has not exited after `timeoutSecs` (0: at once); its exit status. */
  async stop(containerId: string, timeoutSecs: number, meta: CommandMeta): Promise<number> {
    const { engine } = this.options;
    const container = engine.container(containerId);
    if (!isLive(container)) return container.context.exitStatus ?? 0;
    const exited = engine.waitContainer(containerId);
    exited.catch(() => undefined); // awaited below unless a kill fails first
    if (timeoutSecs > 0) {
      await engine.killContainer(containerId, SIGTERM, false, meta);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<undefined>((resolve) => { timer = setTimeout(() => resolve(undefined), timeoutSecs * 1000); });
      const exit = await Promise.race([exited, deadline]).finally(() => clearTimeout(timer));
      if (exit) return exit.exitStatus;
    }
    await engine.killContainer(containerId, SIGKILL, true, meta);
    return (await exited).exitStatus;
  }

  /** `kts rm`: deletes a container; `force` stops a live one first. */
  async remove(containerId: string, force: boolean, meta: CommandMeta): Promise<void> {
    if (force && isLive(this.options.engine.container(containerId))) await this.stop(containerId, 0, meta);
    await this.options.engine.deleteContainer(containerId, meta);
  }

  /**
   * Removes a kts-made container's files once its ContainerDeleted event is committed. What cannot be
   * removed then (a busy mount), or was missed (the daemon died right then), is left to `sweep`.
   */
  removeWhenDeleted(): () => void {
    const { engine, logger } = this.options;
    return engine.store.onAppended((events) => {
      for (const event of events) {
        if (event.type !== 'ContainerDeleted') continue;
        const row = engine.store.getContainer(event.streamId.slice('container-'.length));
        if (!row || !isDeleted(row)) continue;
        const dir = this.dir(row.sandboxId, row.id);
        removeTree(dir).then(() => rmdirIfEmpty(path.dirname(dir))).catch((error: unknown) =>
          logger.warn({ dir, err: error }, 'removing a deleted container\'s bundle failed; the next sweep tries again'));
      }
    });
  }

  /**
   * Runs `create` in a container directory under `<root>/bundles` made for it alone: one that a live
   * record or a request in flight holds is refused (a live container's bundle and log are never
   * overwritten); any other is a leftover (a deleted container's, or one a crash cut short) and is made
   * afresh. A create that fails removes it unless a live record points into it (a failed container keeps
   * its bundle until it is deleted); a record made by another (a Task Create of the same id) does not.
   */
  private async withContainerDir<T>(dir: string, containerId: string, create: () => Promise<T>): Promise<T> {
    const { store } = this.options.engine;
    const live = (row = store.getContainer(containerId)) => row !== undefined && !isDeleted(row) && row.state !== 'absent';
    if (this.inUse.has(dir) || live()) throw alreadyExists(`container ${containerId} already exists`);
    this.inUse.add(dir);
    try {
      await removeTree(dir);
      await mkdir(dir, { recursive: true });
      return await create();
    } catch (error) {
      const row = store.getContainer(containerId);
      const kept = live(row) && String(row!.metadata.bundleDir ?? '').startsWith(dir + path.sep);
      if (!kept) await removeTree(dir).then(() => rmdirIfEmpty(path.dirname(dir))).catch(() => undefined);
      throw error;
    } finally {
      this.inUse.delete(dir);
    }
  }
}

function containerDir(rootDir: string, sandboxId: string, containerId: string): string {
  return path.join(rootDir, 'bundles', sandboxId, containerId);
}

/**
 * The daemon's sweep of `<root>/bundles`: a pod's directory once no live pod has its id, a container's
 * once its record says deleted (one being prepared has no record yet and stays). What it removed.
 */
export async function sweepBundles(store: EventStore, rootDir: string, known: KnownResources): Promise<string[]> {
  const bundles = path.join(rootDir, 'bundles');
  const sweep = new Sweep();
  for (const sandboxId of await readdir(bundles).catch(() => [] as string[])) {
    const podDir = path.join(bundles, sandboxId);
    if (!known.sandboxIds.has(sandboxId)) {
      await sweep.attempt(`bundles of pod ${sandboxId} (${podDir})`, () => removeTree(podDir));
      continue;
    }
    for (const containerId of await readdir(podDir).catch(() => [] as string[])) {
      const row = store.getContainer(containerId);
      if (!row || !isDeleted(row)) continue;
      const dir = path.join(podDir, containerId);
      await sweep.attempt(`bundle of deleted container ${containerId} (${dir})`, () => removeTree(dir));
    }
  }
  return sweep.finish();
}

/**
 * The log files kts keeps for active containers it made (under `<root>/bundles`), which their writers
 * (kts-log-pump, the vmm pumps; before, the containers themselves) hold open O_APPEND, so copy-truncate rotation can bound them.
 */
export function rotatableContainerLogs(store: EventStore, rootDir: string): string[] {
  const kinds = new Map(store.listSandboxes().map((row) => [row.id, row.kind]));
  const bundles = path.join(rootDir, 'bundles') + path.sep;
  return store.listContainers()
    .filter((row) => isActive(row) && ['runc', 'wasm', 'vmm'].includes(kinds.get(row.sandboxId) ?? ''))
    .map((row) => row.metadata.logPath)
    .filter((logPath): logPath is string => typeof logPath === 'string' && logPath.startsWith(bundles));
}

/** A `kts run` bind's host path must exist (the API has checked its form). */
async function requireHostPaths(mounts: ContainerMount[]): Promise<void> {
  for (const [index, mount] of mounts.entries()) {
    if (!(await stat(mount.hostPath).catch(() => undefined))) throw invalidArgument(`mounts[${index}].host_path ${mount.hostPath} does not exist on the host`);
  }
}

/** config.json holds the env (secrets, often) and the log holds the container's output: root only. */
async function writeBundleFiles(bundleDir: string, spec: object, logPath: string): Promise<void> {
  await writeFile(path.join(bundleDir, 'config.json'), JSON.stringify(spec, null, 2), { mode: 0o600 });
  await writeFile(logPath, '', { mode: 0o600 });
}

async function rmdirIfEmpty(dir: string): Promise<void> {
  await rmdir(dir).catch(() => undefined);
}

/** At most `maxBytes` from the start of a file the container wrote; nothing if it is missing. */
async function readHead(file: string, maxBytes: number): Promise<Buffer> {
  const handle = await open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK).catch(() => undefined);
  if (!handle) return Buffer.alloc(0);
  try {
    if (!(await handle.stat()).isFile()) return Buffer.alloc(0);
    const buffer = Buffer.alloc(maxBytes);
    const { bytesRead } = await handle.read(buffer, 0, maxBytes, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}
