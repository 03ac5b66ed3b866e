import type { ContainerRow, SandboxRow, StoredEvent } from '../core/store.js';
import { stableStringify } from './canonicalJson.js';

/** Column-named shapes of the tables, and their conversion to and from the domain rows. */

export interface EventRecord {
  sequence: number;
  stream_id: string;
  stream_version: number;
  type: string;
  payload: string;
  state_before: string;
  state_after: string;
  trace_id: string | null;
  span_id: string | null;
  caller: string | null;
  time: string;
  prev_hash: string;
  hash: string;
}

export interface SandboxRecord {
  id: string;
  name: string;
  namespace: string;
  kind: string;
  state: string;
  pid: number | null;
  task_address: string | null;
  created_at: string;
  updated_at: string;
  version: number;
  metadata: string;
}

export interface ContainerRecord {
  id: string;
  sandbox_id: string;
  name: string;
  state: string;
  pid: number | null;
  exit_status: number | null;
  exited_at: string | null;
  created_at: string;
  updated_at: string;
  version: number;
  metadata: string;
}

export function eventFromRecord(record: EventRecord): StoredEvent {
  const event: StoredEvent = {
    sequence: record.sequence,
    streamId: record.stream_id,
    streamVersion: record.stream_version,
    type: record.type,
    payload: JSON.parse(record.payload) as Record<string, unknown>,
    stateBefore: record.state_before,
    stateAfter: record.state_after,
    time: record.time,
    prevHash: record.prev_hash,
    hash: record.hash,
  };
  if (record.trace_id !== null) event.traceId = record.trace_id;
  if (record.span_id !== null) event.spanId = record.span_id;
  if (record.caller !== null) event.caller = record.caller;
  return event;
}

export function sandboxFromRecord(record: SandboxRecord): SandboxRow {
  return {
    id: record.id,
    name: record.name,
    namespace: record.namespace,
    kind: record.kind,
    state: record.state,
    pid: record.pid,
    taskAddress: record.task_address,
    createdAt: record.created_at,
    updatedAt: record.updated_at,
    version: record.version,
    metadata: JSON.parse(record.metadata) as Record<string, unknown>,
  };
}

export function sandboxToRecord(row: SandboxRow): SandboxRecord {
  return {
    id: row.id,
    name: row.name,
    namespace: row.namespace,
    kind: row.kind,
    state: row.state,
    pid: row.pid ?? null,
    task_address: row.taskAddress ?? null,
    created_at: row.createdAt,
    updated_at: row.updatedAt,
    version: row.version,
    metadata: stableStringify(row.metadata ?? {}),
  };
}

export function containerFromRecord(record: ContainerRecord): ContainerRow {
  return {
    id: record.id,
    sandboxId: record.sandbox_id,
    name: record.name,
    state: record.state,
    pid: record.pid,
    exitStatus: record.exit_status,
    exitedAt: record.exited_at,
    createdAt: record.created_at,
    updatedAt: record.updated_at,
    version: record.version,
    metadata: JSON.parse(record.metadata) as Record<string, unknown>,
  };
}

export function containerToRecord(row: ContainerRow): ContainerRecord {
  return {
    id: row.id,
    sandbox_id: row.sandboxId,
    name: row.name,
    state: row.state,
    pid: row.pid ?? null,
    exit_status: row.exitStatus ?? null,
    exited_at: row.exitedAt ?? null,
    created_at: row.createdAt,
    updated_at: row.updatedAt,
    version: row.version,
    metadata: stableStringify(row.metadata ?? {}),
  };
}
