import { Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { KtsError, type ErrorKind } from '../core/errors.js';

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

/** The one place that knows gRPC codes: a domain error kind becomes a status with its message. */
export function toServiceError(error: unknown): ServiceError {
  const code = error instanceof KtsError ? CODES[error.kind] : status.INTERNAL;
  const message = error instanceof Error ? error.message : String(error);
  return Object.assign(new Error(message), { code, details: message, metadata: new Metadata() });
}

const KINDS = new Map<number, ErrorKind>(Object.entries(CODES).map(([kind, code]) => [code, kind as ErrorKind]));

/** The inverse, for kts's own gRPC clients (the vmm agent client): a code kts never sends becomes internal. */
export function fromServiceError(error: ServiceError, context: string): KtsError {
  return new KtsError(KINDS.get(error.code) ?? 'internal', `${context}: ${error.details || error.message}`, { cause: error });
}
