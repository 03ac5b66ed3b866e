// An API fuzzer for the daemon's gRPC services (Controller, Task v3 and v2, Admin): every method is
// enumerated from proto/, every request is generated field by field from the proto field types with a
// seeded PRNG (one seed reproduces a run), then sometimes mutated on the wire (flipped, truncated,
// appended, random or empty bytes). Ids come from a small pool so that calls hit the same sandboxes and
// containers out of order, twice, and at once; fields the daemon writes to or mounts get paths under the
// fuzz's own directory, or hostile ones that resolve to a canary outside it (never a real host path).
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { ociSpec } from '../helpers/bundles.js';
import { PROTO } from '../helpers/protoClient.js';

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
export class Prng {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(below: number): number {
    return Math.floor(this.next() * below);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  bytes(length: number): Buffer {
    const out = Buffer.alloc(length);
    for (let i = 0; i < length; i++) out[i] = this.int(256);
    return out;
  }
}

/** One gRPC method as the fuzzer calls it: its wire path and the protobufjs types of its messages. */
export interface FuzzMethod {
  service: string;
  name: string;
  path: string;
  requestType: protobuf.Type;
  responseType: protobuf.Type;
  serverStreaming: boolean;
}

const SERVICES = [
  { file: 'containerd/services/sandbox/v1/sandbox.proto', name: 'containerd.services.sandbox.v1.Controller' },
  { file: 'containerd/runtime/task/v3/shim.proto', name: 'containerd.task.v3.Task' },
  { file: 'kts/admin/v1/admin.proto', name: 'kts.admin.v1.Admin' },
];

/** `files` (relative to proto/) parsed with the field names as on the wire, as a foreign client sees them. */
function loadProtos(files: string[]): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(PROTO, target));
  root.loadSync(files, { keepCase: true });
  root.resolveAll();
  return root;
}

/** Every method of every service the daemon serves, from proto/ (Task v2 is Task v3's messages under v2 paths). */
export function loadMethods(): FuzzMethod[] {
  const root = loadProtos(SERVICES.map((s) => s.file));
  const methods: FuzzMethod[] = [];
  for (const { name } of SERVICES) {
    const service = root.lookupService(name);
    const paths = name === 'containerd.task.v3.Task' ? [name, 'containerd.task.v2.Task'] : [name];
    for (const servicePath of paths) {
      for (const method of service.methodsArray) {
        methods.push({
          service: servicePath, name: method.name, path: `/${servicePath}/${method.name}`,
          requestType: method.resolvedRequestType!, responseType: method.resolvedResponseType!, serverStreaming: Boolean(method.responseStream),
        });
      }
    }
  }
  return methods;
}

let podSandboxConfigType: protobuf.Type | undefined;

/** CRI's PodSandboxConfig, which a Controller Create carries packed in its `options`. */
function podSandboxConfig(): protobuf.Type {
  if (podSandboxConfigType) return podSandboxConfigType;
  podSandboxConfigType = loadProtos(['k8s/cri/runtime/v1/api.proto']).lookupType('runtime.v1.PodSandboxConfig');
  return podSandboxConfigType;
}

/** Where the fuzz may write: `work` (its own dir under the daemon's temp root); `canary` must never change. */
export interface FuzzPlaces {
  work: string;
  canary: string;
  /** A busybox root filesystem under `work`, for binds that should succeed. */
  lower: string;
  /** Paths that name the canary: absolute, through "..", through a symlink under `work`; only for fields the daemon reads or mounts read-only. */
  hostilePaths: string[];
  /** Paths through "..": the daemon must refuse them in any field, written to or not. */
  climbingPaths: string[];
  /** Ids and names that climb out of whatever directory the daemon joins them to, towards the canary. */
  hostileIds: string[];
}

