import { availableParallelism } from 'node:os';
import path from 'node:path';
import { invalidArgument } from '../../core/errors.js';
import { optionalString, rejectUnknownKeys, type ConfigTable } from '../../core/configTable.js';

/** `[runc]`: the runc binary the runc kind (and the guest agent) runs, and its state root. */
export interface RuncConfig {
  binary: string;
  /** runc --root: this daemon's containers only. */
  root: string;
  /** runc start steps (sandbox init, create, start) let run at once; 0 = no limit. */
  maxConcurrentStarts: number;
}

const RUNC_KEYS = ['binary', 'root', 'max_concurrent_starts'];

export function defaultRuncConfig(daemonRoot: string): RuncConfig {
  // Under the daemon's root: a second daemon with another root never sees (or sweeps) this one's containers.
  return { binary: 'runc', root: path.join(daemonRoot, 'runc'), maxConcurrentStarts: 2 * availableParallelism() };
}

export function applyRuncToml(runc: RuncConfig, table: ConfigTable): void {
  rejectUnknownKeys(table, 'runc', RUNC_KEYS);
  runc.binary = optionalString(table, 'binary', 'runc.') ?? runc.binary;
  runc.root = optionalString(table, 'root', 'runc.') ?? runc.root;
  const starts = table.max_concurrent_starts;
  if (starts === undefined) return;
  if (typeof starts !== 'number' || !Number.isInteger(starts) || starts < 0) throw invalidArgument('config: runc.max_concurrent_starts must be a whole number (0: no limit)');
  runc.maxConcurrentStarts = starts;
}
