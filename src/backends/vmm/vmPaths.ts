import { join } from 'node:path';

/** Where one microVM sandbox keeps its files on the host: `<rootDir>/vms/<sandboxId>/`. */
export interface VmPaths {
  dir: string;
  /** Shared into the guest over 9p; holds each container's bundle, rootfs and stdio. */
  shareDir: string;
  qmpSocket: string;
  /** QEMU's chardev socket behind the guest's `kts.agent` virtio-serial port. */
  agentSocket: string;
  /** The guest's serial console. */
  consoleLog: string;
  /** QEMU's own stderr from the launch (bad options, missing kernel). */
  qemuLog: string;
  /** Written by QEMU (-pidfile). */
  pidFile: string;
  /** `<pid> <start time>` of QEMU, so a reused pid is never mistaken for it. */
  identityFile: string;
  /** What the launch chose (accelerator and why), as JSON. */
  launchFile: string;
  /** The pod netns's interfaces mirrored into the VM and their taps (tapMirror.ts), written before the taps are made. */
  networkFile: string;
  /** Where each FIFO pump records how far it got (fifoPump.ts); outside the share, which the guest can write. */
  pumpStateDir: string;
  /** What the daemon decided per container (its host bundle), one JSON file each; outside the share. */
  containersDir: string;
}

export function vmPaths(rootDir: string, sandboxId: string): VmPaths {
  const dir = join(rootDir, 'vms', sandboxId);
  return {
    dir,
    shareDir: join(dir, 'share'),
    qmpSocket: join(dir, 'qmp.sock'),
    agentSocket: join(dir, 'agent.sock'),
    consoleLog: join(dir, 'console.log'),
    qemuLog: join(dir, 'qemu.log'),
    pidFile: join(dir, 'qemu.pid'),
    identityFile: join(dir, 'qemu.identity'),
    launchFile: join(dir, 'launch.json'),
    networkFile: join(dir, 'network.json'),
    pumpStateDir: join(dir, 'pumps'),
    containersDir: join(dir, 'containers'),
  };
}
