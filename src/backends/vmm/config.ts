import { existsSync } from 'node:fs';
import path from 'node:path';
import { invalidArgument } from '../../core/errors.js';
import { optionalString, rejectUnknownKeys, type ConfigTable } from '../../core/configTable.js';
import { OCI_RUNTIME_CHOICES, type OciRuntimeChoice } from '../runc/ociRuntime.js';

/** `[hypervisor]`: how microVM (vmm) sandboxes are launched. */
export interface HypervisorConfig {
  /** The QEMU binary. */
  path: string;
  /** `microvm` (virtio-mmio, fastest boot) or `q35` (the fallback for QEMUs without microvm). */
  machine: 'microvm' | 'q35';
  /** `auto` tries KVM once per daemon start and falls back to TCG when KVM guests do not come up. */
  accelerator: 'auto' | 'kvm' | 'tcg';
  /** Directory scripts/build-guest.sh wrote the guest into; kernel and initrd default to files in it. */
  guestDir: string;
  kernel: string;
  initrd: string;
  /** Read-only guest root filesystem image (ext4) on virtio-blk; empty = the initrd is the whole guest. */
  image: string;
  /** Extra guest kernel command-line parameters, appended to the ones kts needs. */
  kernelParams: string;
  vcpus: number;
  memoryMb: number;
  /** TCG translation-cache size; bounds QEMU's memory under TCG. */
  tcgTbSizeMb: number;
  /** How long a guest may take from launch until its agent answers. */
  bootDeadlineSeconds: number;
  /** How long the one KVM trial boot of `accelerator = "auto"` may take before TCG is used. */
  kvmProbeDeadlineSeconds: number;
  /** Period of the agent + QMP health check of running VMs. */
  healthIntervalSeconds: number;
  /** Deadline of one agent call (WaitProcess excepted). */
  agentCallTimeoutSeconds: number;
  /** The guest's OCI runtime: `auto` (crun when the guest image has it, else runc), `crun` or `runc`. */
  guestOciRuntime: OciRuntimeChoice;
  /** Verbose guest kernel console. */
  debug: boolean;
  /** The guest's console log is copied to console.log.1 and emptied when it grows past this. */
  consoleMaxBytes: number;
  /** A share stdout/stderr file pumped into a host FIFO frees the disk blocks of what was forwarded every this many bytes. */
  shareStdioMaxBytes: number;
}

export function defaultHypervisorConfig(guestDir: string): HypervisorConfig {
  return {
    path: 'qemu-system-x86_64',
    machine: 'microvm',
    accelerator: 'auto',
    guestDir,
    // The uncompressed kernel boots 2.3 s faster under TCG; build-guest.sh writes both.
    kernel: path.join(guestDir, existsSync(path.join(guestDir, 'vmlinux')) ? 'vmlinux' : 'vmlinuz'),
    initrd: path.join(guestDir, 'initrd.img'),
    image: path.join(guestDir, 'rootfs.img'),
    kernelParams: '',
    vcpus: 1,
    memoryMb: 256,
    tcgTbSizeMb: 64,
    bootDeadlineSeconds: 90,
    kvmProbeDeadlineSeconds: 15,
    healthIntervalSeconds: 10,
    agentCallTimeoutSeconds: 30,
    guestOciRuntime: 'auto',
    debug: false,
    consoleMaxBytes: 1024 * 1024,
    shareStdioMaxBytes: 1024 * 1024,
  };
}

const HYPERVISOR_NUMBERS = {
  vcpus: 'vcpus', memory_mb: 'memoryMb', tcg_tb_size_mb: 'tcgTbSizeMb', boot_deadline_seconds: 'bootDeadlineSeconds',
  kvm_probe_deadline_seconds: 'kvmProbeDeadlineSeconds', health_interval_seconds: 'healthIntervalSeconds', agent_call_timeout_seconds: 'agentCallTimeoutSeconds',
  console_max_bytes: 'consoleMaxBytes', share_stdio_max_bytes: 'shareStdioMaxBytes',
} as const;
const HYPERVISOR_STRINGS = { path: 'path', guest_dir: 'guestDir', kernel: 'kernel', initrd: 'initrd', image: 'image' } as const;
const HYPERVISOR_CHOICES = {
  machine: { field: 'machine', choices: ['microvm', 'q35'] },
  accelerator: { field: 'accelerator', choices: ['auto', 'kvm', 'tcg'] },
  guest_oci_runtime: { field: 'guestOciRuntime', choices: OCI_RUNTIME_CHOICES },
} as const;

/** `[hypervisor]` over `current`; a `guest_dir` resets the paths that default to files in it. */
export function applyHypervisorToml(current: HypervisorConfig, table: ConfigTable): HypervisorConfig {
  const known = [...Object.keys(HYPERVISOR_NUMBERS), ...Object.keys(HYPERVISOR_STRINGS), ...Object.keys(HYPERVISOR_CHOICES), 'kernel_params', 'debug'];
  rejectUnknownKeys(table, 'hypervisor', known);
  const guestDir = optionalString(table, 'guest_dir', 'hypervisor.');
  const hypervisor = guestDir ? defaultHypervisorConfig(path.resolve(guestDir)) : current;
  for (const [key, field] of Object.entries(HYPERVISOR_STRINGS)) hypervisor[field] = optionalString(table, key, 'hypervisor.') ?? hypervisor[field];
  for (const [key, field] of Object.entries(HYPERVISOR_NUMBERS)) {
    const value = table[key];
    if (value === undefined) continue;
    if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0) throw invalidArgument(`config: hypervisor.${key} must be a positive integer`);
    hypervisor[field] = value;
  }
  for (const [key, { field, choices }] of Object.entries(HYPERVISOR_CHOICES)) {
    const value = table[key];
    if (value === undefined) continue;
    if (!(choices as readonly unknown[]).includes(value)) throw invalidArgument(`config: hypervisor.${key} must be one of ${choices.join(', ')}`);
    (hypervisor as unknown as Record<string, unknown>)[field] = value;
  }
  if (table.kernel_params !== undefined) {
    if (typeof table.kernel_params !== 'string') throw invalidArgument('config: hypervisor.kernel_params must be a string');
    hypervisor.kernelParams = table.kernel_params;
  }
  if (table.debug !== undefined) {
    if (typeof table.debug !== 'boolean') throw invalidArgument('config: hypervisor.debug must be true or false');
    hypervisor.debug = table.debug;
  }
  if (hypervisor.memoryMb < 128) throw invalidArgument('config: hypervisor.memory_mb must be at least 128 (the guest runs Node)');
  return hypervisor;
}
