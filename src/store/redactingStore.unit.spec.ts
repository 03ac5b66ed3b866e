import { describe, expect, it } from 'vitest';
import { openSqliteStore } from './sqliteStore.js';
import { REDACTED, keyMatches, redactMaps, withRedaction } from './redactingStore.js';

const rules = { annotations: ['secret.example/token', 'vault.example/*'], labels: ['password'] };

describe('redaction of configured annotation and label keys', () => {
  it('matches exact keys and prefix* patterns only', () => {
    expect(keyMatches('vault.example/*', 'vault.example/db')).toBe(true);
    expect(keyMatches('vault.example/*', 'vault.exampleX')).toBe(false);
    expect(keyMatches('secret.example/token', 'secret.example/token2')).toBe(false);
  });

  it('replaces values in annotations and labels maps at any depth, and leaves everything else as it was', () => {
    const payload = {
      annotations: { 'secret.example/token': 's3cr3t', 'vault.example/db': 'pw', other: 'kept' },
      metadata: { labels: { password: 'pw', app: 'demo' }, annotations: { note: 'kept' } },
      args: ['secret.example/token', 'password'],
      password: 'not a map: untouched',
    };
    expect(redactMaps(payload, rules)).toEqual({
      annotations: { 'secret.example/token': REDACTED, 'vault.example/db': REDACTED, other: 'kept' },
      metadata: { labels: { password: REDACTED, app: 'demo' }, annotations: { note: 'kept' } },
      args: ['secret.example/token', 'password'],
      password: 'not a map: untouched',
    });
    expect(payload.annotations['secret.example/token']).toBe('s3cr3t');
  });

  it('given a redacting store, when an event with a secret annotation is appended, then the log, the read model and snapshots hold "<redacted>"', () => {
    const store = withRedaction(openSqliteStore(':memory:'), rules);
    const annotations = { 'secret.example/token': 's3cr3t', plain: 'visible' };
    const row = {
      id: 'sb1', name: 'pod', namespace: 'default', kind: 'runc', state: 'created', pid: null, taskAddress: null,
      createdAt: '2026-12-03T00:00:00.000Z', updatedAt: '2026-12-03T00:00:00.000Z', version: 1, metadata: { annotations },
    };
    store.appendToStream('sandbox-sb1', [{ type: 'SandboxCreated', payload: { annotations }, stateBefore: 'absent', stateAfter: 'created' }], {
      expectedVersion: 0, projection: { table: 'sandboxes', row },
    });
    store.saveSnapshot({ streamId: 'sandbox-sb1', version: 1, state: { context: { annotations } } });
    const text = JSON.stringify([store.readAll(), store.getSandbox('sb1'), store.loadSnapshot('sandbox-sb1')]);
    expect(text).not.toContain('s3cr3t');
    expect(text).toContain('visible');
    expect(store.verifyChain().ok).toBe(true);
    store.close();
  });

  it('without rules the store is returned as is', () => {
    const inner = openSqliteStore(':memory:');
    expect(withRedaction(inner, { annotations: [], labels: [] })).toBe(inner);
    inner.close();
  });
});
