// A real Prometheus (built by scripts/build-peers.sh; no web UI assets, the HTTP API works) on a free
// loopback port with its TSDB in a temp dir, for tests that scrape the daemon and query what it exported.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { until } from './daemon.js';
import { freeLoopbackPort, spawnPeer, stopPeer, untilPeerReady } from './peers.js';

/** One series of an instant vector: its labels and [unix seconds, value as text]. */
export interface PromSample {
  metric: Record<string, string>;
  value: [number, string];
}

export interface Prometheus {
  url: string;
  query(expr: string): Promise<PromSample[]>;
  /** Resolves once every scrape target (and Prometheus itself, with scrapeSelf) has been scraped and is up. */
  waitForTarget(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** `scrapeTargets` (host:port, scraped at /metrics) are job "kts"; `scrapeSelf` adds Prometheus itself as job "prometheus". */
export async function startPrometheus(options: { scrapeTargets: string[]; scrapeIntervalSeconds?: number; scrapeSelf?: boolean }): Promise<Prometheus> {
  const dir = mkdtempSync(path.join(tmpdir(), 'kts-prometheus-'));
  const address = `127.0.0.1:${await freeLoopbackPort()}`;
  const url = `http://${address}`;
  const interval = `${options.scrapeIntervalSeconds ?? 1}s`;
  const jobs = [{ job_name: 'kts', static_configs: [{ targets: options.scrapeTargets }] }];
  if (options.scrapeSelf) jobs.push({ job_name: 'prometheus', static_configs: [{ targets: [address] }] });
  const config = path.join(dir, 'prometheus.yml');
  // JSON is YAML: no YAML writer needed.
  writeFileSync(config, JSON.stringify({ global: { scrape_interval: interval, scrape_timeout: interval }, scrape_configs: jobs }));
  const peer = spawnPeer('prometheus', [
    `--config.file=${config}`, `--storage.tsdb.path=${path.join(dir, 'tsdb')}`, `--web.listen-address=${address}`, '--log.level=warn',
  ]);
  try {
    await untilPeerReady('prometheus', peer, async () => (await fetch(`${url}/-/ready`)).ok);
  } catch (error) {
    await stopPeer(peer.child, dir);
    throw error;
  }
  const expected = options.scrapeTargets.length + (options.scrapeSelf ? 1 : 0);
  return {
    url,
    query: async (expr) => {
      const response = await fetch(`${url}/api/v1/query?${new URLSearchParams({ query: expr })}`);
      const body = (await response.json()) as { status: string; error?: string; data?: { result: PromSample[] } };
      if (body.status !== 'success') throw new Error(`prometheus: query ${expr} failed: ${body.error ?? response.status}`);
      return body.data!.result;
    },
    waitForTarget: async (timeoutMs = 30_000) => {
      await until('prometheus targets to be up', async () => {
        const body = (await (await fetch(`${url}/api/v1/targets?state=active`)).json()) as { data: { activeTargets: Array<{ health: string }> } };
        const up = body.data.activeTargets.filter((target) => target.health === 'up').length;
        return up === expected;
      }, timeoutMs);
    },
    stop: () => stopPeer(peer.child, dir),
  };
}
