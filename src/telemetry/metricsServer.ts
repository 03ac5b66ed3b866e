import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import type { MetricsAddress } from './metricsConfig.js';
import { errorMessage, unavailable } from '../core/errors.js';
import type { Logger } from './logger.js';

/** Whether the daemon can do its work; `reason` says why not. */
export interface Health {
  healthy: boolean;
  reason?: string;
}

/** What the endpoint serves; prom-client's Registry is one. Without `health`, `/healthz` says only that the process answers. */
export interface MetricsSource {
  readonly contentType: string;
  metrics(): Promise<string>;
  health?(): Health;
}

export interface MetricsServer {
  /** `http://host:port/metrics` as bound (the real port when 0 was asked for). */
  url: string;
  close(): Promise<void>;
}

export const METRICS_PATH = '/metrics';
export const HEALTH_PATH = '/healthz';

/**
 * Serves `GET /metrics` and `GET /healthz` (200 or 503, with `{"status", "reason"}` as JSON) over
 * plain HTTP. There is no authentication, so anything but a loopback address is logged as a warning;
 * binding fails with an `unavailable` KtsError naming the address.
 */
export async function serveMetrics(source: MetricsSource, address: MetricsAddress, logger: Logger): Promise<MetricsServer> {
  const server = createServer((request, response) => void answer(source, request, response, logger));
  // Scrapers keep connections alive; these bounds keep a stuck client from holding one forever.
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) => reject(unavailable(`cannot serve metrics on ${formatHost(address.host)}:${address.port}: ${errorMessage(error)}`)));
    server.listen({ host: address.host, port: address.port }, resolve);
  });
  // The gRPC server is what keeps the daemon alive; a start that fails after this point must still exit.
  server.unref();
  const bound = server.address();
  const port = typeof bound === 'object' && bound !== null ? bound.port : address.port;
  const url = `http://${formatHost(address.host)}:${port}${METRICS_PATH}`;
  if (!isLoopback(address.host)) logger.warn({ url }, 'metrics are served beyond loopback, without authentication');
  logger.info({ url }, 'serving Prometheus metrics');
  return {
    url,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

async function answer(source: MetricsSource, request: IncomingMessage, response: ServerResponse, logger: Logger): Promise<void> {
  const pathname = new URL(request.url ?? '/', 'http://metrics').pathname;
  if (pathname !== METRICS_PATH && pathname !== HEALTH_PATH) {
    return reply(response, 404, 'text/plain; charset=utf-8', `not found: metrics are at ${METRICS_PATH}, health at ${HEALTH_PATH}\n`);
  }
  if (request.method !== 'GET' && request.method !== 'HEAD') return reply(response, 405, 'text/plain; charset=utf-8', 'only GET\n');
  if (pathname === HEALTH_PATH) return answerHealth(source, response);
  try {
    reply(response, 200, source.contentType, await source.metrics());
  } catch (error) {
    logger.error({ err: error }, 'collecting metrics failed');
    reply(response, 500, 'text/plain; charset=utf-8', `collecting metrics failed: ${errorMessage(error)}\n`);
  }
}

function answerHealth(source: MetricsSource, response: ServerResponse): void {
  const health = source.health?.() ?? { healthy: true };
  const body = health.healthy ? { status: 'ok' } : { status: 'unhealthy', reason: health.reason ?? 'unknown' };
  reply(response, health.healthy ? 200 : 503, 'application/json', `${JSON.stringify(body)}\n`);
}

function reply(response: ServerResponse, status: number, contentType: string, body: string): void {
  response.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
  response.end(body);
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

function formatHost(host: string): string {
  return isIP(host) === 6 ? `[${host}]` : host;
}
