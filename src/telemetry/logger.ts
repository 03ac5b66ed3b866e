import { pino, type Logger } from 'pino';
import { activeTraceIds } from './tracing.js';

export type { Logger };

/** JSON logs on stderr; every line carries the active trace_id/span_id so logs and traces join. */
export function createLogger(level = process.env.KTS_LOG_LEVEL ?? 'info'): Logger {
  return pino(
    {
      level,
      base: { service: 'kts' },
      mixin() {
        const { traceId, spanId } = activeTraceIds();
        return traceId ? { trace_id: traceId, span_id: spanId } : {};
      },
    },
    pino.destination({ fd: 2, sync: false }),
  );
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