export function preparePlaces(work: string, canary: string, lower: string, daemonRoot: string): FuzzPlaces {
  mkdirSync(work, { recursive: true });
  mkdirSync(path.join(work, 'fifos'), { recursive: true });
  symlinkSync(canary, path.join(work, 'canary-link'));
  const up = (from: string) => path.relative(from, canary);
  const climbingPaths = [`${work}/../../${path.relative('/', canary)}/new-file`, `${work}/fifos/../../../${path.basename(canary)}/a.txt`, `${work}/..`];
  return {
    work, canary, lower, climbingPaths,
    hostilePaths: [canary, path.join(canary, 'a.txt'), path.join(work, 'canary-link'), path.join(work, 'canary-link', 'a.txt'), ...climbingPaths],
    hostileIds: [
      up(path.join(daemonRoot, 'x')), `${up(path.join(daemonRoot, 'x', 'y'))}/pwn`, `${up(path.join(daemonRoot, 'x', 'y', 'z'))}/pwn`, '..', '.', 'a/b', 'x\u0000y', 'x\ny',
    ],
  };
}

/** What the fuzzer has learnt from replies: each pool sandbox's pod process, for specs that join its namespaces. */
export interface FuzzState {
  sandboxPids: Map<string, number>;
}

const EXEC_POOL = ['e1', 'e2'];
// Stop and Shutdown are left to the uniform half and the scripted lives: a removed pod's id stays taken for the batch.
const LIFECYCLE = /^(Controller\.(Create|Start)|Task\.(Create|Start|Exec|Kill|Delete)|Admin\.(Prepare|RunContainer|Exec|StopContainer|RemoveContainer))$/;
const COMMANDS: string[][] = [['echo', 'hi'], ['sleep', '600'], ['true'], ['sh', '-c', 'exit 7'], ['cat'], ['no-such-binary'], []];

/** Generates (and sometimes mutates) requests; one instance per run, driven by its PRNG only. */
export class MessageFactory {
  private bundleSeq = 0;
  private sandboxPool: string[] = [];
  private containerPool: string[] = [];

  constructor(readonly rng: Prng, readonly places: FuzzPlaces, readonly state: FuzzState) {
    this.newGeneration(0);
  }

  /**
   * Ids of a batch: three pods and their containers, plus one pod of the batch before. A removed pod's id
   * stays taken (its stream lives on), so a fixed pool would soon hold nothing but refusals.
   */
  newGeneration(batch: number): void {
    const previous = this.sandboxPool[0];
    this.sandboxPool = ['a', 'b', 'c'].map((letter) => `fz${batch}-${letter}`);
    if (previous) this.sandboxPool.push(previous);
    this.containerPool = this.sandboxPool.flatMap((sandboxId) => [`${sandboxId}-c1`, `${sandboxId}-c2`]);
  }

  /** An id from `pool` mostly (`poolShare` of the time); else empty, hostile, or any string. */
  private idFrom(pool: readonly string[], poolShare: number): string {
    const r = this.rng.next();
    if (r < poolShare) return this.rng.pick(pool);
    if (r < poolShare + 0.05) return '';
    if (r < poolShare + 0.1) return this.rng.pick(this.places.hostileIds);
    return this.string();
  }

  sandboxId(): string {
    return this.idFrom(this.sandboxPool, 0.85);
  }

  /** A container's id, now and then a pod's (the two kinds of id must never be confused). */
  containerId(): string {
    return this.idFrom(this.rng.chance(0.06) ? this.sandboxPool : this.containerPool, 0.85);
  }

  execId(): string {
    return this.rng.chance(0.4) ? '' : this.idFrom(EXEC_POOL, 0.85);
  }

  /** A string of any kind: short, unicode, control characters, path-like, empty, or up to ~1 MB. */
  string(): string {
    const r = this.rng.next();
    if (r < 0.2) return '';
    if (r < 0.45) return this.rng.bytes(1 + this.rng.int(12)).toString('hex');
    if (r < 0.55) return this.rng.pick(['\u0000', '\n', '\t', 'ü🙂', '%s%n', '${x}', '-rf', '--help', '*', ' ', '\\']);
    if (r < 0.65) return this.rng.pick(this.places.hostileIds);
    if (r < 0.75) return this.rng.pick(this.places.climbingPaths);
    if (r < 0.8) return 'x'.repeat(this.rng.pick([256, 4097, 65_536, 1_000_000]));
    if (r < 0.9) return String(this.rng.pick([0, -1, 4294967296, 1e308, NaN]));
    return this.rng.bytes(this.rng.int(40)).toString('latin1');
  }

