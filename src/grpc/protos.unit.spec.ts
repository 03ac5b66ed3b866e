import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { isKtsError } from '../core/errors.js';
import {
  CGROUP_V1_METRICS_TYPE_URL,
  POD_SANDBOX_CONFIG_TYPE_URL,
  PROTO_DIR,
  decodeCgroupV1Metrics,
  decodePodSandboxConfig,
  encodeCgroupV1Metrics,
  encodePodSandboxConfig,
  loadGrpcDefinitions,
  protoTypes,
} from './protos.js';

const TASK_METHODS = [
  'State', 'Create', 'Start', 'Delete', 'Pids', 'Pause', 'Resume', 'Checkpoint', 'Kill',
  'Exec', 'ResizePty', 'CloseIO', 'Update', 'Wait', 'Stats', 'Connect', 'Shutdown',
];
const CONTROLLER_METHODS = ['Create', 'Start', 'Platform', 'Stop', 'Wait', 'Status', 'Shutdown', 'Metrics', 'Update'];

/** field name → number of a message, as protobufjs sees it (names are camelCased by the loader). */
function fieldNumbers(typeName: string): Record<string, number> {
  const type = protoTypes().lookupType(typeName);
  return Object.fromEntries(Object.values(type.fields).map((field) => [field.name, field.id]));
}

function expectInvalidArgument(run: () => unknown, messagePart: string): void {
  try {
    run();
  } catch (error) {
    expect(isKtsError(error, 'invalid_argument')).toBe(true);
    expect((error as Error).message).toContain(messagePart);
    return;
  }
  throw new Error('expected an invalid_argument error');
}

describe('proto loading', () => {
  it('finds the repo proto/ dir from this module', () => {
    expect(path.isAbsolute(PROTO_DIR)).toBe(true);
    expect(existsSync(path.join(PROTO_DIR, 'containerd/services/sandbox/v1/sandbox.proto'))).toBe(true);
  });

  it('serves every Controller method at containerd.services.sandbox.v1 paths', () => {
    const { sandboxController } = loadGrpcDefinitions();
    expect(Object.keys(sandboxController).sort()).toEqual([...CONTROLLER_METHODS].sort());
    for (const method of CONTROLLER_METHODS) {
      expect(sandboxController[method]?.path).toBe(`/containerd.services.sandbox.v1.Controller/${method}`);
    }
  });

  it('serves every Task method under both v3 and v2 paths with the same wire messages', () => {
    const { taskV3, taskV2 } = loadGrpcDefinitions();
    expect(Object.keys(taskV3).sort()).toEqual([...TASK_METHODS].sort());
    expect(Object.keys(taskV2).sort()).toEqual([...TASK_METHODS].sort());
    for (const method of TASK_METHODS) {
      expect(taskV3[method]?.path).toBe(`/containerd.task.v3.Task/${method}`);
      expect(taskV2[method]?.path).toBe(`/containerd.task.v2.Task/${method}`);
      expect(taskV2[method]?.requestDeserialize).toBe(taskV3[method]?.requestDeserialize);
      expect(taskV2[method]?.responseSerialize).toBe(taskV3[method]?.responseSerialize);
    }
  });

  it('loads the kts admin service', () => {
    const { admin } = loadGrpcDefinitions();
    const paths = Object.values(admin).map((definition) => definition.path);
    expect(paths.length).toBeGreaterThan(0);
    for (const methodPath of paths) expect(methodPath.startsWith('/kts.admin.v1.Admin/')).toBe(true);
  });

  it('decodes a ControllerStartResponse sent by the grpc serializer', () => {
    const start = loadGrpcDefinitions().sandboxController.Start!;
    const bytes = start.responseSerialize({ sandboxId: 's1', pid: 42, address: 'unix:///run/kts.sock', version: 3 });
    const decoded = protoTypes().lookupType('containerd.services.sandbox.v1.ControllerStartResponse').decode(bytes);
    expect(decoded.toJSON()).toEqual({ sandboxId: 's1', pid: 42, address: 'unix:///run/kts.sock', version: 3 });
  });
});

