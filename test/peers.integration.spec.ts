// The observability peers built by scripts/build-peers.sh start, take data in and answer queries:
// Jaeger stores an OTLP/HTTP span and returns it by trace id; Prometheus scrapes itself.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { startJaeger } from './helpers/jaeger.js';
import { PEERS_BIN } from './helpers/peers.js';
import { startPrometheus } from './helpers/prometheus.js';

const missing = ['jaeger', 'prometheus'].filter((binary) => !existsSync(path.join(PEERS_BIN, binary)));
const skip = missing.length ? `needs ${missing.join(', ')} in ${PEERS_BIN} (bash scripts/build-peers.sh)` : undefined;

describe.skipIf(skip)(`observability peers${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('jaeger returns an OTLP/HTTP span by its trace id', async () => {
    const jaeger = await startJaeger();
    try {
      const traceId = randomBytes(16).toString('hex');
      const nowNs = BigInt(Date.now()) * 1_000_000n;
      const exported = await fetch(`${jaeger.otlpHttpUrl}/v1/traces`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          resourceSpans: [{
            resource: { attributes: [{ key: 'service.name', value: { stringValue: 'kts-peers-smoke' } }] },
            scopeSpans: [{ spans: [{
              traceId, spanId: randomBytes(8).toString('hex'), name: 'smoke.span', kind: 1,
              startTimeUnixNano: String(nowNs - 1_000_000n), endTimeUnixNano: String(nowNs),
            }] }],
          }],
        }),
      });
      expect(exported.status).toBe(200);
      const trace = await jaeger.getTrace(traceId);
      expect(trace.spans.map((span) => span.operationName)).toEqual(['smoke.span']);
      expect(trace.processes[trace.spans[0]!.processID]!.serviceName).toBe('kts-peers-smoke');
      expect((await jaeger.findTraces('kts-peers-smoke')).map((found) => found.traceID)).toEqual([traceId]);
    } finally {
      await jaeger.stop();
    }
  });

  it('prometheus scrapes itself and reports it up', async () => {
    const prometheus = await startPrometheus({ scrapeTargets: [], scrapeIntervalSeconds: 1, scrapeSelf: true });
    try {
      await prometheus.waitForTarget();
      const up = await prometheus.query('up{job="prometheus"}');
      expect(up.map((sample) => sample.value[1])).toEqual(['1']);
    } finally {
      await prometheus.stop();
    }
  });
});
