import { isIP } from 'node:net';
import { invalidArgument } from '../core/errors.js';
import { rejectUnknownKeys, type ConfigTable } from '../core/configTable.js';

/** `[metrics]`: the Prometheus scrape endpoint. */
export interface MetricsConfig {
  /** Where `/metrics` is served over HTTP; null (the default: `listen` absent or "") serves nothing. */
  listen: MetricsAddress | null;
}

export interface MetricsAddress {
  /** An IP literal (IPv6 without brackets) or `localhost`; never a name that needs DNS at start. */
  host: string;
  port: number;
}

export function applyMetricsToml(metrics: MetricsConfig, table: ConfigTable): void {
  rejectUnknownKeys(table, 'metrics', ['listen']);
  if (table.listen === undefined) return;
  if (typeof table.listen !== 'string') throw invalidArgument('config: metrics.listen must be a string such as "127.0.0.1:9464" (or "" for off)');
  metrics.listen = table.listen === '' ? null : parseMetricsAddress(table.listen);
}

/** `host:port` or `[ipv6]:port`; the host must be an IP literal or localhost, so the address means one thing at every start. */
export function parseMetricsAddress(text: string): MetricsAddress {
  const [, bracketed, bare, portText] = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text) ?? [];
  const host = bracketed ?? bare ?? '';
  const hostOk = bracketed !== undefined ? isIP(host) === 6 : host === 'localhost' || isIP(host) === 4;
  const port = Number(portText);
  if (!hostOk || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw invalidArgument(`config: metrics.listen "${text}" must be <IPv4 or localhost>:<port> or [<IPv6>]:<port> with a port from 1 to 65535, e.g. "127.0.0.1:9464"`);
  }
  return { host, port };
}
