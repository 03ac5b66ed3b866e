import { describe, expect, it } from 'vitest';
import { CRASH_POINTS, crashPoint, crashPointsArmed, armCrashPointsFromEnv, parseCrashSpec } from './crashPoints.js';

describe('crash point switch', () => {
  it('is off unless KTS_CRASH_AT is set, and then crashPoint does nothing', () => {
    expect(armCrashPointsFromEnv({})).toBe(false);
    expect(crashPointsArmed()).toBe(false);
    for (const point of CRASH_POINTS) expect(() => crashPoint(point, 'test')).not.toThrow();
  });

  it('parses a point with an occurrence, any point, and random', () => {
    expect(parseCrashSpec('effect.before:3')).toEqual({ point: 'effect.before', occurrence: 3, reached: 0 });
    expect(parseCrashSpec('reply.before')).toEqual({ point: 'reply.before', occurrence: 1, reached: 0 });
    expect(parseCrashSpec('any:7')).toMatchObject({ point: 'any', occurrence: 7 });
    expect(parseCrashSpec('random', () => 0.5)).toEqual({ point: 'any', occurrence: 11, reached: 0 });
  });

  it.each([
    ['effect.during', /unknown crash point "effect.during"/],
    ['intent.after_commit:0', /"0" is not a positive occurrence count/],
    ['any:x', /"x" is not a positive occurrence count/],
  ])('refuses %j with a message naming the problem', (spec, message) => {
    expect(() => parseCrashSpec(spec)).toThrow(message);
  });
});