describe('field numbers match containerd 2.x and CRI', () => {
  it.each([
    ['containerd.services.sandbox.v1.ControllerCreateRequest', { sandboxId: 1, rootfs: 2, options: 3, netnsPath: 4, annotations: 5, sandbox: 6, sandboxer: 10 }],
    ['containerd.services.sandbox.v1.ControllerStartResponse', { sandboxId: 1, pid: 2, createdAt: 3, labels: 4, address: 5, version: 6, spec: 7 }],
    ['containerd.services.sandbox.v1.ControllerStatusResponse', { sandboxId: 1, pid: 2, state: 3, info: 4, createdAt: 5, exitedAt: 6, extra: 7, address: 8, version: 9 }],
    ['containerd.services.sandbox.v1.ControllerWaitResponse', { exitStatus: 1, exitedAt: 2 }],
    ['containerd.services.sandbox.v1.ControllerUpdateRequest', { sandboxId: 1, sandboxer: 2, sandbox: 3, fields: 4 }],
    ['containerd.services.sandbox.v1.ControllerMetricsResponse', { metrics: 1 }],
    ['containerd.types.Sandbox', { sandboxId: 1, runtime: 2, spec: 3, labels: 4, createdAt: 5, updatedAt: 6, extensions: 7, sandboxer: 10 }],
    ['containerd.types.Metric', { timestamp: 1, id: 2, data: 3 }],
    ['containerd.types.Platform', { os: 1, architecture: 2, variant: 3, osVersion: 4 }],
    ['containerd.task.v3.CreateTaskRequest', { id: 1, bundle: 2, rootfs: 3, terminal: 4, stdin: 5, stdout: 6, stderr: 7, checkpoint: 8, parentCheckpoint: 9, options: 10 }],
    ['containerd.task.v3.StateResponse', { id: 1, bundle: 2, pid: 3, status: 4, stdin: 5, stdout: 6, stderr: 7, terminal: 8, exitStatus: 9, exitedAt: 10, execId: 11 }],
    ['containerd.task.v3.WaitResponse', { exitStatus: 1, exitedAt: 2 }],
    ['containerd.task.v3.DeleteResponse', { pid: 1, exitStatus: 2, exitedAt: 3 }],
    ['containerd.task.v3.ConnectResponse', { shimPid: 1, taskPid: 2, version: 3 }],
    ['containerd.task.v3.KillRequest', { id: 1, execId: 2, signal: 3, all: 4 }],
    ['runtime.v1.PodSandboxConfig', { metadata: 1, hostname: 2, logDirectory: 3, dnsConfig: 4, portMappings: 5, labels: 6, annotations: 7, linux: 8, windows: 9 }],
    ['runtime.v1.PodSandboxMetadata', { name: 1, uid: 2, namespace: 3, attempt: 4 }],
    ['runtime.v1.LinuxPodSandboxConfig', { cgroupParent: 1, securityContext: 2, sysctls: 3, overhead: 4, resources: 5 }],
    ['io.containerd.cgroups.v1.Metrics', { hugetlb: 1, pids: 2, cpu: 3, memory: 4, blkio: 5, rdma: 6, network: 7, cgroupStats: 8, memoryOomControl: 9 }],
    ['io.containerd.cgroups.v1.CPUUsage', { total: 1, kernel: 2, user: 3, perCpu: 4 }],
    ['io.containerd.cgroups.v1.MemoryEntry', { limit: 1, usage: 2, max: 3, failcnt: 4 }],
    ['io.containerd.cgroups.v2.Metrics', { pids: 1, cpu: 2, memory: 4, rdma: 5, io: 6, hugetlb: 7, memoryEvents: 8, network: 9 }],
  ] as const)('%s', (typeName, expected) => {
    expect(fieldNumbers(typeName)).toEqual(expected);
  });

  it('keeps containerd.v1.types.Status values', () => {
    expect(protoTypes().lookupEnum('containerd.v1.types.Status').values).toEqual({
      UNKNOWN: 0, CREATED: 1, RUNNING: 2, STOPPED: 3, PAUSED: 4, PAUSING: 5,
    });
  });

  it('puts MemoryStat.usage at 33 and CPUStat.usage at 1 in cgroups v1', () => {
    expect(fieldNumbers('io.containerd.cgroups.v1.MemoryStat')).toMatchObject({ cache: 1, usage: 33, swap: 34, kernel: 35, kernelTcp: 36 });
    expect(fieldNumbers('io.containerd.cgroups.v1.CPUStat')).toEqual({ usage: 1, throttling: 2 });
    expect(fieldNumbers('io.containerd.cgroups.v1.PidsStat')).toEqual({ current: 1, limit: 2 });
  });
});

