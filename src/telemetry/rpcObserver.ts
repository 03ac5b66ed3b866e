import { AsyncLocalStorage } from 'node:async_hooks';
import { performance } from 'node:perf_hooks';
import { isKtsError, type ErrorKind } from '../core/errors.js';

/** How a call ended: `ok`, or the kind of the KtsError it failed with (`internal` for anything else), as the API maps it to a status. */
export type RpcResult = 'ok' | ErrorKind;

/** One served call, as the daemon's metrics count it. */
export interface RpcOutcome {
  /** `package.Service/Method`. */
  fullMethod: string;
  result: RpcResult;
  /** From the handler's start until it settled (a server stream: for as long as it was open). */
  seconds: number;
  /** Events the call committed to the log; 0 on a failed call means it was refused before the engine recorded anything. */
  eventsRecorded: number;
}

export interface RpcObserver {
  /** A handler for `fullMethod` was made: the daemon is about to serve it. */
  served(fullMethod: string): void;
  /** A call settled. Must not throw: it runs on the reply path. */
  settled(outcome: RpcOutcome): void;
}

/**
 * Set by the daemon's metrics (and only there); unset, `observed` only times and forwards. A module
 * variable, like OpenTelemetry's global tracer, so the guest agent, which shares the API wrappers,
 * loads no metrics library.
 */
let observer: RpcObserver | undefined;
const currentCall = new AsyncLocalStorage<{ eventsRecorded: number }>();

/** Returns the way to stop; it does nothing once another observer has taken over. */
export function observeRpcsWith(next: RpcObserver): () => void {
  observer = next;
  return () => {
    if (observer === next) observer = undefined;
  };
}

/**
 * Wraps a call handler so its outcome reaches the observer once, after it settles, with the number
 * of events committed inside it (`countEventsOfCurrentCall`). Everything the handler starts runs in
 * the call's context, so an event a watcher it started records later is counted to a call already
 * reported, never to another one.
 */
export function observed<Args extends unknown[], Result>(fullMethod: string, handler: (...args: Args) => Promise<Result>): (...args: Args) => Promise<Result> {
  observer?.served(fullMethod);
  return async (...args) => {
    const call = { eventsRecorded: 0 };
    const started = performance.now();
    const settle = (result: RpcResult) => observer?.settled({ fullMethod, result, seconds: (performance.now() - started) / 1000, eventsRecorded: call.eventsRecorded });
    try {
      const response = await currentCall.run(call, () => handler(...args));
      settle('ok');
      return response;
    } catch (error) {
      settle(isKtsError(error) ? error.kind : 'internal');
      throw error;
    }
  };
}

/** Called by the store listener for each commit; outside a served call (recovery, watchers) it does nothing. */
export function countEventsOfCurrentCall(count: number): void {
  const call = currentCall.getStore();
  if (call) call.eventsRecorded += count;
}
