// W3C trace context in and out of string-keyed carriers (gRPC metadata flattened to a record). Only
// @opentelemetry/api: the CLI's light commands import this without loading the tracing SDK.
import { randomBytes } from 'node:crypto';
import { context, propagation, type Context, type TextMapGetter } from '@opentelemetry/api';

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

/** Whether the standard OTEL_* variables ask for spans to be exported (and tracing is not switched off). */
export function tracingExports(env: NodeJS.ProcessEnv): boolean {
  return env.OTEL_SDK_DISABLED !== 'true' && Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

/** A W3C traceparent for a new sampled trace, for a caller that has no span of its own to send. */
export function newTraceparent(): string {
  return `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01`;
}
