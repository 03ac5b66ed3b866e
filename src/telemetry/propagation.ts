// W3C trace context in and out of string-keyed carriers (gRPC metadata flattened to a record). Only
// @opentelemetry/api: the CLI imports this, when it exports spans, without the tracing SDK.
import { context, propagation, type Context, type TextMapGetter } from '@opentelemetry/api';

export { newTraceparent, tracingExports } from './traceparent.js';

const recordGetter: TextMapGetter<Record<string, string | undefined>> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key],
};

/** The context a caller sent (its `traceparent`), as the parent of what the server does for it. */
export function extractContext(headers: Record<string, string | undefined>): Context {
  return propagation.extract(context.active(), headers, recordGetter);
}

/** The active context as headers to send (nothing while no propagator is registered). */
export function injectContext(): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier;
}
