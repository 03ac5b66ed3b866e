// A gRPC client built from the .proto files alone (no TypeScript of ours), the way a foreign
// client such as containerd sees the daemon: snake_case fields, enums as strings.
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { REPO } from './daemon.js';

export const PROTO = path.join(REPO, 'proto');
const loaderOptions = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO] };

export type Call = (request: object, metadata?: grpc.Metadata) => Promise<Record<string, any>>;
export type ProtoClient = Record<string, Call> & { close(): void };

/** `file` is relative to proto/, `service` fully qualified, `address` e.g. `unix:///run/kts.sock`. */
export function protoClient(file: string, service: string, address: string): ProtoClient {
  const pkg = grpc.loadPackageDefinition(protoLoader.loadSync(path.join(PROTO, file), loaderOptions)) as any;
  const Ctor = service.split('.').reduce((o, k) => o[k], pkg);
  const c = new Ctor(address, grpc.credentials.createInsecure());
  const wrapped: Record<string, any> = { close: () => c.close() };
  for (const method of Object.keys(Ctor.service)) {
    wrapped[method] = (request: object, metadata = new grpc.Metadata()) =>
      new Promise((resolve, reject) => c[method](request, metadata, (e: Error | null, r: object) => (e ? reject(e) : resolve(r))));
  }
  return wrapped as ProtoClient;
}

export const controllerClient = (socket: string) =>
  protoClient('containerd/services/sandbox/v1/sandbox.proto', 'containerd.services.sandbox.v1.Controller', `unix://${socket}`);
export const taskClient = (socket: string) => protoClient('containerd/runtime/task/v3/shim.proto', 'containerd.task.v3.Task', `unix://${socket}`);
export const adminClient = (socket: string) => protoClient('kts/admin/v1/admin.proto', 'kts.admin.v1.Admin', `unix://${socket}`);