  /**
   * A path for a field the daemon writes to (stdio, checkpoint): under `work` mostly, sometimes climbing out
   * with "..", sometimes not absolute. Never the canary itself: the socket's caller is trusted (DESIGN.md,
   * invariant 8), and a stdio file it names is created where it says, as for containerd's own paths.
   */
  hostPath(): string {
    const r = this.rng.next();
    if (r < 0.3) return '';
    if (r < 0.7) return path.join(this.places.work, 'fifos', `f${this.rng.int(8)}`);
    if (r < 0.85) return this.rng.pick(this.places.climbingPaths);
    if (r < 0.9) return 'relative/path';
    return path.join(this.places.work, this.string().replaceAll('/', '_').slice(0, 200) || 'x');
  }

  /** An OCI spec for a pool sandbox, as containerd would write it, then mutated now and then. */
  spec(sandboxId: string, containerId: string): unknown {
    const pid = this.state.sandboxPids.get(sandboxId) ?? this.rng.pick([1, 999_999]);
    const spec = ociSpec(sandboxId, pid, this.command(true)) as Record<string, any>;
    spec.annotations['io.kubernetes.cri.container-name'] = containerId;
    spec.linux.cgroupsPath = `/kts-fuzz/${sandboxId.replace(/[^a-z0-9-]/g, '_')}/${containerId.replace(/[^a-z0-9-]/g, '_')}`;
    if (this.rng.chance(0.3)) spec.mounts.push({ destination: '/canary', type: 'bind', source: this.rng.pick([this.places.canary, ...this.places.hostilePaths]), options: ['rbind', 'ro'] });
    return this.rng.chance(0.7) ? spec : this.mutateJson(spec, 0);
  }

  command(happy = false): string[] {
    const command = [...this.rng.pick(happy ? COMMANDS.slice(0, -2) : COMMANDS)];
    if (command[0] === 'echo' && this.rng.chance(0.3)) command.push(this.string());
    return command;
  }

  /** Deletes keys, swaps types, empties and blows up values; never touches cgroupsPath (a host cgroup is not the fuzz's). */
  mutateJson(value: unknown, depth: number): unknown {
    if (depth > 6) return value;
    if (Array.isArray(value)) {
      if (this.rng.chance(0.1)) return this.rng.pick([{}, 'array', null, []]);
      return value.map((item) => this.mutateJson(item, depth + 1));
    }
    if (value && typeof value === 'object') {
      const out: Record<string, unknown> = {};
      for (const [key, item] of Object.entries(value)) {
        if (key === 'cgroupsPath') { out[key] = item; continue; }
        const r = this.rng.next();
        if (r < 0.08) continue;
        if (r < 0.14) out[key] = this.rng.pick([null, 0, -1, true, 'str', [], {}, 1e300]);
        else out[key] = this.mutateJson(item, depth + 1);
      }
      if (this.rng.chance(0.05)) out[this.string().slice(0, 50)] = this.string();
      return out;
    }
    if (typeof value === 'string' && this.rng.chance(0.1)) return this.rng.pick([this.string(), value.repeat(2), '', 123]);
    if (typeof value === 'number' && this.rng.chance(0.1)) return this.rng.pick([-1, 0, 2 ** 53, 1.5, '7']);
    return value;
  }

  /** A bundle directory under `work` with a config.json for Task Create (sometimes broken, sometimes absent). */
  bundle(containerId: string, podId?: string): string {
    const r = this.rng.next();
    if (r < 0.05) return this.rng.pick(this.places.hostilePaths);
    if (r < 0.07) return this.rng.pick(['', 'relative', '/']);
    const dir = path.join(this.places.work, 'bundles', `b${this.bundleSeq++}`);
    mkdirSync(dir, { recursive: true });
    if (r < 0.2) return dir;
    const sandboxId = podId ?? (this.rng.chance(0.9) ? this.rng.pick(this.sandboxPool) : this.sandboxId());
    const text = this.rng.chance(0.05) ? this.rng.bytes(this.rng.int(200)).toString('latin1') : JSON.stringify(this.spec(sandboxId, containerId));
    writeFileSync(path.join(dir, 'config.json'), text);
    return dir;
  }

