import { describe, expect, it } from 'vitest';
import { defaultHypervisorConfig } from '../config.js';
import { vmPaths } from '../vmPaths.js';
import { kernelCommandLine, qemuArgs } from './qemuCommand.js';

const paths = vmPaths('/var/lib/kts', 'pod-1');
const option = (args: string[], flag: string) => args.flatMap((arg, i) => (arg === flag ? [args[i + 1]!] : []));

describe('the QEMU command line of a microVM sandbox', () => {
  it('uses microvm with virtio-mmio devices, TCG with a bounded translation cache, and daemonizes', () => {
    const args = qemuArgs(defaultHypervisorConfig('/g'), 'tcg', paths, 'kts-pod-1');
    expect(option(args, '-machine')[0]).toMatch(/^microvm,/);
    expect(option(args, '-accel')).toEqual(['tcg,tb-size=64']);
    expect(option(args, '-device')).toEqual(['virtio-blk-device,drive=root', 'virtio-serial-device', 'virtserialport,chardev=agent,name=kts.agent', 'virtio-9p-device,fsdev=share,mount_tag=kts-share']);
    expect(args).toContain('-daemonize');
    expect(args).toContain('-no-reboot');
    expect(option(args, '-kernel')).toEqual(['/g/vmlinuz']);
    expect(option(args, '-pidfile')).toEqual([paths.pidFile]);
  });

  it('writes the console in append mode, so a copy-and-truncate rotation leaves no hole for QEMU to fill', () => {
    const args = qemuArgs(defaultHypervisorConfig('/g'), 'tcg', paths, 'x');
    expect(option(args, '-chardev')).toContain(`file,id=console,path=${paths.consoleLog},append=on`);
  });

  it('shares only the sandbox\'s own directory with the guest, never the host\'s root or /usr', () => {
    const fsdevs = option(qemuArgs(defaultHypervisorConfig('/g'), 'tcg', paths, 'x'), '-fsdev');
    const args = qemuArgs(defaultHypervisorConfig('/g'), 'tcg', paths, 'x');
    expect(fsdevs).toEqual([`local,id=share,path=${paths.shareDir},security_model=none,multidevs=remap`]);
    expect(option(args, '-drive')).toEqual(['file=/g/rootfs.img,if=none,id=root,format=raw,readonly=on']);
  });

  it('uses KVM with the host CPU when told to, and PCI devices on q35', () => {
    const args = qemuArgs({ ...defaultHypervisorConfig('/g'), machine: 'q35' }, 'kvm', paths, 'x');
    expect(option(args, '-accel')).toEqual(['kvm']);
    expect(option(args, '-cpu')).toEqual(['host']);
    expect(option(args, '-device')).toContain('virtio-serial-pci');
    expect(option(args, '-device')).toContain('virtio-blk-pci,drive=root');
  });

  it('tells the guest kernel to power off on panic and appends the configured parameters', () => {
    const line = kernelCommandLine({ ...defaultHypervisorConfig('/g'), kernelParams: 'foo=bar' }, 'tcg', { tscKhz: 2596122 });
    expect(line).toContain('tsc_early_khz=2596122');
    expect(kernelCommandLine(defaultHypervisorConfig('/g'), 'kvm', { tscKhz: 2596122 })).not.toContain('tsc_early_khz');
    expect(line).toContain('panic=-1');
    expect(line).toContain('console=ttyS0');
    expect(line.endsWith('foo=bar')).toBe(true);
  });

  it('asks for an agent without a JIT under TCG only (code V8 writes is translated again by QEMU), and the configured parameters come after it', () => {
    expect(kernelCommandLine({ ...defaultHypervisorConfig('/g'), kernelParams: 'foo=bar' }, 'tcg').split(' ').slice(-2)).toEqual(['kts.agent_jit=off', 'foo=bar']);
    expect(kernelCommandLine(defaultHypervisorConfig('/g'), 'kvm')).not.toContain('kts.agent_jit');
  });

  it('given a pod netns with interfaces, then each gets a tap netdev and a virtio-net NIC with the interface\'s MAC', () => {
    const nics = [{ id: 'net0', tap: 'tap0_kts', mac: '0a:58:0a:58:00:05' }, { id: 'net1', tap: 'tap1_kts', mac: '0a:58:0a:59:00:07' }];
    const args = qemuArgs(defaultHypervisorConfig('/g'), 'tcg', paths, 'x', {}, nics);
    expect(option(args, '-netdev')).toEqual(['tap,id=net0,ifname=tap0_kts,script=no,downscript=no', 'tap,id=net1,ifname=tap1_kts,script=no,downscript=no']);
    expect(option(args, '-device').filter((device) => device.startsWith('virtio-net'))).toEqual([
      'virtio-net-device,netdev=net0,mac=0a:58:0a:58:00:05', 'virtio-net-device,netdev=net1,mac=0a:58:0a:59:00:07',
    ]);
    expect(option(qemuArgs({ ...defaultHypervisorConfig('/g'), machine: 'q35' }, 'tcg', paths, 'x', {}, nics), '-device')).toContain('virtio-net-pci,netdev=net0,mac=0a:58:0a:58:00:05');
  });

  it('given no NICs, then the VM has no network device at all', () => {
    const args = qemuArgs(defaultHypervisorConfig('/g'), 'tcg', paths, 'x');
    expect(option(args, '-netdev')).toEqual([]);
    expect(args.join(' ')).not.toContain('virtio-net');
  });
});