describe('PodSandboxConfig', () => {
  const config = {
    metadata: { name: 'nginx', uid: 'uid-1', namespace: 'default', attempt: 2 },
    hostname: 'nginx-host',
    logDirectory: '/var/log/pods/default_nginx_uid-1',
    labels: { app: 'nginx' },
    annotations: { 'io.kubernetes.pod.name': 'nginx' },
    linux: { cgroupParent: '/kubepods/besteffort/poduid-1' },
  };

  it('round-trips the fields kts uses', () => {
    const any = encodePodSandboxConfig(config);
    expect(any.type_url).toBe(POD_SANDBOX_CONFIG_TYPE_URL);
    expect(decodePodSandboxConfig(any)).toEqual({ ...config, podLinux: {} });
  });

  it('reads host namespaces, sysctls and dns_config as the pod\'s Linux options', () => {
    const any = encodePodSandboxConfig({
      ...config,
      linux: { cgroupParent: '/c', sysctls: { 'kernel.shm_rmid_forced': '1' }, securityContext: { namespaceOptions: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } },
      dnsConfig: { servers: ['10.10.10.10'], searches: ['svc.local'], options: ['ndots:5'] },
    });
    expect(decodePodSandboxConfig(any).podLinux).toEqual({
      hostNetwork: true,
      sysctls: { 'kernel.shm_rmid_forced': '1' },
      dns: { servers: ['10.10.10.10'], searches: ['svc.local'], options: ['ndots:5'] },
    });
  });

  it('accepts containerd typeurl form without a URL prefix', () => {
    const { value } = encodePodSandboxConfig(config);
    expect(decodePodSandboxConfig({ type_url: 'runtime.v1.PodSandboxConfig', value }).hostname).toBe('nginx-host');
  });

  it('fills absent fields with empty values', () => {
    expect(decodePodSandboxConfig(encodePodSandboxConfig({}))).toEqual({
      metadata: { name: '', uid: '', namespace: '', attempt: 0 },
      hostname: '',
      logDirectory: '',
      labels: {},
      annotations: {},
      linux: { cgroupParent: '' },
      podLinux: {},
    });
  });

  it('decodes bytes written with upstream field numbers', () => {
    // metadata(1){name(1)="a"}, hostname(2)="h", log_directory(3)="/l", linux(8){cgroup_parent(1)="/c"}
    const value = Buffer.from([0x0a, 0x03, 0x0a, 0x01, 0x61, 0x12, 0x01, 0x68, 0x1a, 0x02, 0x2f, 0x6c, 0x42, 0x04, 0x0a, 0x02, 0x2f, 0x63]);
    const decoded = decodePodSandboxConfig({ type_url: POD_SANDBOX_CONFIG_TYPE_URL, value });
    expect(decoded).toMatchObject({ metadata: { name: 'a' }, hostname: 'h', logDirectory: '/l', linux: { cgroupParent: '/c' } });
  });

  it('rejects a wrong type_url, a missing Any and garbage bytes', () => {
    const { value } = encodePodSandboxConfig(config);
    expectInvalidArgument(() => decodePodSandboxConfig({ type_url: 'type.googleapis.com/runtime.v1.ContainerConfig', value }), 'runtime.v1.ContainerConfig');
    expectInvalidArgument(() => decodePodSandboxConfig({ type_url: 'xruntime.v1.PodSandboxConfig', value }), 'is not');
    expectInvalidArgument(() => decodePodSandboxConfig(undefined), 'missing');
    expectInvalidArgument(() => decodePodSandboxConfig({ type_url: POD_SANDBOX_CONFIG_TYPE_URL, value: Buffer.from([0x0a, 0xff]) }), 'cannot decode');
  });
});

