import path from 'node:path';
import { optionalPositiveInteger, optionalString, rejectUnknownKeys, type ConfigTable } from '../core/configTable.js';
import { invalidArgument } from '../core/errors.js';

/** `[audit]`: what is kept out of the append-only event log, and how its head is anchored outside it. */
export interface AuditConfig {
  /** Annotation keys (exact, or `prefix*`) whose values are stored as "<redacted>". */
  redactAnnotations: string[];
  /** The same for labels. */
  redactLabels: string[];
  /** A signed checkpoint of the log's head every this many events (and one at shutdown). */
  checkpointEvery: number;
  /** The Ed25519 private key that signs checkpoints (its public key beside it as `<key_file>.pub`; head.json in its directory). */
  keyFile: string;
  /** Retention: pods removed more than this many days ago leave the log for an archive (0: kept forever). */
  retainDays: number;
  /** Retention: once the log holds more events than this, every removed pod's may leave it (0: no cap). */
  retainEvents: number;
  /** Where retention's archives go (`events-<from>-<to>.jsonl.gz`). */
  archiveDir: string;
}

const AUDIT_KEYS = ['redact_annotations', 'redact_labels', 'checkpoint_every', 'key_file', 'retain_days', 'retain_events', 'archive_dir'];

export function defaultAuditConfig(daemonRoot: string): AuditConfig {
  return {
    redactAnnotations: [], redactLabels: [], checkpointEvery: 1000, keyFile: path.join(daemonRoot, 'audit', 'ed25519.key'),
    retainDays: 0, retainEvents: 0, archiveDir: path.join(daemonRoot, 'audit', 'archive'),
  };
}

/** Where the newest checkpoint is kept outside the database: beside the key. */
export const headFileOf = (keyFile: string) => path.join(path.dirname(keyFile), 'head.json');

export function applyAuditToml(audit: AuditConfig, table: ConfigTable): void {
  rejectUnknownKeys(table, 'audit', AUDIT_KEYS);
  audit.redactAnnotations = optionalKeyPatterns(table, 'redact_annotations') ?? audit.redactAnnotations;
  audit.redactLabels = optionalKeyPatterns(table, 'redact_labels') ?? audit.redactLabels;
  audit.checkpointEvery = optionalPositiveInteger(table, 'checkpoint_every', 'audit.') ?? audit.checkpointEvery;
  audit.keyFile = path.resolve(optionalString(table, 'key_file', 'audit.') ?? audit.keyFile);
  audit.retainDays = optionalWholeNumber(table, 'retain_days') ?? audit.retainDays;
  audit.retainEvents = optionalWholeNumber(table, 'retain_events') ?? audit.retainEvents;
  audit.archiveDir = path.resolve(optionalString(table, 'archive_dir', 'audit.') ?? audit.archiveDir);
}

/** 0 (off) or a positive whole number. */
function optionalWholeNumber(table: ConfigTable, key: string): number | undefined {
  const value = table[key];
  if (value === undefined) return undefined;
  if (!Number.isSafeInteger(value) || (value as number) < 0) throw invalidArgument(`config: audit.${key} must be a whole number (0: off), not ${JSON.stringify(value)}`);
  return value as number;
}

/** Keys or `prefix*` patterns; a `*` anywhere else would suggest a glob we do not implement. */
function optionalKeyPatterns(table: ConfigTable, key: string): string[] | undefined {
  const value = table[key];
  if (value === undefined) return undefined;
  const valid = Array.isArray(value) && value.every((item) => typeof item === 'string' && item.length > 0 && !item.slice(0, -1).includes('*'));
  if (!valid) throw invalidArgument(`config: audit.${key} must be an array of keys or "prefix*" patterns`);
  return value as string[];
}