  rootfsMount(): Record<string, unknown> {
    if (this.rng.chance(0.8)) return { type: 'bind', source: this.places.lower, target: '', options: ['rbind', 'ro'] };
    return { type: this.rng.pick(['bind', 'overlay', 'tmpfs', '', 'ext4']), source: this.rng.pick([this.places.lower, ...this.places.climbingPaths, '']), target: this.string(), options: [this.string()] };
  }

  /** A value for one field, by its name first (ids, paths, specs the daemon acts on), by its type otherwise. */
  fieldValue(type: protobuf.Type, field: protobuf.Field, siblings: Record<string, unknown>, depth: number): unknown {
    const named = this.byName(type, field, siblings);
    if (named !== undefined) return named;
    if (field.map) {
      const entries: Record<string, unknown> = {};
      for (let i = this.rng.int(this.rng.chance(0.05) ? 300 : 3); i > 0; i--) entries[this.mapKey(field as unknown as protobuf.MapField)] = this.scalarOrMessage(field, depth);
      return entries;
    }
    if (field.repeated) {
      const count = this.rng.chance(0.03) ? 1000 : this.rng.int(3);
      return Array.from({ length: count }, () => this.scalarOrMessage(field, depth));
    }
    return this.scalarOrMessage(field, depth);
  }

  private mapKey(field: protobuf.MapField): string | number {
    if (field.keyType === 'string') return this.rng.chance(0.5) ? this.rng.pick(['io.kubernetes.cri.sandbox-id', 'kts.kind', 'a']) : this.string().slice(0, 1000);
    return this.rng.int(100);
  }

  private byName(type: protobuf.Type, field: protobuf.Field, siblings: Record<string, unknown>): unknown {
    const name = field.name;
    const typeName = type.name;
    if (field.repeated || field.map) {
      if (name === 'rootfs' && field.resolvedType) return Array.from({ length: this.rng.int(3) }, () => this.rootfsMount());
      if (name === 'rootfs_json') return Array.from({ length: this.rng.int(3) }, () => JSON.stringify(this.rng.chance(0.9) ? this.rootfsMount() : this.mutateJson(this.rootfsMount(), 0)));
      if (name === 'command' || (name === 'args' && typeName !== 'RunContainerRequest')) return this.command();
      return undefined;
    }
    if (name === 'sandbox_id') return this.sandboxId();
    if (name === 'container_id' || (name === 'id' && /Request$/.test(typeName))) {
      return typeName.startsWith('Controller') ? this.sandboxId() : this.containerId();
    }
    if (name === 'ref') return this.rng.chance(0.5) ? this.containerId() : this.sandboxId();
    if (name === 'exec_id') return this.execId();
    if (name === 'sandboxer') return this.rng.chance(0.8) ? 'runc' : this.rng.pick(['', 'wasm', 'vmm', 'podsandbox', this.string()]);
    if (name === 'bundle') return this.bundle(String(siblings.id ?? this.containerId()));
    if (name === 'stdin' || name === 'stdout' || name === 'stderr') return field.type === 'string' ? this.hostPath() : undefined;
    if (name === 'path' || name === 'host_path' || name === 'checkpoint' || name === 'parent_checkpoint') return this.hostPath();
    if (name === 'image') return this.rng.chance(0.7) ? 'busybox:latest' : this.string();
    if (name === 'spec_json') return this.rng.chance(0.1) ? this.string() : JSON.stringify(this.spec(this.rng.pick(this.sandboxPool), String(siblings.container_id ?? 'c')));
    if (name === 'resources_json') return this.rng.chance(0.5) ? JSON.stringify(this.mutateJson({ cpu: { shares: 512, quota: 10000, period: 100000 }, memory: { limit: 64 << 20 } }, 0)) : this.string();
    if (name === 'spec' && field.resolvedType?.name === 'Any') return this.execSpecAny();
    if (name === 'options' && typeName === 'ControllerCreateRequest' && this.rng.chance(0.5)) return this.podOptions();
    if (name === 'options' && field.resolvedType?.name === 'Any') return { type_url: this.rng.pick(['', 'type.googleapis.com/runtime.v1.PodSandboxConfig', 'x/y']), value: this.rng.bytes(this.rng.int(64)) };
    if (name === 'timeout_secs') return this.rng.pick([0, 1, 2, 4294967295]);
    if (name === 'signal') return this.rng.pick([0, 9, 15, 1, 19, 64, 4294967295]);
    if (name === 'since') return this.rng.pick(['', '1s', '2020-01-01T00:00:00Z', 'garbage', '-5m']);
    return undefined;
  }

