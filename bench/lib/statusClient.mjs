// A gRPC client for load benches that keeps what the CLI's client turns into a sentence: each call's
// status code, the daemon's error-kind trailer and any retry hint (grpc-retry-pushback-ms), so a
// bench can tell a refusal from the daemon apart from a connection that failed, and a slow call
// from one that never ended.
import path from 'node:path';
import protobuf from 'protobufjs';
import { dist, REPO } from './daemon.mjs';

const { GrpcConnection, GrpcCallError } = await dist('src/cli/grpcConnection.js');
const { decodeMessage, encodeMessage } = await dist('src/grpc/protoCodec.js');

// The services' .proto files, parsed here as the daemon parses them (camelCase fields), so this client
// depends on proto/ and not on how the build packs the CLI's protocol code.
const SERVICES = { controller: 'containerd.services.sandbox.v1.Controller', admin: 'kts.admin.v1.Admin' };
const root = new protobuf.Root();
root.resolvePath = (_origin, target) => (path.isAbsolute(target) ? target : path.join(REPO, 'proto', target));
root.loadSync(['containerd/services/sandbox/v1/sandbox.proto', 'kts/admin/v1/admin.proto'], { keepCase: false });
root.resolveAll();

/** Path and message types of `service`.`method`. */
function methodOf(service, method) {
  const found = root.lookupService(SERVICES[service]).methods[method];
  if (!found) throw new Error(`no method ${service}.${method}`);
  return { path: `/${SERVICES[service]}/${method}`, requestType: found.resolvedRequestType, responseType: found.resolvedResponseType };
}

/** gRPC status names by code, for tables. */
export const STATUS_NAMES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];

/**
 * One connection; `call(service, method, request, { deadlineMs })` never throws: it resolves with
 * { ok, code, status, ms, details, kind (the daemon's error-kind trailer, absent when the daemon did
 * not answer), retryPushbackMs, response, messages }.
 */
export function statusClient(socket) {
  const connection = new GrpcConnection(socket);
  const call = async (service, method, request, { deadlineMs = 30_000, onMessage } = {}) => {
    const compiled = methodOf(service, method);
    const { requestType, responseType } = compiled;
    let response;
    let messages = 0;
    const started = process.hrtime.bigint();
    const ms = () => Number(process.hrtime.bigint() - started) / 1e6;
    try {
      await connection.call(compiled.path, encodeMessage(requestType, request), {
        metadata: {}, deadlineMs, onMessage: (bytes) => {
          messages += 1;
          response = decodeMessage(responseType, bytes);
          onMessage?.(response);
        },
      });
      return { ok: true, code: 0, status: 'OK', ms: ms(), response, messages };
    } catch (error) {
      if (!(error instanceof GrpcCallError)) return { ok: false, code: 2, status: 'UNKNOWN', ms: ms(), details: String(error), messages };
      const pushback = error.trailers['grpc-retry-pushback-ms'];
      return {
        ok: false, code: error.code, status: STATUS_NAMES[error.code] ?? String(error.code), ms: ms(), details: error.details, messages,
        kind: error.trailers['kts-error-kind'], retryPushbackMs: pushback === undefined ? undefined : Number(pushback),
      };
    }
  };
  return { call, close: () => connection.close() };
}
