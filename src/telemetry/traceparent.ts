// Trace context a client can make and decide on without the OpenTelemetry API, so that `kts` loads
// that API only when it exports spans (src/cli/client.ts).
import { randomBytes } from 'node:crypto';

/** Whether the standard OTEL_* variables ask for spans to be exported (and tracing is not switched off). */
export function tracingExports(env: NodeJS.ProcessEnv): boolean {
  return env.OTEL_SDK_DISABLED !== 'true' && Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
}

/** A W3C traceparent for a new sampled trace, for a caller that has no span of its own to send. */
export function newTraceparent(): string {
  return `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01`;
}

/** A trailer the daemon puts on its replies when it exports spans: `kts` then sends it its command's root span. */
export const DAEMON_EXPORTS_TRACES_TRAILER = 'kts-exports-traces';
