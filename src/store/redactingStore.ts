import type { AppendOptions, AppendResult, EventStore, NewEvent, Projection, Snapshot } from '../core/store.js';
import { PassThroughEventStore } from './passThroughStore.js';

export const REDACTED = '<redacted>';

/** Which annotation and label keys never reach the log: exact keys, or `prefix*`. */
export interface RedactionRules {
  annotations: string[];
  labels: string[];
}

/**
 * An EventStore that replaces the values of configured annotation and label keys with "<redacted>"
 * in every event payload, read-model row and snapshot before they are written: the log is
 * append-only and kept forever, so a secret must be dropped before it gets there. Any object field
 * named `annotations` or `labels` holding a string map is redacted, wherever it sits.
 */
export function withRedaction(store: EventStore, rules: RedactionRules): EventStore {
  if (rules.annotations.length === 0 && rules.labels.length === 0) return store;
  return new RedactingEventStore(store, rules);
}

/** A copy of `value` with the matching keys' values of every `annotations`/`labels` map replaced. */
export function redactMaps<T>(value: T, rules: RedactionRules): T {
  return redactValue(value, rules) as T;
}

function redactValue(value: unknown, rules: RedactionRules): unknown {
  if (Array.isArray(value)) return value.map((item) => redactValue(item, rules));
  if (!isPlainObject(value)) return value;
  const result: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(value)) {
    const patterns = key === 'annotations' ? rules.annotations : key === 'labels' ? rules.labels : undefined;
    result[key] = patterns && isStringMap(item) ? redactStringMap(item, patterns) : redactValue(item, rules);
  }
  return result;
}

function redactStringMap(map: Record<string, string>, patterns: string[]): Record<string, string> {
  return Object.fromEntries(Object.entries(map).map(([key, value]) => [key, patterns.some((pattern) => keyMatches(pattern, key)) ? REDACTED : value]));
}

export function keyMatches(pattern: string, key: string): boolean {
  return pattern.endsWith('*') ? key.startsWith(pattern.slice(0, -1)) : key === pattern;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const prototype: unknown = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

function isStringMap(value: unknown): value is Record<string, string> {
  return isPlainObject(value) && Object.values(value).every((item) => typeof item === 'string');
}

class RedactingEventStore extends PassThroughEventStore {
  constructor(
    inner: EventStore,
    private readonly rules: RedactionRules,
  ) {
    super(inner);
  }

  override appendToStream(streamId: string, events: NewEvent[], options: AppendOptions): AppendResult {
    const redactedEvents = events.map((event) => ({ ...event, payload: redactMaps(event.payload, this.rules) }));
    const projection = options.projection && (redactMaps(options.projection, this.rules) as Projection);
    return this.inner.appendToStream(streamId, redactedEvents, { ...options, projection });
  }

  override saveSnapshot(snapshot: Snapshot): void {
    this.inner.saveSnapshot({ ...snapshot, state: redactMaps(snapshot.state, this.rules) });
  }
}
