import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ServiceDefinition } from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import type { ContainerStats, PodLinuxOptions } from '../core/sandboxer.js';
import { errorMessage, internal, invalidArgument } from '../core/errors.js';
import {
  decodeMessage, packAny, POD_SANDBOX_CONFIG_TYPE, POD_SANDBOX_CONFIG_TYPE_URL,
  type CompiledMethod, type CompiledProtos, type PodSandboxConfigInput,
} from './protoCodec.js';

export { POD_SANDBOX_CONFIG_TYPE, POD_SANDBOX_CONFIG_TYPE_URL, type PodSandboxConfigInput } from './protoCodec.js';

/** The repo's proto/ dir: the nearest ancestor holding package.json and proto/ (works from src/ and dist/src/). */
export const PROTO_DIR = findProtoDir(path.dirname(fileURLToPath(import.meta.url)));

const GRPC_PROTO_FILES = [
  'containerd/services/sandbox/v1/sandbox.proto',
  'containerd/runtime/task/v3/shim.proto',
  'kts/admin/v1/admin.proto',
];
// Admin is left out so a change there never breaks decoding of containerd's types.
const TYPE_PROTO_FILES = [
  'k8s/cri/runtime/v1/api.proto',
  'containerd/cgroups/v1/metrics.proto',
  'containerd/cgroups/v2/metrics.proto',
  'containerd/services/sandbox/v1/sandbox.proto',
  'containerd/runtime/task/v3/shim.proto',
];

const TASK_V3_PREFIX = '/containerd.task.v3.Task/';
const TASK_V2_PREFIX = '/containerd.task.v2.Task/';

/** containerd's typeurl.TypeURL of an unregistered proto message is its bare full name. */
export const CGROUP_V1_METRICS_TYPE_URL = 'io.containerd.cgroups.v1.Metrics';

/** google.protobuf.Any as grpc-js/proto-loader hand it to us (keepCase false). */
export interface AnyMessage {
  /** proto-loader keeps google.protobuf.Any's field name as on the wire, even with camelCase on. */
  type_url: string;
  value: Buffer;
}

export interface PodSandboxMetadata {
  name: string;
  uid: string;
  namespace: string;
  attempt: number;
}

/** The part of CRI's PodSandboxConfig that kts uses. */
export interface PodSandboxConfig {
  metadata: PodSandboxMetadata;
  hostname: string;
  logDirectory: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  linux: { cgroupParent: string };
  /** Host namespaces, sysctls and dns_config, unchecked (src/oci/podLinux.ts checks them). */
  podLinux: PodLinuxOptions;
}

export interface GrpcDefinitions {
  sandboxController: ServiceDefinition;
  taskV3: ServiceDefinition;
  taskV2: ServiceDefinition;
  admin: ServiceDefinition;
}

const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

let grpcDefinitions: GrpcDefinitions | undefined;
let typesRoot: protobuf.Root | undefined;

function findProtoDir(startDir: string): string {
  for (let dir = startDir; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, 'proto'))) return path.join(dir, 'proto');
    if (path.dirname(dir) === dir) throw internal(`no proto/ directory above ${startDir}`);
  }
}

/** Service definitions for grpc-js; taskV2 is taskV3 served under containerd.task.v2.Task paths. */
export function loadGrpcDefinitions(): GrpcDefinitions {
  if (grpcDefinitions) return grpcDefinitions;
  const packageDefinition = protoLoader.loadSync(GRPC_PROTO_FILES, LOADER_OPTIONS);
  const taskV3 = serviceDefinition(packageDefinition, 'containerd.task.v3.Task');
  grpcDefinitions = {
    sandboxController: serviceDefinition(packageDefinition, 'containerd.services.sandbox.v1.Controller'),
    taskV3,
    taskV2: renameTaskPaths(taskV3),
    admin: serviceDefinition(packageDefinition, 'kts.admin.v1.Admin'),
  };
  return grpcDefinitions;
}

