// Messages to and from protobuf as proto-loader hands them to grpc-js (camelCase fields, longs as
// numbers, enums by name, defaults filled in), for a message type: a protobufjs Type parsed from proto/
// (the daemon, protos.ts) or its functions generated at build time (the CLI, client.ts). Only
// protobufjs/minimal, what the generated functions run on: the CLI loads no reflection and no parser.
import protobuf from 'protobufjs/minimal.js';
import type { AnyMessage } from './wire.js';

/** proto-loader's conversion of a decoded message, with the options protos.ts loads the services with. */
export const TO_OBJECT_OPTIONS: protobuf.IConversionOptions = { longs: Number, enums: String, defaults: true, oneofs: true };

/** containerd's CRI marshals PodSandboxConfig with typeurl (gogo MessageName: no URL prefix); we accept both forms. */
export const POD_SANDBOX_CONFIG_TYPE = 'runtime.v1.PodSandboxConfig';
export const POD_SANDBOX_CONFIG_TYPE_URL = `type.googleapis.com/${POD_SANDBOX_CONFIG_TYPE}`;

export interface PodSandboxConfigInput {
  metadata?: Partial<{ name: string; uid: string; namespace: string; attempt: number }>;
  hostname?: string;
  logDirectory?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: { cgroupParent?: string; sysctls?: Record<string, string>; securityContext?: { namespaceOptions?: { network?: string; pid?: string; ipc?: string } } };
  dnsConfig?: { servers?: string[]; searches?: string[]; options?: string[] };
}

/** What encoding and decoding use of a message type: a protobufjs Type has them, and so does generated code. */
export interface MessageType {
  encode(message: object): { finish(): Uint8Array };
  decode(bytes: Uint8Array): object;
  fromObject(object: Record<string, unknown>): object;
  toObject(message: object, options: protobuf.IConversionOptions): Record<string, unknown>;
}

/** What proto-loader's serializers do: a plain object (camelCase) to the wire. */
export function encodeMessage(type: MessageType, value: object): Buffer {
  return Buffer.from(type.encode(type.fromObject(value as Record<string, unknown>)).finish());
}

/** What proto-loader's deserializers do: the wire to a plain object, with TO_OBJECT_OPTIONS. */
export function decodeMessage(type: MessageType, bytes: Uint8Array): Record<string, unknown> {
  return type.toObject(type.decode(bytes), TO_OBJECT_OPTIONS);
}

export function packAny(type: MessageType, typeUrl: string, value: object): AnyMessage {
  return { type_url: typeUrl, value: encodeMessage(type, value) };
}

/** A gRPC method as the CLI calls it, compiled from proto/ at build time (protos.ts, compileClientProtos). */
export interface CompiledMethod {
  path: string;
  requestType: string;
  responseType: string;
  responseStream: boolean;
}

/** What compileClientProtos (protos.ts) makes of proto/ for the CLI; scripts/build-cli.mjs writes it into dist/src/cli/client-protos/. */
export interface CompiledProtos {
  services: { controller: Record<string, CompiledMethod>; task: Record<string, CompiledMethod>; admin: Record<string, CompiledMethod> };
  /**
   * For each type a call sends or receives, and each Any payload the CLI packs: the source of the
   * TypeDefinition of it and of every type it uses, by full name. A command loads the sets of the
   * types it sends and receives, and no other.
   */
  typeSets: Record<string, Record<string, string>>;
}

/**
 * Gives `self` a message type's ctor, encode, decode, fromObject and toObject (an enum's values) as
 * protobufjs's reflection would generate them, running on protobufjs/minimal's Writer, Reader and
 * util; `type(name)` is the type of that name, for its fields.
 */
export type TypeDefinition = (self: MessageType, type: (typeName: string) => MessageType, writer: unknown, reader: unknown, util: unknown) => void;

/** Message types by full name, each defined when first asked for (and the types its fields use when it is). */
export function compiledTypes(definitionOf: (typeName: string) => TypeDefinition): (typeName: string) => MessageType {
  const defined = new Map<string, MessageType>();
  const typeNamed = (typeName: string): MessageType => {
    let type = defined.get(typeName);
    if (type) return type;
    type = {} as MessageType;
    // Defined before it is filled in: a type that refers to itself, or to a type that refers back, finds it.
    defined.set(typeName, type);
    definitionOf(typeName)(type, typeNamed, protobuf.Writer, protobuf.Reader, protobuf.util);
    return type;
  };
  return typeNamed;
}
