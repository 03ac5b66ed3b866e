import { credentials, Metadata, makeClientConstructor, status, type Client, type ServiceDefinition, type ServiceError } from '@grpc/grpc-js';
import { ERROR_KIND_TRAILER } from '../api/grpcErrors.js';
import { loadGrpcDefinitions } from '../api/protos.js';
import { DEFAULT_SOCKET } from '../config.js';
import { injectContext } from '../telemetry/propagation.js';

/** The daemon socket a client command talks to: --socket, else KTS_SOCKET, else the default. */
export function socketPath(flag: string | undefined): string {
  return flag ?? process.env.KTS_SOCKET ?? DEFAULT_SOCKET;
}

type Unary = (request: object) => Promise<Record<string, unknown>>;

export interface KtsClient {
  controller: Record<string, Unary>;
  task: Record<string, Unary>;
  admin: Record<string, Unary>;
  adminStream(method: string, request: object, onMessage: (message: Record<string, unknown>) => void): Promise<void>;
  close(): void;
}

/** A failed call as one readable line; an unreachable daemon says how to point at one. */
export class ClientError extends Error {}

function friendly(error: ServiceError, socket: string): ClientError {
  const fromDaemon = (error.metadata?.get(ERROR_KIND_TRAILER) ?? []).length > 0;
  if (error.code === status.UNAVAILABLE && !fromDaemon) {
    // grpc-js says "No connection established. Last error: Error: connect ENOENT <path>. Resolution note: …": keep the cause.
    const cause = /Last error: (?:Error: )?(.*?)\.?(?: Resolution note:.*)?$/s.exec(error.details)?.[1] ?? error.details;
    return new ClientError(`cannot reach the kts daemon at ${socket} (${cause}); is "kts daemon" running? Use --socket or KTS_SOCKET to point elsewhere`);
  }
  return new ClientError(error.details || error.message);
}

function promisify(client: Client, definition: ServiceDefinition, socket: string, fixed: Record<string, string>): Record<string, Unary> {
  const methods: Record<string, Unary> = {};
  for (const name of Object.keys(definition)) {
    const method = (client as unknown as Record<string, Function>)[name]!.bind(client);
    methods[name] = (request) =>
      new Promise((resolve, reject) => {
        const metadata = new Metadata();
        for (const [key, value] of Object.entries({ ...fixed, ...injectContext() })) metadata.set(key, value);
        method(request, metadata, { deadline: Date.now() + 120_000 }, (error: ServiceError | null, response: Record<string, unknown>) =>
          error ? reject(friendly(error, socket)) : resolve(response),
        );
      });
  }
  return methods;
}

/** `metadata` goes with every unary call (e.g. a traceparent), under the active trace context's own headers. */
export function connectClient(socket: string, metadata: Record<string, string> = {}): KtsClient {
  const definitions = loadGrpcDefinitions();
  const address = `unix://${socket}`;
  const make = (definition: ServiceDefinition, name: string) => new (makeClientConstructor(definition, name))(address, credentials.createInsecure());
  const controller = make(definitions.sandboxController, 'Controller');
  const task = make(definitions.taskV3, 'Task');
  const admin = make(definitions.admin, 'Admin');
  return {
    controller: promisify(controller, definitions.sandboxController, socket, metadata),
    task: promisify(task, definitions.taskV3, socket, metadata),
    admin: promisify(admin, definitions.admin, socket, metadata),
    adminStream(method, request, onMessage) {
      return new Promise((resolve, reject) => {
        const call = (admin as unknown as Record<string, Function>)[method]!.call(admin, request);
        call.on('data', onMessage);
        call.on('end', resolve);
        call.on('error', (error: ServiceError) => (error.code === status.CANCELLED ? resolve() : reject(friendly(error, socket))));
      });
    },
    close() {
      controller.close();
      task.close();
      admin.close();
    },
  };
}
