// Hand-made OCI bundles, as containerd would prepare them: a busybox lower dir and a config.json
// that joins the sandbox's namespaces.
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

export function busyboxRootfs(dir: string): string {
  const rootfs = path.join(dir, 'lower');
  mkdirSync(path.join(rootfs, 'bin'), { recursive: true });
  for (const d of ['proc', 'dev', 'sys', 'tmp', 'etc']) mkdirSync(path.join(rootfs, d), { recursive: true });
  execFileSync('cp', ['/bin/busybox', path.join(rootfs, 'bin/busybox')]);
  for (const applet of ['sh', 'echo', 'sleep', 'cat']) execFileSync('ln', ['-sf', 'busybox', path.join(rootfs, 'bin', applet)]);
  return rootfs;
}

export function ociSpec(sandboxId: string, holderPid: number, args: string[]) {
  return {
    ociVersion: '1.0.2',
    process: { terminal: false, user: { uid: 0, gid: 0 }, args, env: ['PATH=/bin'], cwd: '/', noNewPrivileges: true },
    root: { path: 'rootfs' },
    hostname: 'ctd-pod',
    mounts: [{ destination: '/proc', type: 'proc', source: 'proc' }, { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'mode=755'] }],
    annotations: { 'io.kubernetes.cri.sandbox-id': sandboxId, 'io.kubernetes.cri.container-name': 'printer' },
    linux: {
      namespaces: [
        { type: 'pid', path: `/proc/${holderPid}/ns/pid` }, { type: 'network', path: `/proc/${holderPid}/ns/net` },
        { type: 'ipc', path: `/proc/${holderPid}/ns/ipc` }, { type: 'uts', path: `/proc/${holderPid}/ns/uts` }, { type: 'mount' },
      ],
      cgroupsPath: `/kts-it/${sandboxId}/printer`,
    },
  };
}