function serviceDefinition(packageDefinition: protoLoader.PackageDefinition, name: string): ServiceDefinition {
  const definition = packageDefinition[name];
  if (!definition || 'format' in definition || 'type' in definition) throw internal(`${name} is not a service in ${PROTO_DIR}`);
  return definition as ServiceDefinition;
}

function renameTaskPaths(taskV3: ServiceDefinition): ServiceDefinition {
  const renamed: Record<string, ServiceDefinition[string]> = {};
  for (const [method, definition] of Object.entries(taskV3)) {
    if (!definition.path.startsWith(TASK_V3_PREFIX)) throw internal(`unexpected task method path ${definition.path}`);
    renamed[method] = { ...definition, path: TASK_V2_PREFIX + definition.path.slice(TASK_V3_PREFIX.length) };
  }
  return renamed;
}

/** One protobufjs Root over every proto we ship (same include path as the gRPC loader). */
export function protoTypes(): protobuf.Root {
  typesRoot ??= parseProtoFiles(TYPE_PROTO_FILES);
  return typesRoot;
}

/** `files` parsed as proto-loader parses them (camelCase field names, imports from PROTO_DIR), resolved. */
function parseProtoFiles(files: string[]): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(PROTO_DIR, target));
  root.loadSync(files, { keepCase: LOADER_OPTIONS.keepCase });
  root.resolveAll();
  return root;
}

/** The services the CLI calls, by the name its KtsClient gives each. */
const CLIENT_SERVICES = { controller: 'containerd.services.sandbox.v1.Controller', task: 'containerd.task.v3.Task', admin: 'kts.admin.v1.Admin' } as const;
/** The messages the CLI packs in an Any itself. */
const CLIENT_MESSAGES = [POD_SANDBOX_CONFIG_TYPE];

/**
 * What the CLI needs of proto/, for scripts/build-cli.mjs to write: every method of its services and
 * the code of the message types they and the CLI's own Any payloads use, generated now as protobufjs's
 * Type.setup() generates it at run time, so that `kts` parses no .proto file and builds no reflection.
 */
export function compileClientProtos(): CompiledProtos {
  const grpcRoot = parseProtoFiles(GRPC_PROTO_FILES);
  const typeSets: CompiledProtos['typeSets'] = {};
  const use = (type: protobuf.Type) => {
    const name = type.fullName.slice(1);
    typeSets[name] ??= Object.fromEntries([...typesUsedBy(type)].map((used) => [used.fullName.slice(1), typeDefinition(used)]));
    return name;
  };
  const serviceMethods = (service: string): Record<string, CompiledMethod> =>
    Object.fromEntries(grpcRoot.lookupService(service).methodsArray.map((method) => [method.name, {
      path: `/${service}/${method.name}`, requestType: use(method.resolvedRequestType!), responseType: use(method.resolvedResponseType!),
      responseStream: Boolean(method.responseStream),
    }]));
  const services: CompiledProtos['services'] = {
    controller: serviceMethods(CLIENT_SERVICES.controller), task: serviceMethods(CLIENT_SERVICES.task), admin: serviceMethods(CLIENT_SERVICES.admin),
  };
  CLIENT_MESSAGES.forEach((name) => use(messageType(name)));
  return { services, typeSets };
}

/** `type` and every type its fields use, and theirs. */
function typesUsedBy(type: protobuf.Type, used = new Set<protobuf.Type | protobuf.Enum>()): Set<protobuf.Type | protobuf.Enum> {
  used.add(type);
  for (const field of type.fieldsArray) {
    const fieldType = field.resolve().resolvedType;
    if (fieldType instanceof protobuf.Enum) used.add(fieldType);
    else if (fieldType && !used.has(fieldType)) typesUsedBy(fieldType, used);
  }
  return used;
}

