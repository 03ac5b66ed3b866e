import { createRequire } from 'node:module';
import { userInfo } from 'node:os';
import {
  compiledTypes, decodeMessage, encodeMessage, packAny, POD_SANDBOX_CONFIG_TYPE, POD_SANDBOX_CONFIG_TYPE_URL,
  type CompiledMethod, type CompiledProtos, type MessageType, type PodSandboxConfigInput, type TypeDefinition,
} from '../grpc/protoCodec.js';
import { ERROR_KIND_TRAILER, type AnyMessage } from '../grpc/wire.js';
import { DEFAULT_SOCKET } from '../config.js';
import { OS_USER_METADATA } from '../grpc/caller.js';
import { KTS_VERSION } from '../version.js';
import { errorMessage } from '../core/errors.js';
import { DAEMON_EXPORTS_TRACES_TRAILER } from '../telemetry/traceparent.js';
import { GrpcCallError, GrpcConnection, GrpcStatus } from './grpcConnection.js';

/** The daemon socket a client command talks to: --socket, else KTS_SOCKET, else the default. */
export function socketPath(flag: string | undefined): string {
  return flag ?? process.env.KTS_SOCKET ?? DEFAULT_SOCKET;
}

/** `deadlineMs`: how long the call may take (default 120 s; Infinity for one that lasts as long as a session, like Wait on a shell). */
type Unary = (request: object, options?: { deadlineMs?: number }) => Promise<Record<string, unknown>>;

export interface KtsClient {
  controller: Record<string, Unary>;
  task: Record<string, Unary>;
  admin: Record<string, Unary>;
  adminStream(method: string, request: object, onMessage: (message: Record<string, unknown>) => void): Promise<void>;
  /** Whether a reply said the daemon exports spans (DAEMON_EXPORTS_TRACES_TRAILER), so a root span sent to it is not lost. */
  daemonExportsTraces(): boolean;
  close(): void;
}

/** A failed call as one readable line; an unreachable daemon says how to point at one. */
export class ClientError extends Error {
  /** The gRPC status of the call that failed, when one did. */
  constructor(message: string, readonly grpcCode?: number) {
    super(message);
  }
}

const DEFAULT_DEADLINE_MS = 120_000;

/**
 * scripts/build-cli.mjs writes it beside this module (dist/src/cli/) from proto/: services.json, and a
 * module per type set (CompiledProtos), loaded when a call first sends or receives its type. kts parses
 * no .proto file.
 */
const COMPILED_PROTOS_DIR = './client-protos/';
let compiledProtos: { services: CompiledProtos['services']; typeNamed: (typeName: string) => MessageType } | undefined;

function compiled(): NonNullable<typeof compiledProtos> {
  if (compiledProtos) return compiledProtos;
  const require = createRequire(import.meta.url);
  const load = (file: string): unknown => {
    try {
      return require(COMPILED_PROTOS_DIR + file);
    } catch (error) {
      throw new ClientError(`cannot load the client's protocol code (${errorMessage(error)}); "npm run build" writes it`);
    }
  };
  const definitions = new Map<string, TypeDefinition>();
  const definitionOf = (typeName: string): TypeDefinition => {
    // A type not seen yet is one a call sends or receives: its set holds it and every type it uses.
    if (!definitions.has(typeName)) {
      const typeSet = load(`${typeName}.cjs`) as Record<string, TypeDefinition>;
      for (const [name, definition] of Object.entries(typeSet)) if (!definitions.has(name)) definitions.set(name, definition);
    }
    return definitions.get(typeName)!;
  };
  compiledProtos = { services: load('services.json') as CompiledProtos['services'], typeNamed: compiledTypes(definitionOf) };
  return compiledProtos;
}

/** CRI's PodSandboxConfig as the Any that Controller.Create takes for its options. */
export function encodePodSandboxConfig(config: PodSandboxConfigInput): AnyMessage {
  return packAny(compiled().typeNamed(POD_SANDBOX_CONFIG_TYPE), POD_SANDBOX_CONFIG_TYPE_URL, { ...config });
}

function friendly(error: unknown, socket: string): unknown {
  if (!(error instanceof GrpcCallError)) return error;
  const fromDaemon = error.trailers[ERROR_KIND_TRAILER] !== undefined;
  if (error.code === GrpcStatus.UNAVAILABLE && !fromDaemon) {
    return new ClientError(`cannot reach the kts daemon at ${socket} (${error.details}); is "kts daemon" running? Use --socket or KTS_SOCKET to point elsewhere`);
  }
  return new ClientError(error.details || error.message, error.code);
}

/**
 * What every call tells the daemon about its client: kts's user agent and the OS user it runs as.
 * Both are claims the daemon records beside the uid and pid the kernel gives it.
 */
function clientMetadata(): Record<string, string> {
  let user = '';
  try {
    user = userInfo().username;
  } catch {
    // A uid without a passwd entry has no name to send.
  }
  return { 'user-agent': `kts/${KTS_VERSION}`, ...(user && { [OS_USER_METADATA]: user }) };
}

/** `commandMetadata` goes with every call (the command's traceparent), beside clientMetadata(). */
export function connectClient(socket: string, commandMetadata: Record<string, string> = {}): KtsClient {
  const connection = new GrpcConnection(socket);
  const metadata = { ...clientMetadata(), ...commandMetadata };
  const { services, typeNamed } = compiled();
  let daemonExports = false;
  const note = (trailers: Record<string, unknown>) => (daemonExports ||= trailers[DAEMON_EXPORTS_TRACES_TRAILER] !== undefined);
  const typesOf = (method: CompiledMethod) => ({ request: typeNamed(method.requestType), response: typeNamed(method.responseType) });

  const unary = async (method: CompiledMethod, request: object, deadlineMs: number): Promise<Record<string, unknown>> => {
    const { request: requestType, response: responseType } = typesOf(method);
    let response: Record<string, unknown> | undefined;
    try {
      note((await connection.call(method.path, encodeMessage(requestType, request), {
        metadata, deadlineMs, onMessage: (bytes) => (response = decodeMessage(responseType, bytes)),
      })).trailers);
    } catch (error) {
      if (error instanceof GrpcCallError) note(error.trailers);
      throw friendly(error, socket);
    }
    if (!response) throw new ClientError(`${method.path}: the daemon sent no reply`);
    return response;
  };
  const unaryMethods = (methods: Record<string, CompiledMethod>): Record<string, Unary> =>
    Object.fromEntries(Object.entries(methods).map(([name, method]) => [name, (request: object, options?: { deadlineMs?: number }) => unary(method, request, options?.deadlineMs ?? DEFAULT_DEADLINE_MS)]));

  return {
    controller: unaryMethods(services.controller),
    task: unaryMethods(services.task),
    admin: unaryMethods(services.admin),
    async adminStream(name, request, onMessage) {
      const method = services.admin[name];
      if (!method?.responseStream) throw new ClientError(`kts.admin.v1.Admin has no streaming method ${name}`);
      const { request: requestType, response: responseType } = typesOf(method);
      try {
        await connection.call(method.path, encodeMessage(requestType, request), {
          metadata, deadlineMs: Infinity, onMessage: (bytes) => onMessage(decodeMessage(responseType, bytes)),
        });
      } catch (error) {
        // A cancelled stream has ended; it has not failed.
        if (!(error instanceof GrpcCallError && error.code === GrpcStatus.CANCELLED)) throw friendly(error, socket);
      }
    },
    daemonExportsTraces: () => daemonExports,
    close() {
      connection.close();
    },
  };
}
