import { describe, expect, it } from 'vitest';
import { isKtsError } from '../core/errors.js';
import type { ImageConfig } from './imageConfig.js';
import {
  buildContainerSpec,
  containerArgs,
  DEFAULT_CAPABILITIES,
  DEFAULT_PATH,
  mergeEnv,
  overlayRootfsMount,
  validateOciSpec,
  type BuildContainerSpecInput,
} from './containerSpec.js';
import { parseContainerConfig } from './podConfig.js';

const image: ImageConfig = { entrypoint: ['/entry'], cmd: ['serve', '--port=80'], env: ['PATH=/bin', 'MODE=image'], workingDir: '/app' };

function input(containerYaml: string, overrides: Partial<BuildContainerSpecInput> = {}): BuildContainerSpecInput {
  return {
    containerId: 'c1',
    sandboxId: 'sb1',
    container: parseContainerConfig(`metadata: { name: web }\nimage: { image: busybox }\n${containerYaml}`, 'container.yaml'),
    image,
    holderPid: 4242,
    hostname: 'pod-host',
    cgroupsPath: '/kts/sb1/c1',
    ...overrides,
  };
}

describe('containerArgs (Kubernetes command/args semantics)', () => {
  const metadata = { name: 'web' };
  it.each([
    [[], [], ['/entry', 'serve', '--port=80']],
    [['/bin/sh'], [], ['/bin/sh']],
    [[], ['--debug'], ['/entry', '--debug']],
    [['/bin/sh', '-c'], ['echo hi'], ['/bin/sh', '-c', 'echo hi']],
  ])('command %j args %j → %j', (command, args, expected) => {
    expect(containerArgs({ metadata, command, args }, image)).toEqual(expected);
  });

  it('uses the image Cmd alone when there is no Entrypoint', () => {
    expect(containerArgs({ metadata, command: [], args: [] }, { entrypoint: [], cmd: ['sh'] })).toEqual(['sh']);
  });

  it('refuses a container with nothing to run', () => {
    expect(() => containerArgs({ metadata, command: [], args: [] }, { entrypoint: [], cmd: [] })).toThrow(/container "web": nothing to run/);
  });
});

describe('mergeEnv', () => {
  it('lets the container replace image variables in place and appends new ones', () => {
    expect(mergeEnv(['PATH=/bin', 'MODE=image'], [{ key: 'MODE', value: 'pod' }, { key: 'X', value: '' }])).toEqual(['PATH=/bin', 'MODE=pod', 'X=']);
  });
  it('adds the default PATH when the image has none', () => {
    expect(mergeEnv([], [{ key: 'A', value: 'b' }])).toEqual([DEFAULT_PATH, 'A=b']);
  });
});

describe('buildContainerSpec', () => {
  it('joins the holder namespaces and creates its own mount namespace', () => {
    const spec = buildContainerSpec(input(''));
    expect(spec.linux?.namespaces).toEqual([
      { type: 'pid', path: '/proc/4242/ns/pid' },
      { type: 'network', path: '/proc/4242/ns/net' },
      { type: 'ipc', path: '/proc/4242/ns/ipc' },
      { type: 'uts', path: '/proc/4242/ns/uts' },
      { type: 'mount' },
    ]);
    expect(spec.linux?.cgroupsPath).toBe('/kts/sb1/c1');
  });

  it('builds the process from the image and the container', () => {
    const spec = buildContainerSpec(input('args: ["--debug"]\nenvs: [{ key: MODE, value: pod }]\nworking_dir: /srv'));
    expect(spec.ociVersion).toBe('1.0.2');
    expect(spec.process).toMatchObject({
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: ['/entry', '--debug'],
      env: ['PATH=/bin', 'MODE=pod'],
      cwd: '/srv',
      noNewPrivileges: true,
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
    });
    expect(spec.process.capabilities?.bounding).toEqual(DEFAULT_CAPABILITIES);
    expect(spec.process.capabilities?.effective).toEqual(DEFAULT_CAPABILITIES);
    expect(spec.process.capabilities?.permitted).toEqual(DEFAULT_CAPABILITIES);
    expect(spec.root).toEqual({ path: 'rootfs', readonly: false });
    expect(spec.hostname).toBe('pod-host');
  });

  it('falls back to the image working directory, then /', () => {
    expect(buildContainerSpec(input('')).process.cwd).toBe('/app');
    expect(buildContainerSpec(input('', { image: { ...image, workingDir: '' } })).process.cwd).toBe('/');
  });

  it('mounts the usual pseudo filesystems and the container binds; masks the usual paths', () => {
    const spec = buildContainerSpec(input('mounts: [{ container_path: /data, host_path: /tmp/d, readonly: true }]'));
    expect(spec.mounts?.map((mount) => [mount.destination, mount.type])).toEqual([
      ['/proc', 'proc'], ['/dev', 'tmpfs'], ['/dev/pts', 'devpts'], ['/dev/shm', 'tmpfs'], ['/dev/mqueue', 'mqueue'], ['/sys', 'sysfs'], ['/data', 'bind'],
    ]);
    expect(spec.mounts?.find((mount) => mount.destination === '/sys')?.options).toContain('ro');
    expect(spec.mounts?.at(-1)).toEqual({ destination: '/data', type: 'bind', source: '/tmp/d', options: ['rbind', 'rprivate', 'ro'] });
    expect(spec.linux?.maskedPaths).toContain('/proc/kcore');
    expect(spec.linux?.readonlyPaths).toContain('/proc/sys');
    expect(spec.linux?.resources?.devices?.[0]).toEqual({ allow: false, access: 'rwm' });
    expect(spec.linux?.resources?.devices).toContainEqual({ allow: true, type: 'c', major: 1, minor: 3, access: 'rwm' });
  });

  it('carries resources and annotations', () => {
    const spec = buildContainerSpec(input('annotations: { mine: yes }\nlinux: { resources: { memory_limit_in_bytes: 1048576, cpu_quota: 50000, cpu_period: 100000 } }'));
    expect(spec.linux?.resources).toMatchObject({ memory: { limit: 1048576 }, cpu: { quota: 50000, period: 100000 } });
    expect(spec.annotations).toEqual({
      mine: 'yes',
      'io.kubernetes.cri.sandbox-id': 'sb1',
      'io.kubernetes.cri.container-name': 'web',
      'io.kubernetes.cri.container-type': 'container',
    });
  });

  it('honours a numeric image user and refuses a named one', () => {
    expect(buildContainerSpec(input('', { image: { ...image, user: '1000:100' } })).process.user).toEqual({ uid: 1000, gid: 100 });
    expect(() => buildContainerSpec(input('', { image: { ...image, user: 'nginx' } }))).toThrow(/image user "nginx" is not supported/);
  });

  it('refuses a holder pid that is not a pid', () => {
    expect(() => buildContainerSpec(input('', { holderPid: 0 }))).toThrow(/holder pid 0/);
  });

  it('produces a spec that validateOciSpec accepts', () => {
    const spec = buildContainerSpec(input(''));
    expect(validateOciSpec(JSON.parse(JSON.stringify(spec)))).toEqual(spec);
  });
});

