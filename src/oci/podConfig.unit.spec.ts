import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isKtsError } from '../core/errors.js';
import { parseContainerConfig, parsePodSandboxConfig, readContainerConfigFile, readPodSandboxConfigFile } from './podConfig.js';

const examplesDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../examples');

function invalid(parse: () => unknown): string {
  try {
    parse();
  } catch (error) {
    expect(isKtsError(error, 'invalid_argument')).toBe(true);
    return (error as Error).message;
  }
  throw new Error('expected invalid_argument');
}

describe('parsePodSandboxConfig', () => {
  it('reads a crictl pod config into camelCase', () => {
    const pod = parsePodSandboxConfig(
      [
        'metadata: { name: web, namespace: prod, uid: u-1, attempt: 2 }',
        'hostname: web-0',
        'log_directory: /var/log/pods/web',
        'labels: { app: web }',
        'annotations: { note: "x" }',
        'linux:',
        '  cgroup_parent: /kubepods',
        '  security_context: { namespace_options: { network: 2 } }',
      ].join('\n'),
      'pod.yaml',
    );
    expect(pod).toEqual({
      metadata: { name: 'web', namespace: 'prod', uid: 'u-1', attempt: 2 },
      hostname: 'web-0',
      logDirectory: '/var/log/pods/web',
      labels: { app: 'web' },
      annotations: { note: 'x' },
      linux: { cgroupParent: '/kubepods', privileged: false, namespaceOptions: { network: 2, pid: 0, ipc: 0 }, sysctls: {} },
    });
  });

  it('defaults namespace, uid, attempt and hostname; accepts JSON', () => {
    const pod = parsePodSandboxConfig('{"metadata": {"name": "solo"}}', 'pod.json');
    expect(pod.metadata).toMatchObject({ name: 'solo', namespace: 'default', attempt: 0 });
    expect(pod.metadata.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(parsePodSandboxConfig('metadata: {name: solo}').metadata.uid).not.toBe(pod.metadata.uid);
    expect(pod.hostname).toBe('solo');
    expect(pod.labels).toEqual({});
  });

  it.each([
    ['hostname: x', 'pod.yaml: metadata is required'],
    ['metadata: {}', 'pod.yaml: metadata.name must be a non-empty string'],
    ['metadata: { name: "" }', 'pod.yaml: metadata.name must be a non-empty string'],
    ['metadata: { name: 7 }', 'pod.yaml: metadata.name must be a string (got number 7)'],
    ['metadata: { name: a, attempt: -1 }', 'pod.yaml: metadata.attempt must be a non-negative integer (got number -1)'],
    ['metadata: { name: a }\nlabels: { app: 3 }', 'pod.yaml: labels.app must be a string (got number 3)'],
    ['metadata: { name: a }\nlabels: [a]', 'pod.yaml: labels must be a mapping'],
    ['metadata: { name: a }\nhostname: "bad host"', 'pod.yaml: hostname "bad host" is not a valid hostname'],
    ['metadata: { name: a }\nlinux: { security_context: { namespace_options: { network: 9 } } }', 'pod.yaml: linux.security_context.namespace_options.network must be 0'],
    ['- a\n- b', 'pod.yaml: must be a mapping (YAML) or an object (JSON)'],
    ['metadata: [', 'pod.yaml: not valid YAML or JSON'],
  ])('rejects %j', (text, message) => {
    expect(invalid(() => parsePodSandboxConfig(text, 'pod.yaml'))).toContain(message);
  });
});

describe('parseContainerConfig', () => {
  const minimal = 'metadata: { name: app }\nimage: { image: busybox }';

  it('reads a crictl container config into camelCase', () => {
    const container = parseContainerConfig(
      [
        minimal,
        'command: [sh, -c]',
        'args: ["echo hi"]',
        'envs: [{ key: A, value: "1" }, { key: EMPTY }]',
        'working_dir: /srv',
        'labels: { tier: x }',
        'annotations: { a: b }',
        'log_path: app.log',
        'mounts: [{ container_path: /data, host_path: /tmp/data, readonly: true }]',
        'linux: { resources: { memory_limit_in_bytes: 67108864, cpu_shares: 0 } }',
        'tty: false',
      ].join('\n'),
      'container.yaml',
    );
    expect(container).toEqual({
      metadata: { name: 'app', attempt: 0 },
      image: { image: 'busybox' },
      command: ['sh', '-c'],
      args: ['echo hi'],
      envs: [{ key: 'A', value: '1' }, { key: 'EMPTY', value: '' }],
      workingDir: '/srv',
      labels: { tier: 'x' },
      annotations: { a: 'b' },
      logPath: 'app.log',
      mounts: [{ containerPath: '/data', hostPath: '/tmp/data', readonly: true }],
      linux: { resources: { memoryLimitInBytes: 67108864 } },
      stdin: false,
    });
  });

  it('defaults lists and maps to empty', () => {
    expect(parseContainerConfig(minimal)).toMatchObject({ command: [], args: [], envs: [], labels: {}, annotations: {}, mounts: [] });
  });

  it.each([
    ['image: { image: busybox }', 'container.yaml: metadata is required'],
    ['metadata: { name: "" }\nimage: { image: busybox }', 'container.yaml: metadata.name must be a non-empty string'],
    ['metadata: { name: a }', 'container.yaml: image is required'],
    ['metadata: { name: a }\nimage: { image: "" }', 'container.yaml: image.image must be a non-empty string'],
    [`${minimal}\ncommand: sh`, 'container.yaml: command must be a list of strings'],
    [`${minimal}\nargs: [1]`, 'container.yaml: args[0] must be a string (got number 1)'],
    [`${minimal}\nenvs: [{ value: x }]`, 'container.yaml: envs[0].key must be a non-empty string'],
    [`${minimal}\nenvs: [{ key: A, value: 1 }]`, 'container.yaml: envs[0].value must be a string (got number 1)'],
    [`${minimal}\nworking_dir: relative`, 'container.yaml: working_dir must be an absolute path (got "relative")'],
    [`${minimal}\nmounts: [{ container_path: /x }]`, 'container.yaml: mounts[0].host_path must be an absolute path'],
    [`${minimal}\ntty: true`, 'container.yaml: tty true is not supported'],
    [`${minimal}\ntty: "yes"`, 'container.yaml: tty must be true or false'],
  ])('rejects %j', (text, message) => {
    expect(invalid(() => parseContainerConfig(text, 'container.yaml'))).toContain(message);
  });
});

describe('the examples', () => {
  it('parse as the pod and container `kts run examples/pod.yaml examples/busybox.yaml` starts', async () => {
    const pod = await readPodSandboxConfigFile(path.join(examplesDir, 'pod.yaml'));
    const container = await readContainerConfigFile(path.join(examplesDir, 'busybox.yaml'));
    expect(pod.metadata.name).toBe('busybox-pod');
    expect(container.image.image).toBe('busybox:latest');
    expect(container.command).toEqual(['sh', '-c']);
    expect(container.args[0]).toContain('sleep');
  });

  it('a missing file is not_found and names the file', async () => {
    await expect(readPodSandboxConfigFile('/nonexistent/pod.yaml')).rejects.toThrow('config file /nonexistent/pod.yaml does not exist');
  });
});