/**
 * A TypeDefinition (protoCodec.ts): a function that gives `self` what protobufjs's Type.setup() gives a
 * type, ctor, encode, decode, fromObject and toObject as protobufjs generates them, `type(name)` finding
 * the types its fields use. Left out: setup's wrapper of google.protobuf.Any, which acts only on "@type"
 * objects and `json: true`, neither of which kts uses. An enum gets its values as protobufjs's Enum holds them.
 */
function typeDefinition(type: protobuf.Type | protobuf.Enum): string {
  if (type instanceof protobuf.Enum) {
    // Names to numbers, and numbers to names through the prototype.
    return `function (self) {\nself.values = Object.assign(Object.create(${JSON.stringify(type.valuesById)}), ${JSON.stringify(type.values)});\n}`;
  }
  const fieldTypes = type.fieldsArray.map((field) => (field.resolvedType ? `type(${JSON.stringify(field.resolvedType.fullName.slice(1))})` : 'null'));
  return [
    'function (self, type, Writer, Reader, util) {',
    `var types = [${fieldTypes.join(', ')}];`,
    `self.ctor = ${protobuf.Type.generateConstructor(type).toString()};`,
    `self.encode = ${protobuf.encoder(type).toString()};`,
    `self.decode = ${protobuf.decoder(type).toString()};`,
    `self.fromObject = ${protobuf.converter.fromObject(type).toString()};`,
    `self.toObject = ${protobuf.converter.toObject(type).toString()};`,
    '}',
  ].join('\n');
}

function messageType(name: string): protobuf.Type {
  return protoTypes().lookupType(name);
}

/** True when typeUrl names typeName, bare or behind any URL prefix ("type.googleapis.com/…"). */
function namesType(typeUrl: string, typeName: string): boolean {
  return typeUrl === typeName || typeUrl.endsWith(`/${typeName}`);
}

function decodeAny(any: AnyMessage | null | undefined, typeName: string, what: string): Record<string, unknown> {
  if (!any || typeof any.type_url !== 'string') throw invalidArgument(`${what}: missing Any`);
  if (!namesType(any.type_url, typeName)) throw invalidArgument(`${what}: type_url ${JSON.stringify(any.type_url)} is not ${typeName}`);
  const type = messageType(typeName);
  try {
    return decodeMessage(type, any.value ?? Buffer.alloc(0));
  } catch (error) {
    throw invalidArgument(`${what}: cannot decode ${typeName}: ${errorMessage(error)}`);
  }
}

function encodeAny(typeUrl: string, typeName: string, value: Record<string, unknown>): AnyMessage {
  return packAny(messageType(typeName), typeUrl, value);
}

type Fields = Record<string, unknown>;
const fieldsOf = (value: unknown): Fields => (value && typeof value === 'object' ? (value as Fields) : {});
const stringOf = (value: unknown): string => (typeof value === 'string' ? value : '');
const numberOf = (value: unknown): number => (typeof value === 'number' ? value : 0);
const stringMapOf = (value: unknown): Record<string, string> =>
  Object.fromEntries(Object.entries(fieldsOf(value)).filter((entry): entry is [string, string] => typeof entry[1] === 'string'));

/** Decodes ControllerCreateRequest.options as CRI's PodSandboxConfig; anything else is invalid_argument. */
export function decodePodSandboxConfig(any: AnyMessage | null | undefined): PodSandboxConfig {
  const config = decodeAny(any, POD_SANDBOX_CONFIG_TYPE, 'sandbox options');
  const metadata = fieldsOf(config.metadata);
  return {
    metadata: {
      name: stringOf(metadata.name),
      uid: stringOf(metadata.uid),
      namespace: stringOf(metadata.namespace),
      attempt: numberOf(metadata.attempt),
    },
    hostname: stringOf(config.hostname),
    logDirectory: stringOf(config.logDirectory),
    labels: stringMapOf(config.labels),
    annotations: stringMapOf(config.annotations),
    linux: { cgroupParent: stringOf(fieldsOf(config.linux).cgroupParent) },
    podLinux: podLinuxOf(config),
  };
}

