import type { ProcessIdentity } from '../../host/procfs.js';
import type { VmPaths } from './vmPaths.js';

export type Accelerator = 'kvm' | 'tcg';

/** What the hypervisor reports of a VM's run state (QMP query-status for QEMU). */
export interface VmRunState {
  running: boolean;
  /** The hypervisor's own word for it: running, paused, guest-panicked, shutdown, … */
  status: string;
}

/** A virtio-net NIC of the VM backed by a tap device. */
export interface VmNic {
  /** The hypervisor's id for the backend (QEMU `-netdev id=`). */
  id: string;
  tap: string;
  mac: string;
}

/** The VM's NICs and the netns their taps live in; the hypervisor runs in that netns to open them. */
export interface VmNetwork {
  netnsPath: string;
  nics: VmNic[];
}

/** One hypervisor (QEMU today) behind the vmm sandboxer; a second would be a sibling folder. */
export interface Hypervisor {
  readonly name: string;
  /** Starts the VM detached from the daemon; resolves once the hypervisor process runs. */
  launch(paths: VmPaths, accelerator: Accelerator, vmName: string, network?: VmNetwork): Promise<ProcessIdentity>;
  runState(paths: VmPaths): Promise<VmRunState>;
  /** Ends the VM at once (no guest shutdown); the process exits. */
  quit(paths: VmPaths): Promise<void>;
  /**
   * Hypervisor processes of VMs under `vmsDir`, by sandbox id, found by their command line: also the
   * ones a daemon launched but did not live to record (no identity file), or whose directory is gone.
   */
  processesUnder(vmsDir: string): Promise<Map<string, ProcessIdentity[]>>;
  /** Whether this accelerator can be tried at all on this host (e.g. /dev/kvm opens). */
  acceleratorAvailable(accelerator: Accelerator): Promise<boolean>;
}