  /** A PodSandboxConfig generated field by field like any request, packed as containerd packs it. */
  podOptions(): { type_url: string; value: Buffer } {
    const type = podSandboxConfig();
    let value: Buffer;
    try {
      value = Buffer.from(type.encode(type.fromObject(this.message(type))).finish());
    } catch {
      value = Buffer.alloc(0);
    }
    return { type_url: 'type.googleapis.com/runtime.v1.PodSandboxConfig', value };
  }

  private execSpecAny(): { type_url: string; value: Buffer } {
    const process = { terminal: false, user: { uid: 0, gid: 0 }, args: this.command(true), env: ['PATH=/bin'], cwd: '/' };
    const r = this.rng.next();
    const value = r < 0.75 ? JSON.stringify(process) : r < 0.85 ? JSON.stringify(this.mutateJson(process, 0)) : this.rng.pick(['', 'null', '[]', '{', '"x"']);
    return { type_url: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from(value) };
  }

  private scalarOrMessage(field: protobuf.Field, depth: number): unknown {
    const resolved = field.resolvedType;
    if (resolved instanceof protobuf.Enum) {
      const values = Object.keys(resolved.values);
      return this.rng.chance(0.9) ? this.rng.pick(values) : this.rng.int(1000);
    }
    if (resolved instanceof protobuf.Type) {
      if (resolved.fullName === '.google.protobuf.Any') return { type_url: this.string().slice(0, 200), value: this.rng.bytes(this.rng.int(64)) };
      if (resolved.fullName === '.google.protobuf.Timestamp') return { seconds: this.rng.pick([0, -1, 1e12]), nanos: this.rng.pick([0, 999_999_999, -5]) };
      return depth > 3 ? {} : this.message(resolved, depth + 1);
    }
    switch (field.type) {
      case 'string': return this.string();
      case 'bytes': return this.rng.chance(0.05) ? this.rng.bytes(1 + this.rng.int(1_000_000)) : this.rng.bytes(this.rng.int(64));
      case 'bool': return this.rng.chance(0.5);
      case 'double': case 'float': return this.rng.pick([0, -1, 1.5, Infinity, NaN]);
      case 'int32': case 'sint32': case 'sfixed32': return this.rng.pick([0, 1, -1, 2147483647, -2147483648, this.rng.int(100)]);
      case 'uint32': case 'fixed32': return this.rng.pick([0, 1, 4294967295, this.rng.int(100)]);
      default: return this.rng.pick([0, 1, -1, Number.MAX_SAFE_INTEGER, this.rng.int(100)]);
    }
  }

