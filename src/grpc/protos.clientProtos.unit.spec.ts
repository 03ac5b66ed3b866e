// The CLI's compiled protos (compileClientProtos, run by scripts/build-cli.mjs) against the daemon's
// proto-loader definitions: the same methods at the same paths, the same bytes for a request, the same
// object for a reply, for every method of every service the CLI calls.
import path from 'node:path';
import type { MethodDefinition } from '@grpc/grpc-js';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { compiledTypes, decodeMessage, encodeMessage, packAny, type CompiledProtos, type TypeDefinition } from './protoCodec.js';
import { compileClientProtos, encodePodSandboxConfig, loadGrpcDefinitions, POD_SANDBOX_CONFIG_TYPE, POD_SANDBOX_CONFIG_TYPE_URL, PROTO_DIR } from './protos.js';

const compiled: CompiledProtos = compileClientProtos();
/** Each type from its own set, as the module scripts/build-cli.mjs writes for the set evaluates it. */
const definitions = new Map(Object.values(compiled.typeSets).flatMap((typeSet) => Object.entries(typeSet)));
const typeNamed = compiledTypes((typeName) => new Function(`return ${definitions.get(typeName)}`)() as TypeDefinition);

/** The services' messages as protobufjs reflects them, to make samples of. */
const reflection = new protobuf.Root();
reflection.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(PROTO_DIR, target));
reflection.loadSync(['containerd/services/sandbox/v1/sandbox.proto', 'containerd/runtime/task/v3/shim.proto', 'kts/admin/v1/admin.proto'], { keepCase: false }).resolveAll();

/** A value for every field of `type` (one member per oneof, nested messages 3 deep), different from its default. */
function sampleOf(type: protobuf.Type, depth = 0): Record<string, unknown> {
  const sample: Record<string, unknown> = {};
  for (const field of type.fieldsArray) {
    if (field.partOf && field.partOf.oneof[0] !== field.name) continue;
    const value = sampleValue(field, depth);
    if (value === undefined) continue;
    if (field instanceof protobuf.MapField) sample[field.name] = { [String(scalarSample(field.keyType, field.name))]: value };
    else sample[field.name] = field.repeated ? [value, value] : value;
  }
  return sample;
}

function sampleValue(field: protobuf.Field, depth: number): unknown {
  const type = field.resolve().resolvedType;
  if (type instanceof protobuf.Enum) return Object.keys(type.values).at(-1);
  if (type instanceof protobuf.Type) return depth < 3 ? sampleOf(type, depth + 1) : undefined;
  return scalarSample(field.type, field.name);
}

function scalarSample(scalar: string, name: string): unknown {
  if (scalar === 'string') return `${name}-value`;
  if (scalar === 'bytes') return Buffer.from(name);
  if (scalar === 'bool') return true;
  if (scalar === 'double' || scalar === 'float') return 1.5;
  if (['int32', 'sint32', 'sfixed32'].includes(scalar)) return -7;
  if (['uint32', 'fixed32'].includes(scalar)) return 7;
  if (['int64', 'sint64', 'sfixed64'].includes(scalar)) return -70_000_000_000;
  return 70_000_000_000;
}

const SERVICES = [
  ['controller', 'sandboxController'],
  ['task', 'taskV3'],
  ['admin', 'admin'],
] as const;

describe.each(SERVICES)('the CLI\'s %s methods', (cliName, daemonName) => {
  const daemonService = loadGrpcDefinitions()[daemonName];
  const cliService = compiled.services[cliName];

  it('are the daemon\'s, at the same paths and with the same streaming', () => {
    expect(Object.keys(cliService).sort()).toEqual(Object.keys(daemonService).sort());
    for (const [name, method] of Object.entries(cliService)) {
      expect({ path: method.path, responseStream: method.responseStream }).toEqual({ path: daemonService[name]!.path, responseStream: daemonService[name]!.responseStream });
    }
  });

  it.each(Object.keys(daemonService))('%s: a request encodes and a reply decodes as proto-loader does', (name) => {
    const method = cliService[name]!;
    const definition = daemonService[name] as MethodDefinition<object, object>;
    const request = sampleOf(reflection.lookupType(method.requestType));
    expect(encodeMessage(typeNamed(method.requestType), request)).toEqual(Buffer.from(definition.requestSerialize(request)));
    for (const reply of [sampleOf(reflection.lookupType(method.responseType)), {}]) {
      const bytes = definition.responseSerialize(reply);
      expect(decodeMessage(typeNamed(method.responseType), bytes)).toEqual(definition.responseDeserialize(bytes));
    }
  });
});

describe('the type sets', () => {
  it('each hold every type their definitions ask for: a command loads one set per type it sends or receives', () => {
    for (const [root, typeSet] of Object.entries(compiled.typeSets)) {
      const asked = Object.values(typeSet).flatMap((definition) => [...definition.matchAll(/\btype\("([^"]+)"\)/g)].map((match) => match[1]));
      expect({ root, missing: asked.filter((name) => !(name! in typeSet)) }).toEqual({ root, missing: [] });
      expect(Object.keys(typeSet)).toContain(root);
    }
  });
});

describe('the Any payloads the CLI packs itself', () => {
  it('packs a PodSandboxConfig as the daemon\'s own encoder does', () => {
    const config = {
      metadata: { name: 'web', uid: 'u1', namespace: 'default', attempt: 2 }, hostname: 'web', logDirectory: '/var/log/pods/web',
      labels: { app: 'web' }, annotations: { note: 'x' },
      linux: { cgroupParent: '/kts', sysctls: { 'net.ipv4.ip_forward': '1' }, securityContext: { namespaceOptions: { network: 'NODE', pid: 'POD' } } },
      dnsConfig: { servers: ['10.0.0.1'], searches: ['svc'], options: ['ndots:2'] },
    };
    expect(packAny(typeNamed(POD_SANDBOX_CONFIG_TYPE), POD_SANDBOX_CONFIG_TYPE_URL, config)).toEqual(encodePodSandboxConfig(config));
  });
});
