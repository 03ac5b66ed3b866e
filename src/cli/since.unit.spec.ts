import { describe, expect, it } from 'vitest';
import { parseDuration, sinceTime } from './since.js';

const NOW = new Date('2026-12-03T10:00:00.000Z');

describe('kts logs --since', () => {
  it.each([
    ['10s', 10e9], ['5m', 300e9], ['1h', 3600e9], ['1h30m', 5400e9], ['1.5h', 5400e9], ['250ms', 250e6], ['2m3s', 123e9], ['0s', 0],
  ])('reads the duration %s as %d ns', (text, nanos) => {
    expect(parseDuration(text)).toBe(nanos);
  });

  it.each(['', '10', 's', '5 m', '-5m', '1d', '1h-2m', 'yesterday'])('refuses %j as a duration', (text) => {
    expect(parseDuration(text)).toBeUndefined();
  });

  it('turns a duration into the time that long before now', () => {
    expect(sinceTime('10s', NOW)).toBe('2026-12-03T09:59:50.000000000Z');
    expect(sinceTime('1h', NOW)).toBe('2026-12-03T09:00:00.000000000Z');
  });

  it('passes an RFC3339 time as it is', () => {
    expect(sinceTime('2026-12-03T09:00:00+01:00', NOW)).toBe('2026-12-03T09:00:00+01:00');
  });

  it('refuses anything else with a usage error naming --since', () => {
    expect(() => sinceTime('last tuesday', NOW)).toThrow(/--since must be an RFC3339 time/);
  });
});