describe('validateOciSpec', () => {
  const valid = () => ({ ociVersion: '1.0.2', process: { args: ['sh'], cwd: '/', user: { uid: 0, gid: 0 } }, root: { path: 'rootfs' } });

  it.each([
    [null, 'config.json: must be a JSON object'],
    [{ ...valid(), ociVersion: 1 }, 'config.json: ociVersion must be a non-empty string'],
    [{ ...valid(), process: undefined }, 'config.json: process must be an object'],
    [{ ...valid(), process: { ...valid().process, args: [] } }, 'config.json: process.args must be a non-empty array of strings'],
    [{ ...valid(), process: { ...valid().process, args: ['sh', 1] } }, 'config.json: process.args must be a non-empty array of strings'],
    [{ ...valid(), process: { ...valid().process, cwd: 'tmp' } }, 'config.json: process.cwd must be an absolute path'],
    [{ ...valid(), process: { ...valid().process, env: 'A=1' } }, 'config.json: process.env must be an array of strings'],
    [{ ...valid(), process: { ...valid().process, user: { uid: -1, gid: 0 } } }, 'config.json: process.user must have numeric uid and gid'],
    [{ ...valid(), root: {} }, 'config.json: root.path must be a non-empty string'],
    [{ ...valid(), mounts: [{ destination: 'proc' }] }, 'config.json: mounts[0].destination must be an absolute path'],
    [{ ...valid(), annotations: { a: 1 } }, 'config.json: annotations must map strings to strings'],
  ])('rejects %j', (json, message) => {
    let error: unknown;
    try {
      validateOciSpec(json);
    } catch (caught) {
      error = caught;
    }
    expect(isKtsError(error, 'invalid_argument')).toBe(true);
    expect((error as Error).message).toBe(message);
  });

  it('accepts a minimal spec and keeps unknown fields', () => {
    const spec = { ...valid(), linux: { seccomp: { defaultAction: 'SCMP_ACT_ALLOW' } }, vendor: 1 };
    expect(validateOciSpec(spec)).toBe(spec);
  });
});

describe('overlayRootfsMount', () => {
  it('builds the overlay mount of the rootfs', () => {
    expect(overlayRootfsMount('/cache/x/rootfs', '/c/upper', '/c/work')).toEqual({
      type: 'overlay',
      source: 'overlay',
      options: ['lowerdir=/cache/x/rootfs', 'upperdir=/c/upper', 'workdir=/c/work'],
    });
    expect(overlayRootfsMount(['/a', '/b'], '/u', '/w').options[0]).toBe('lowerdir=/a:/b');
  });

  it('refuses paths the kernel would misparse', () => {
    expect(() => overlayRootfsMount('/a,b', '/u', '/w')).toThrow(/must not contain/);
    expect(() => overlayRootfsMount('rel', '/u', '/w')).toThrow(/absolute/);
  });
});