  /** A valid-looking message of `type`, each field present or not. */
  message(type: protobuf.Type, depth = 0): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const field of type.fieldsArray) {
      if (field.partOf && Object.keys(out).some((name) => field.partOf!.fieldsArray.some((f) => f.name === name))) continue;
      if (this.rng.chance(0.15)) continue;
      out[field.name] = this.fieldValue(type, field, out, depth);
    }
    return out;
  }

  /**
   * A request a careful client would send, for the methods of a pod's and a container's life (undefined for
   * the others): without them a random walk would hardly ever get a pod to run, and nothing deep be reached.
   */
  happy(method: FuzzMethod): Record<string, unknown> | undefined {
    const sandboxId = this.rng.pick(this.sandboxPool);
    const containerId = this.rng.chance(0.8) ? `${sandboxId}-c${1 + this.rng.int(2)}` : this.rng.pick(this.containerPool);
    const execId = this.rng.chance(0.5) ? '' : this.rng.pick(EXEC_POOL);
    const controller = method.service.endsWith('.Controller');
    const task = method.service.endsWith('.Task');
    const fifo = () => (this.rng.chance(0.6) ? '' : path.join(this.places.work, 'fifos', `out-${this.rng.int(4)}`));
    switch (controller ? `c.${method.name}` : task ? `t.${method.name}` : `a.${method.name}`) {
      case 'c.Create': return { sandbox_id: sandboxId, sandboxer: 'runc', ...(this.rng.chance(0.2) && { options: this.podOptions() }) };
      case 'c.Start': case 'c.Status': case 'c.Shutdown': case 'c.Wait': return { sandbox_id: sandboxId };
      case 'c.Stop': return { sandbox_id: sandboxId, timeout_secs: this.rng.int(3) };
      case 't.Create': return { id: containerId, bundle: this.bundle(containerId), rootfs: [this.rootfsMount()], stdout: fifo(), stderr: fifo() };
      case 't.Start': case 't.State': case 't.Delete': case 't.Wait': case 't.Pids': return { id: containerId, exec_id: execId };
      case 't.Kill': return { id: containerId, exec_id: execId, signal: this.rng.pick([9, 15]), all: this.rng.chance(0.3) };
      case 't.Exec': return { id: containerId, exec_id: this.rng.pick(EXEC_POOL), spec: this.execSpecAny(), stdout: fifo() };
      case 'a.Prepare': return { sandbox_id: sandboxId, container_id: containerId, spec_json: JSON.stringify(this.spec(sandboxId, containerId)), rootfs_json: [JSON.stringify(this.rootfsMount())] };
      case 'a.RunContainer': return { sandbox_id: sandboxId, name: containerId, image: 'busybox:latest', command: this.command(), start: this.rng.chance(0.7) };
      case 'a.Exec': return { container_id: containerId, args: this.command(), stdin: this.rng.chance(0.2) ? Buffer.from('hello') : Buffer.alloc(0) };
      case 'a.StopContainer': return { container_id: containerId, timeout_secs: this.rng.int(2) };
      case 'a.RemoveContainer': return { container_id: containerId, force: this.rng.chance(0.5) };
      case 'a.Purge': return { sandbox_id: sandboxId, container_id: containerId };
      default: return undefined;
    }
  }

  /**
   * A pod's whole life on one id, in order but with steps left out or said twice (method key, e.g.
   * "Controller.Create", and how to make its request): what containerd does, and does when it loses replies.
   */
  scenario(): Array<[string, () => Record<string, unknown>]> {
    const sandboxId = this.rng.pick(this.sandboxPool);
    const containerId = `${sandboxId}-c${1 + this.rng.int(2)}`;
    const steps: Array<[string, () => Record<string, unknown>]> = [
      ['Controller.Create', () => ({ sandbox_id: sandboxId, sandboxer: 'runc' })],
      ['Controller.Start', () => ({ sandbox_id: sandboxId })],
      this.rng.chance(0.5)
        ? ['Admin.Prepare', () => ({ sandbox_id: sandboxId, container_id: containerId, spec_json: JSON.stringify(this.spec(sandboxId, containerId)), rootfs_json: [JSON.stringify(this.rootfsMount())] })]
        : ['Task.Create', () => ({ id: containerId, bundle: this.bundle(containerId, sandboxId), rootfs: [this.rootfsMount()] })],
      ['Task.Start', () => ({ id: containerId })],
      ['Task.Exec', () => ({ id: containerId, exec_id: 'e1', spec: this.execSpecAny() })],
      ['Task.Start', () => ({ id: containerId, exec_id: 'e1' })],
      ['Task.Kill', () => ({ id: containerId, signal: 9 })],
      ['Task.Delete', () => ({ id: containerId })],
      ['Controller.Stop', () => ({ sandbox_id: sandboxId, timeout_secs: 1 })],
      ['Controller.Shutdown', () => ({ sandbox_id: sandboxId })],
    ];
    // Each request is made when its turn comes: a spec names the pod process that Start has just reported.
    const out: Array<[string, () => Record<string, unknown>]> = [];
    const end = this.rng.chance(0.5) ? steps.length : 2 + this.rng.int(steps.length - 2);
    for (const step of steps.slice(0, end)) {
      if (this.rng.chance(0.08)) continue;
      out.push(step);
      if (this.rng.chance(0.08)) out.push(step);
    }
    return out;
  }

  /** Half the calls go to a method of a pod's or container's life, so that pods really come and go. */
  pickMethod(methods: FuzzMethod[]): FuzzMethod {
    if (this.rng.chance(0.5)) return this.rng.pick(methods);
    const lifecycle = methods.filter((method) => LIFECYCLE.test(`${method.service.split('.').pop()}.${method.name}`));
    return this.rng.pick(lifecycle);
  }

  /** The request's bytes: its proto encoding mostly; else flipped, truncated, padded, random or empty bytes. */
  encode(method: FuzzMethod): { bytes: Buffer; how: string; request?: Record<string, unknown> } {
    const happy = this.rng.chance(0.7) ? this.happy(method) : undefined;
    if (happy) return { bytes: Buffer.from(method.requestType.encode(method.requestType.fromObject(happy)).finish()), how: 'happy', request: happy };
    const request = this.message(method.requestType);
    let bytes: Buffer;
    try {
      bytes = Buffer.from(method.requestType.encode(method.requestType.fromObject(request)).finish());
    } catch {
      bytes = Buffer.alloc(0);
    }
    const r = this.rng.next();
    if (r < 0.8) return { bytes, how: 'valid', request };
    if (r < 0.85) return { bytes: Buffer.alloc(0), how: 'empty' };
    if (r < 0.9) return { bytes: this.rng.bytes(this.rng.int(300)), how: 'random' };
    if (r < 0.95) return { bytes: bytes.subarray(0, this.rng.int(bytes.length + 1)), how: 'truncated', request };
    const flipped = Buffer.from(bytes);
    for (let i = 1 + this.rng.int(4); i > 0 && flipped.length > 0; i--) flipped[this.rng.int(flipped.length)] = this.rng.int(256);
    return { bytes: Buffer.concat([flipped, this.rng.chance(0.3) ? this.rng.bytes(this.rng.int(20)) : Buffer.alloc(0)]), how: 'flipped', request };
  }
}

