import { formatCriTime, parseRfc3339Nanos } from '../host/criLog.js';
import { UsageError } from './listings.js';

const UNIT_NANOS: Record<string, number> = { ns: 1, us: 1e3, 'µs': 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };
const DURATION = /^(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h)/;

/** A Go duration as crictl takes it (10s, 5m, 1h30m, 1.5h, 250ms), in nanoseconds; undefined if it is not one. */
export function parseDuration(text: string): number | undefined {
  let rest = text;
  let nanos = 0;
  if (rest === '') return undefined;
  while (rest !== '') {
    const match = DURATION.exec(rest);
    if (!match) return undefined;
    const [, number = '', unit = ''] = /^([\d.]+)(.*)$/.exec(match[0])!;
    nanos += Number(number) * UNIT_NANOS[unit]!;
    rest = rest.slice(match[0].length);
  }
  return nanos;
}

/**
 * `kts logs --since`: an RFC3339 time as given, or a duration before `now` as the RFC3339Nano time it
 * names (what the daemon compares each line's time with).
 */
export function sinceTime(text: string, now: Date = new Date()): string {
  const trimmed = text.trim();
  if (parseRfc3339Nanos(trimmed) !== undefined) return trimmed;
  const nanos = parseDuration(trimmed);
  if (nanos === undefined) throw new UsageError(`--since must be an RFC3339 time (2026-12-03T10:04:05Z) or a duration like 10s, 5m or 1h (got "${text}")`);
  const millis = now.getTime() - Math.floor(nanos / 1e6);
  return formatCriTime(new Date(millis));
}
