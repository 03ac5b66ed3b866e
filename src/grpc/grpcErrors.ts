import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { KtsError, type ErrorKind } from '../core/errors.js';
import { ERROR_KIND_TRAILER } from './wire.js';

const CODES: Record<ErrorKind, status> = {
  invalid_argument: status.INVALID_ARGUMENT,
  not_found: status.NOT_FOUND,
  already_exists: status.ALREADY_EXISTS,
  failed_precondition: status.FAILED_PRECONDITION,
  conflict: status.ABORTED,
  unavailable: status.UNAVAILABLE,
  deadline_exceeded: status.DEADLINE_EXCEEDED,
  unimplemented: status.UNIMPLEMENTED,
  internal: status.INTERNAL,
};

/**
 * A status message travels in the grpc-message trailer (an HTTP/2 header): one that quotes a huge request
 * field outgrows the peer's header limit, and the call never ends (fuzzing found a 100 KB ref doing so).
 */
export const MAX_STATUS_MESSAGE_CHARS = 2048;

export function capMessage(message: string): string {
  if (message.length <= MAX_STATUS_MESSAGE_CHARS) return message;
  return `${message.slice(0, MAX_STATUS_MESSAGE_CHARS)}… (${message.length - MAX_STATUS_MESSAGE_CHARS} more characters cut)`;
}

/** The one place that knows gRPC codes: a domain error kind becomes a status with its message. */
export function toServiceError(error: unknown): ServiceError {
  const kind: ErrorKind = error instanceof KtsError ? error.kind : 'internal';
  const message = capMessage(error instanceof Error ? error.message : String(error));
  const metadata = new Metadata();
  metadata.set(ERROR_KIND_TRAILER, kind);
  return Object.assign(new Error(message), { code: CODES[kind], details: message, metadata });
}

const KINDS = new Map<number, ErrorKind>(Object.entries(CODES).map(([kind, code]) => [code, kind as ErrorKind]));

/** The inverse, for kts's own gRPC clients (the vmm agent client): a code kts never sends becomes internal. */
export function fromServiceError(error: ServiceError, context: string): KtsError {
  return new KtsError(KINDS.get(error.code) ?? 'internal', `${context}: ${error.details || error.message}`, { cause: error });
}