/** What one call came back with: a status (and its message), within its deadline or not. */
export interface CallOutcome {
  method: string;
  how: string;
  code: number;
  details: string;
  ms: number;
  /** The reply's bytes did not decode as the method's response type. */
  badReply?: string;
  response?: Record<string, unknown>;
}

const identity = (value: Buffer) => value;

/** A grpc-js client that sends and receives raw bytes, so any bytes at all reach the server. */
export class RawClient {
  private readonly client: grpc.Client;
  constructor(socket: string) {
    this.client = new grpc.Client(`unix://${socket}`, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': 64 << 20, 'grpc.max_receive_message_length': 64 << 20 });
  }

  close(): void {
    this.client.close();
  }

  unary(method: FuzzMethod, bytes: Buffer, how: string, deadlineMs: number): Promise<CallOutcome> {
    const started = Date.now();
    return new Promise((resolve) => {
      this.client.makeUnaryRequest<Buffer, Buffer>(method.path, identity, identity, bytes, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (error, reply) => {
        const outcome: CallOutcome = { method: method.path, how, code: error ? (error.code ?? -1) : 0, details: error ? error.details ?? '' : '', ms: Date.now() - started };
        if (!error && reply) {
          try {
            outcome.response = method.responseType.toObject(method.responseType.decode(reply), { longs: Number, enums: String });
          } catch (decodeError) {
            outcome.badReply = String(decodeError);
          }
        }
        resolve(outcome);
      });
    });
  }

  /** Opens a server stream, reads for `readMs`, then cancels it (or sees how it ended by itself). */
  stream(method: FuzzMethod, bytes: Buffer, how: string, readMs: number, deadlineMs: number): Promise<CallOutcome> {
    const started = Date.now();
    return new Promise((resolve) => {
      const call = this.client.makeServerStreamRequest<Buffer, Buffer>(method.path, identity, identity, bytes, new grpc.Metadata(), { deadline: Date.now() + deadlineMs });
      let badReply: string | undefined;
      call.on('data', (chunk: Buffer) => {
        try {
          method.responseType.decode(chunk);
        } catch (decodeError) {
          badReply = String(decodeError);
        }
      });
      call.on('error', () => undefined);
      call.on('status', (status: grpc.StatusObject) => {
        clearTimeout(timer);
        resolve({ method: method.path, how, code: status.code, details: status.details, ms: Date.now() - started, badReply });
      });
      const timer = setTimeout(() => call.cancel(), readMs);
    });
  }
}
