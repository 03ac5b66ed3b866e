import type { sendUnaryData, ServerUnaryCall, ServerWritableStream, ServiceDefinition, UntypedHandleCall, UntypedServiceImplementation } from '@grpc/grpc-js';
import { unavailable } from '../core/errors.js';
import { toServiceError } from '../grpc/grpcErrors.js';

/** The standard gRPC trailer that tells a client how long to wait before it retries (gRFC A6). */
export const RETRY_PUSHBACK_TRAILER = 'grpc-retry-pushback-ms';

/**
 * Lets the daemon serve its socket while it recovers: until a service is opened, every call to it
 * ends at once with UNAVAILABLE (error kind `unavailable`) and a retry hint, rather than finding no
 * socket. Guarantee: no handler of a service runs before open() hands over its implementation.
 */
export class RecoveryGate {
  readonly #implementations = new Map<ServiceDefinition, UntypedServiceImplementation>();

  constructor(private readonly retryAfterMs: number) {}

  /** A handler for every method of `definition`, to register with the server before recovery. */
  handlersFor(definition: ServiceDefinition): UntypedServiceImplementation {
    return Object.fromEntries(Object.keys(definition).map((method) => [method, ((call: ServerUnaryCall<unknown, unknown>, callback?: sendUnaryData<unknown>) => {
      const handler = this.#implementations.get(definition)?.[method] as ((...args: unknown[]) => void) | undefined;
      if (handler) return callback ? handler(call, callback) : handler(call);
      this.refuse(call, callback);
    }) as UntypedHandleCall]));
  }

  /** From now on, calls to `definition` reach `implementation`. */
  open(definition: ServiceDefinition, implementation: UntypedServiceImplementation): void {
    this.#implementations.set(definition, implementation);
  }

  private refuse(call: ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>, callback?: sendUnaryData<unknown>): void {
    const error = toServiceError(unavailable(`the kts daemon is recovering its state from the event log; retry in ${this.retryAfterMs} ms`));
    error.metadata.set(RETRY_PUSHBACK_TRAILER, String(this.retryAfterMs));
    if (callback) callback(error);
    // grpc-js sends a server stream's status on 'error' (as rpc.ts's serverStream does).
    else call.emit('error', error);
  }
}
