// Timing and summary helpers shared by the benches: one definition of a percentile for all tables.
import { loadavg } from 'node:os';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A monotonic start mark for elapsedMs. */
export const startTimer = () => process.hrtime.bigint();

export const elapsedMs = (since) => Number(process.hrtime.bigint() - since) / 1e6;

/** Nearest-rank percentile (p in 0–100) of unsorted samples: always one of the samples. */
export function percentile(samples, p) {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

export const median = (samples) => percentile(samples, 50);

/** p50/p90/p99, min, max and mean of latency samples (ms), with the samples themselves. */
export function summarize(samples) {
  const round = (x) => Math.round(x * 100) / 100;
  return {
    n: samples.length,
    p50: round(percentile(samples, 50)),
    p90: round(percentile(samples, 90)),
    p99: round(percentile(samples, 99)),
    min: round(Math.min(...samples)),
    max: round(Math.max(...samples)),
    mean: round(samples.reduce((sum, x) => sum + x, 0) / samples.length),
    samples: samples.map(round),
  };
}

/** Runs `task(i)` for i in [0, count) with at most `limit` in flight; resolves to the results in order. */
export async function mapLimit(count, limit, task) {
  const results = new Array(count);
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      results[i] = await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
  return results;
}

/** A plain-text table: the first column left-aligned, the others right-aligned. */
export function formatTable(header, rows) {
  const cells = [header, ...rows].map((row) => row.map(String));
  const widths = header.map((_, column) => Math.max(...cells.map((row) => row[column].length)));
  const line = (row) => row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]) : cell.padStart(widths[column]))).join('  ');
  return [line(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

/** The 1-minute load average, recorded beside results taken on a shared machine. */
export function loadAverage() {
  return Math.round(loadavg()[0] * 100) / 100;
}