describe('cgroup v1 metrics', () => {
  const stats = {
    cpuUsageNanos: 12_345_678_901,
    cpuUserNanos: 10_000_000_000,
    cpuKernelNanos: 2_345_678_901,
    memoryUsageBytes: 64 * 1024 * 1024,
    memoryLimitBytes: 2 ** 40,
    pidsCurrent: 3,
    pidsLimit: 1024,
    cpuPeriods: 50,
    cpuThrottledPeriods: 7,
    cpuThrottledNanos: 700_000_000,
    memoryKernelBytes: 4096,
    memorySwapBytes: 8192,
    oomKills: 1,
  };

  it('round-trips through io.containerd.cgroups.v1.Metrics', () => {
    const any = encodeCgroupV1Metrics(stats);
    expect(any.type_url).toBe('io.containerd.cgroups.v1.Metrics');
    expect(any.type_url).toBe(CGROUP_V1_METRICS_TYPE_URL);
    expect(decodeCgroupV1Metrics(any)).toEqual(stats);
  });

  it('places values where containerd reads them', () => {
    const type = protoTypes().lookupType('io.containerd.cgroups.v1.Metrics');
    const decoded = type.toObject(type.decode(encodeCgroupV1Metrics(stats).value), { longs: Number });
    expect(decoded).toEqual({
      pids: { current: 3, limit: 1024 },
      cpu: { usage: { total: stats.cpuUsageNanos, user: stats.cpuUserNanos, kernel: stats.cpuKernelNanos }, throttling: { periods: 50, throttledPeriods: 7, throttledTime: 700_000_000 } },
      memory: { usage: { usage: stats.memoryUsageBytes, limit: stats.memoryLimitBytes }, kernel: { usage: 4096 }, swap: { usage: 8192 } },
      memoryOomControl: { oomKill: 1 },
    });
  });

  it('sends the throttling, kernel, swap and OOM entries (containerd\'s CRI lists a metric only when its entry is present) even when the backend cannot tell', () => {
    const type = protoTypes().lookupType('io.containerd.cgroups.v1.Metrics');
    const { cpuPeriods, cpuThrottledPeriods, cpuThrottledNanos, memoryKernelBytes, memorySwapBytes, oomKills, ...basic } = stats;
    const decoded = type.toObject(type.decode(encodeCgroupV1Metrics(basic).value), { longs: Number, defaults: true }) as Record<string, Record<string, unknown>>;
    expect(decoded.cpu?.throttling).toEqual({ periods: 0, throttledPeriods: 0, throttledTime: 0 });
    expect(decoded.memory?.kernel).toMatchObject({ usage: 0 });
    expect(decoded.memory?.swap).toMatchObject({ usage: 0 });
    expect(decoded.memoryOomControl).toMatchObject({ oomKill: 0 });
    expect([cpuPeriods, cpuThrottledPeriods, cpuThrottledNanos, memoryKernelBytes, memorySwapBytes, oomKills]).toHaveLength(6);
  });

  it('rejects a v2 metrics Any', () => {
    expectInvalidArgument(() => decodeCgroupV1Metrics({ type_url: 'io.containerd.cgroups.v2.Metrics', value: Buffer.alloc(0) }), 'io.containerd.cgroups.v2.Metrics');
  });
});
