import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ContainerRow, NewEvent, SandboxRow } from '../core/store.js';

/** Shared by the store's specs: a throwaway directory for real SQLite files, and sample rows. */

export function makeTempDir(): { dir: string; dbPath: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'kts-store-'));
  return { dir, dbPath: join(dir, 'state', 'kts.db'), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export function newEvent(type: string, stateBefore: string, stateAfter: string, payload: Record<string, unknown> = {}): NewEvent {
  return { type, payload, stateBefore, stateAfter, traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', caller: 'test' };
}

export function sandboxRow(id: string, overrides: Partial<SandboxRow> = {}): SandboxRow {
  return {
    id,
    name: `pod-${id}`,
    namespace: 'k8s.io',
    kind: 'runc',
    state: 'created',
    pid: null,
    taskAddress: null,
    createdAt: '2025-01-01T00:00:00.000Z',
    updatedAt: '2025-01-01T00:00:00.000Z',
    version: 1,
    metadata: { uid: `uid-${id}`, labels: { app: 'web' } },
    ...overrides,
  };
}

export function containerRow(id: string, sandboxId: string, overrides: Partial<ContainerRow> = {}): ContainerRow {
  return {
    id,
    sandboxId,
    name: `ctr-${id}`,
    state: 'created',
    pid: null,
    exitStatus: null,
    exitedAt: null,
    createdAt: '2025-01-01T00:00:01.000Z',
    updatedAt: '2025-01-01T00:00:01.000Z',
    version: 1,
    metadata: {},
    ...overrides,
  };
}