const stringsOf = (value: unknown): string[] => (Array.isArray(value) ? value.filter((entry): entry is string => typeof entry === 'string') : []);

/** NamespaceMode NODE (the host's namespace) per namespace; the rest as given. */
function podLinuxOf(config: Fields): PodLinuxOptions {
  const linux = fieldsOf(config.linux);
  const namespaces = fieldsOf(fieldsOf(linux.securityContext).namespaceOptions);
  const dns = fieldsOf(config.dnsConfig);
  const sysctls = stringMapOf(linux.sysctls);
  const options: PodLinuxOptions = {};
  if (namespaces.network === 'NODE') options.hostNetwork = true;
  if (namespaces.ipc === 'NODE') options.hostIpc = true;
  if (namespaces.pid === 'NODE') options.hostPid = true;
  if (Object.keys(sysctls).length > 0) options.sysctls = sysctls;
  const resolver = { servers: stringsOf(dns.servers), searches: stringsOf(dns.searches), options: stringsOf(dns.options) };
  if (resolver.servers.length + resolver.searches.length + resolver.options.length > 0) options.dns = resolver;
  return options;
}

export function encodePodSandboxConfig(config: PodSandboxConfigInput): AnyMessage {
  return encodeAny(POD_SANDBOX_CONFIG_TYPE_URL, POD_SANDBOX_CONFIG_TYPE, { ...config });
}

/** Packs a stats sample as io.containerd.cgroups.v1.Metrics, the type containerd's CRI unpacks for Linux stats. */
export function encodeCgroupV1Metrics(stats: ContainerStats): AnyMessage {
  return encodeAny(CGROUP_V1_METRICS_TYPE_URL, CGROUP_V1_METRICS_TYPE_URL, {
    pids: { current: stats.pidsCurrent, limit: stats.pidsLimit },
    cpu: {
      usage: { total: stats.cpuUsageNanos, user: stats.cpuUserNanos, kernel: stats.cpuKernelNanos },
      throttling: { periods: stats.cpuPeriods ?? 0, throttledPeriods: stats.cpuThrottledPeriods ?? 0, throttledTime: stats.cpuThrottledNanos ?? 0 },
    },
    memory: {
      usage: { usage: stats.memoryUsageBytes, limit: stats.memoryLimitBytes },
      kernel: { usage: stats.memoryKernelBytes ?? 0 },
      swap: { usage: stats.memorySwapBytes ?? 0 },
    },
    memoryOomControl: { oomKill: stats.oomKills ?? 0 },
  });
}

export function decodeCgroupV1Metrics(any: AnyMessage | null | undefined): ContainerStats {
  const metrics = decodeAny(any, CGROUP_V1_METRICS_TYPE_URL, 'cgroup metrics');
  const cpuUsage = fieldsOf(fieldsOf(metrics.cpu).usage);
  const memoryUsage = fieldsOf(fieldsOf(metrics.memory).usage);
  const pids = fieldsOf(metrics.pids);
  const throttling = fieldsOf(fieldsOf(metrics.cpu).throttling);
  const memory = fieldsOf(metrics.memory);
  return {
    cpuPeriods: numberOf(throttling.periods),
    cpuThrottledPeriods: numberOf(throttling.throttledPeriods),
    cpuThrottledNanos: numberOf(throttling.throttledTime),
    memoryKernelBytes: numberOf(fieldsOf(memory.kernel).usage),
    memorySwapBytes: numberOf(fieldsOf(memory.swap).usage),
    oomKills: numberOf(fieldsOf(metrics.memoryOomControl).oomKill),
    cpuUsageNanos: numberOf(cpuUsage.total),
    cpuUserNanos: numberOf(cpuUsage.user),
    cpuKernelNanos: numberOf(cpuUsage.kernel),
    memoryUsageBytes: numberOf(memoryUsage.usage),
    memoryLimitBytes: numberOf(memoryUsage.limit),
    pidsCurrent: numberOf(pids.current),
    pidsLimit: numberOf(pids.limit),
  };
}
