import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { sandboxMachine, type SandboxContext, type SandboxEvent } from '../../machines/sandboxMachine.js';
import type { EventStore } from '../core/store.js';
import { readySandbox } from '../engine/engine.testkit.js';
import { Entity } from '../engine/entity.js';
import { sandboxProjection } from '../engine/projections.js';
import { openSqliteStore } from '../store/sqliteStore.js';
import { openAuditKey } from './auditKey.js';
import { withSealedSnapshots } from './sealedSnapshots.js';

// Snapshots sealed with the audit key over a real SQLite file: what recovery may believe, and what it refuses.
const dirs: string[] = [];
const stores: EventStore[] = [];
afterEach(() => {
  stores.splice(0).forEach((store) => store.close());
  dirs.splice(0).forEach((dir) => rmSync(dir, { recursive: true, force: true }));
});

const STREAM = 'sandbox-p1';
const updates: SandboxEvent[] = Array.from({ length: 52 }, (_, n) => ({ type: 'SandboxUpdated', labels: { n: String(n) } }));

function world() {
  const dir = mkdtempSync(path.join(tmpdir(), 'kts-sealed-'));
  dirs.push(dir);
  const raw = openSqliteStore(path.join(dir, 'kts.db'));
  stores.push(raw);
  const key = openAuditKey(path.join(dir, 'audit', 'ed25519.key'));
  const refusals: string[] = [];
  const sealed = withSealedSnapshots(raw, key, (streamId, reason) => refusals.push(`${streamId}: ${reason}`));
  const entity = new Entity<SandboxContext, SandboxEvent>(STREAM, sandboxMachine, sealed, sandboxProjection);
  for (const event of [...readySandbox('p1'), ...updates]) entity.record(event, { caller: 'spec' });
  const load = () => Entity.load<SandboxContext, SandboxEvent>(STREAM, sandboxMachine, sealed, sandboxProjection);
  return { dir, raw, sealed, refusals, entity, load };
}

describe('sealed snapshots', () => {
  it('gives back a snapshot it sealed, and the entity loads from it to the same state', () => {
    const { raw, sealed, refusals, entity, load } = world();
    expect(raw.loadSnapshot(STREAM)?.state).toMatchObject({ seal: { eventHash: raw.readStream(STREAM)[49]!.hash } });
    expect(sealed.loadSnapshot(STREAM)?.version).toBe(50);
    const loaded = load();
    expect([loaded.state, loaded.streamVersion, loaded.context]).toEqual([entity.state, 55, entity.context]);
    expect(refusals).toEqual([]);
  });

  it('refuses an edited snapshot (the seal no longer verifies): the entity is the events\' own', () => {
    const { raw, refusals, entity, load } = world();
    const saved = raw.loadSnapshot(STREAM)!;
    const forged = structuredClone(saved.state) as { state: { context: SandboxContext } };
    forged.state.context.labels = { n: 'forged' };
    raw.saveSnapshot({ ...saved, state: forged });
    expect(load().context.labels).toEqual(entity.context.labels);
    expect(refusals).toEqual([`${STREAM}: its seal does not verify: it was edited`]);
  });

  it('refuses a snapshot without a seal, and one sealed by another key', () => {
    const { dir, raw, refusals, entity, load } = world();
    const saved = raw.loadSnapshot(STREAM)!;
    raw.saveSnapshot({ ...saved, state: (saved.state as { state: unknown }).state });
    expect(load().context).toEqual(entity.context);
    const other = withSealedSnapshots(raw, openAuditKey(path.join(dir, 'other', 'ed25519.key')), () => undefined);
    other.saveSnapshot({ streamId: STREAM, version: 50, state: (saved.state as { state: unknown }).state });
    expect(load().context).toEqual(entity.context);
    expect(refusals).toEqual([`${STREAM}: it has no seal`, expect.stringMatching(new RegExp(`^${STREAM}: it is sealed by key [0-9a-f]{16}…, not this daemon's$`))]);
  });
});
