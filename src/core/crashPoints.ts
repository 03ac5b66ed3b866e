import { writeSync } from 'node:fs';
import { invalidArgument } from './errors.js';

/**
 * Named instants at every boundary the engine has, where a test can make the daemon SIGKILL
 * itself to prove recovery. Off unless KTS_CRASH_AT is set: in production `crashPoint` returns at
 * once and no sandboxer is wrapped (src/engine/crashPoints.ts wraps them). Here, below every layer,
 * so a backend can mark an instant of its own (`process.spawned`).
 */
export const CRASH_POINTS = [
  'intent.before_commit',
  'intent.after_commit',
  'effect.before',
  'effect.after',
  'outcome.before_commit',
  'outcome.after_commit',
  'reply.before',
  // A backend's per-pod host process exists, and nothing of the daemon's records it yet.
  'process.spawned',
] as const;
export type CrashPoint = (typeof CRASH_POINTS)[number];

interface Armed {
  /** A point name, or `any` for whichever point is reached. */
  point: CrashPoint | 'any';
  /** Crash when the point is reached for the n-th time (1-based). */
  occurrence: number;
  reached: number;
}

let armed: Armed | undefined;

const RANDOM_MAX_OCCURRENCE = 20;

/**
 * Parses `KTS_CRASH_AT=<point|any>[:<n>]`, e.g. `effect.before:2` or `any:7`, or `random`: any
 * point, at an occurrence from 1 to 20 drawn by `random`.
 */
export function parseCrashSpec(spec: string, random: () => number = Math.random): Armed {
  if (spec === 'random') return { point: 'any', occurrence: 1 + Math.floor(random() * RANDOM_MAX_OCCURRENCE), reached: 0 };
  const [point = '', count = '1'] = spec.split(':');
  const occurrence = Number(count);
  if (point !== 'any' && !(CRASH_POINTS as readonly string[]).includes(point)) {
    throw invalidArgument(`KTS_CRASH_AT: unknown crash point "${point}" (known: random, any, ${CRASH_POINTS.join(', ')})`);
  }
  if (!Number.isInteger(occurrence) || occurrence < 1) throw invalidArgument(`KTS_CRASH_AT: "${count}" is not a positive occurrence count`);
  return { point: point as Armed['point'], occurrence, reached: 0 };
}

/** Test-only: arms the switch from the environment; returns whether it is armed. */
export function armCrashPointsFromEnv(env: NodeJS.ProcessEnv): boolean {
  armed = env.KTS_CRASH_AT ? parseCrashSpec(env.KTS_CRASH_AT) : undefined;
  return armed !== undefined;
}

export function crashPointsArmed(): boolean {
  return armed !== undefined;
}

/** SIGKILLs this process if the armed point is reached for the armed time; says so on stderr first. */
export function crashPoint(point: CrashPoint, detail: string): void {
  if (!armed || (armed.point !== 'any' && armed.point !== point)) return;
  armed.reached += 1;
  if (armed.reached < armed.occurrence) return;
  writeSync(2, `kts: crash point ${point} reached (${detail}): SIGKILL\n`);
  process.kill(process.pid, 'SIGKILL');
}
