import { join } from 'node:path';

/** Where one runc sandbox keeps its files; the layout is shared with sandbox-init.c. */
export interface SandboxPaths {
  dir: string;
  /** `<pid> <start time>` of kts-sandbox-init, written by the daemon that spawned it. */
  initPid: string;
  /** The holder's host pid, written by the init once the sandbox is ready. */
  holderPid: string;
  initLog: string;
  ctl: string;
  exitsDir: string;
  reqDir: string;
  containersDir: string;
  /** Parents of container cgroups (one a line), removed with the sandbox. */
  cgroupParents: string;
}

export interface ContainerPaths {
  dir: string;
  /** The container's bundle directory, recorded so its rootfs can be unmounted after a restart. */
  bundleRecord: string;
  initPid: string;
  execProcess(execId: string): string;
  execPid(execId: string): string;
}

export function sandboxPaths(rootDir: string, sandboxId: string): SandboxPaths {
  const dir = join(rootDir, 'sandboxes', sandboxId);
  return {
    dir,
    initPid: join(dir, 'init.pid'),
    holderPid: join(dir, 'holder.pid'),
    initLog: join(dir, 'init.log'),
    ctl: join(dir, 'ctl'),
    exitsDir: join(dir, 'exits'),
    reqDir: join(dir, 'req'),
    containersDir: join(dir, 'containers'),
    cgroupParents: join(dir, 'cgroup-parents'),
  };
}

export function containerPaths(sandbox: SandboxPaths, containerId: string): ContainerPaths {
  const dir = join(sandbox.containersDir, containerId);
  return {
    dir,
    bundleRecord: join(dir, 'bundle'),
    initPid: join(dir, 'init.pid'),
    execProcess: (execId) => join(dir, `exec-${execId}.json`),
    execPid: (execId) => join(dir, `exec-${execId}.pid`),
  };
}
