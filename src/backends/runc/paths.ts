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
  /** The pod's resolver (its dns_config), bind-mounted read-only as each container's /etc/resolv.conf. */
  resolvConf: string;
}

export interface ContainerPaths {
  dir: string;
  /** The container's bundle directory, recorded so its rootfs can be unmounted after a restart. */
  bundleRecord: string;
  /** A config.json of kts's own (containerd's plus the pod's mounts) when the container needs one; its bundle is then `dir`. */
  config: string;
  initPid: string;
  execProcess(execId: string): string;
  execPid(execId: string): string;
  /** The FIFO kts-console reads "<cols> <rows>" lines from, for an exec with a terminal. */
  execResize(execId: string): string;
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
    resolvConf: join(dir, 'resolv.conf'),
  };
}

export function containerPaths(sandbox: SandboxPaths, containerId: string): ContainerPaths {
  const dir = join(sandbox.containersDir, containerId);
  return {
    dir,
    bundleRecord: join(dir, 'bundle'),
    config: join(dir, 'config.json'),
    initPid: join(dir, 'init.pid'),
    execProcess: (execId) => join(dir, `exec-${execId}.json`),
    execPid: (execId) => join(dir, `exec-${execId}.pid`),
    execResize: (execId) => join(dir, `exec-${execId}.resize`),
  };
}
