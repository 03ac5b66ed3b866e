/** Error kinds of the domain; only src/api maps them to gRPC status codes. */
export type ErrorKind =
  | 'invalid_argument'
  | 'not_found'
  | 'already_exists'
  | 'failed_precondition'
  | 'conflict'
  | 'unavailable'
  | 'deadline_exceeded'
  | 'unimplemented'
  | 'internal';

export class KtsError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'KtsError';
  }
}

export const invalidArgument = (message: string) => new KtsError('invalid_argument', message);
export const notFound = (message: string) => new KtsError('not_found', message);
export const alreadyExists = (message: string) => new KtsError('already_exists', message);
export const failedPrecondition = (message: string) => new KtsError('failed_precondition', message);
export const conflict = (message: string) => new KtsError('conflict', message);
export const unavailable = (message: string) => new KtsError('unavailable', message);
export const deadlineExceeded = (message: string) => new KtsError('deadline_exceeded', message);
export const unimplemented = (message: string) => new KtsError('unimplemented', message);
export const internal = (message: string, cause?: unknown) => new KtsError('internal', message, { cause });

export function isKtsError(error: unknown, kind?: ErrorKind): error is KtsError {
  return error instanceof KtsError && (kind === undefined || error.kind === kind);
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
