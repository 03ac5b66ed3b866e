import { EventEmitter } from 'node:events';
import { status, type ServiceDefinition, type ServiceError } from '@grpc/grpc-js';
import { describe, expect, it, vi } from 'vitest';
import { ERROR_KIND_TRAILER } from '../grpc/wire.js';
import { RecoveryGate, RETRY_PUSHBACK_TRAILER } from './recoveryGate.js';

// Only the method names matter to the gate; grpc-js decides from the definition how to call a handler.
const definition = { Status: {}, WatchEvents: {} } as unknown as ServiceDefinition;
type Handler = (call: unknown, callback?: (error: ServiceError | null, response?: unknown) => void) => void;

describe('RecoveryGate', () => {
  it('given a service not yet opened, when a unary call comes, then it ends with UNAVAILABLE, the unavailable kind and a retry hint', () => {
    const handlers = new RecoveryGate(250).handlersFor(definition) as unknown as Record<string, Handler>;
    const callback = vi.fn();
    handlers.Status!({}, callback);
    const error = callback.mock.calls[0]![0] as ServiceError;
    expect(error.code).toBe(status.UNAVAILABLE);
    expect(error.details).toMatch(/recovering/);
    expect(error.metadata.get(ERROR_KIND_TRAILER)).toEqual(['unavailable']);
    expect(error.metadata.get(RETRY_PUSHBACK_TRAILER)).toEqual(['250']);
  });

  it('given a service not yet opened, when a server stream is opened, then it ends with an UNAVAILABLE error', () => {
    const handlers = new RecoveryGate(250).handlersFor(definition) as unknown as Record<string, Handler>;
    const call = new EventEmitter();
    const errors: ServiceError[] = [];
    call.on('error', (error: ServiceError) => errors.push(error));
    handlers.WatchEvents!(call);
    expect(errors.map((error) => error.code)).toEqual([status.UNAVAILABLE]);
  });

  it('given the service opened, when calls come, then they reach its implementation with their arguments', () => {
    const gate = new RecoveryGate(250);
    const handlers = gate.handlersFor(definition) as unknown as Record<string, Handler>;
    const status_ = vi.fn();
    const watch = vi.fn();
    gate.open(definition, { Status: status_, WatchEvents: watch });
    const callback = vi.fn();
    handlers.Status!('unary call', callback);
    handlers.WatchEvents!('stream call');
    expect(status_).toHaveBeenCalledWith('unary call', callback);
    expect(watch).toHaveBeenCalledWith('stream call');
    expect(callback).not.toHaveBeenCalled();
  });
});
