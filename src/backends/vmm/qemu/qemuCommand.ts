import type { HypervisorConfig } from '../config.js';
import type { VmPaths } from '../vmPaths.js';

import type { Accelerator, VmNic } from '../hypervisor.js';
export type { Accelerator };

/** The virtio-serial port the guest agent serves on, found in the guest by this name. */
export const AGENT_PORT_NAME = 'kts.agent';
/** The 9p mount tag of the sandbox's share. */
export const SHARE_MOUNT_TAG = 'kts-share';

/** What the host knows that the guest kernel should be told. */
export interface HostFacts {
  /** The host TSC rate: under TCG the guest's TSC runs at it, and PIT calibration hangs 1 boot in 3. */
  tscKhz?: number;
}

/**
 * Kernel parameters kts needs: console on the first serial port, power off (not hang) on panic,
 * no crypto self-tests (0.2 s of boot), the TSC rate under TCG, the guest's OCI runtime unless `auto`, the
 * agent's node without a JIT under TCG, then the configured ones.
 *
 * kts.agent_jit=off: QEMU's TCG translates each block of guest code once and must translate again any
 * code the guest writes, so V8 compiling JavaScript to machine code (Sparkplug, Turbofan, irregexp) is
 * paid twice under emulation. The agent runs short requests, and interpreted they are about 3× faster there
 * (issue 18: a container run 2,121 → 658 ms, an exec 894 → 191 ms, boot 0.7 s shorter). Under KVM the
 * JIT costs nothing extra and stays on.
 */
export function kernelCommandLine(config: HypervisorConfig, accelerator: Accelerator, host: HostFacts = {}): string {
  const verbosity = config.debug ? 'loglevel=7 kts.debug=1' : 'quiet loglevel=3';
  const tsc = accelerator === 'tcg' && host.tscKhz ? `tsc_early_khz=${host.tscKhz}` : '';
  const ociRuntime = config.guestOciRuntime === 'auto' ? '' : `kts.oci_runtime=${config.guestOciRuntime}`;
  const agentJit = accelerator === 'tcg' ? 'kts.agent_jit=off' : '';
  return ['console=ttyS0', 'panic=-1', verbosity, 'cryptomgr.notests', tsc, ociRuntime, agentJit, config.kernelParams].filter(Boolean).join(' ');
}

/**
 * The whole QEMU command line of one microVM sandbox, as an argument array. QEMU daemonizes
 * after machine init, so a bad kernel path or option fails the launch with an exit code, and the
 * VM outlives the daemon. The guest sees only its own kernel/initrd and the sandbox's share.
 */
export function qemuArgs(config: HypervisorConfig, accelerator: Accelerator, paths: VmPaths, name: string, host: HostFacts = {}, nics: VmNic[] = []): string[] {
  const machine = config.machine === 'microvm' ? 'microvm,x-option-roms=off,rtc=on,pit=on,pic=on,isa-serial=on' : 'q35';
  // microvm has virtio-mmio only; q35 needs the PCI variants of the same devices.
  const device = (type: string) => (config.machine === 'microvm' ? `${type}-device` : `${type}-pci`);
  return [
    '-name', name,
    '-machine', machine,
    '-accel', accelerator === 'kvm' ? 'kvm' : `tcg,tb-size=${config.tcgTbSizeMb}`,
    '-cpu', accelerator === 'kvm' ? 'host' : 'max',
    '-smp', String(config.vcpus),
    '-m', `${config.memoryMb}M`,
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-kernel', config.kernel,
    '-initrd', config.initrd,
    '-append', kernelCommandLine(config, accelerator, host),
    ...(config.image ? ['-drive', `file=${config.image},if=none,id=root,format=raw,readonly=on`, '-device', `${device('virtio-blk')},drive=root`] : []),
    // Appending: the daemon rotates the console by copy-and-truncate, and QEMU must carry on at the new end.
    '-chardev', `file,id=console,path=${paths.consoleLog},append=on`,
    '-serial', 'chardev:console',
    '-qmp', `unix:${paths.qmpSocket},server=on,wait=off`,
    '-chardev', `socket,id=agent,path=${paths.agentSocket},server=on,wait=off`,
    '-device', device('virtio-serial'),
    '-device', `virtserialport,chardev=agent,name=${AGENT_PORT_NAME}`,
    '-fsdev', `local,id=share,path=${paths.shareDir},security_model=none,multidevs=remap`,
    '-device', `${device('virtio-9p')},fsdev=share,mount_tag=${SHARE_MOUNT_TAG}`,
    // QEMU opens each tap by name, so it must run in the netns that holds them (see QemuHypervisor.launch).
    ...nics.flatMap((nic) => [
      '-netdev', `tap,id=${nic.id},ifname=${nic.tap},script=no,downscript=no`,
      '-device', `${device('virtio-net')},netdev=${nic.id},mac=${nic.mac}`,
    ]),
    '-pidfile', paths.pidFile,
    '-daemonize',
  ];
}
